"""A stuck partition is visible, against the real Apache Kafka (issue #22, "stuck is visible").

ingest's ``text.in`` consumer with a handler that either fails for ever on one record (the
retries-exhausted limit set out of reach) or blocks on it. While it is stuck ``/ready``
answers 503 naming the partition and ``textpulse_consumer_stuck`` is 1; the repeated failure
is logged once, not once per try; once the handler is fixed or released the partition moves,
``/ready`` is 200 again and the metric 0. Own topics, deleted at the end.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import client_options, create_topics
from textpulse.observability.logging import RepeatFilter
from textpulse.settings import KafkaSettings

from services.ingest import handlers
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import TEST_TOPICS
from tests.helpers import read_all, running
from tests.ingest_cases import ev, js

pytestmark = [pytest.mark.kafka]

SPECS = {s.name: s for s in ALL_TOPICS}
STUCK_AFTER_S = 2.0


@pytest.fixture
async def topics(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]
) -> AsyncIterator[dict[str, str]]:
    names = topic_names()
    prefix = TEST_TOPICS.track_names(names)
    await create_topics(kafka_settings, [SPECS["text.in"], SPECS["text.raw"], SPECS["dlq.ingest"]], rename=names)
    yield names
    await TEST_TOPICS.cleanup(kafka_settings, [prefix])


def settings_for(kafka: KafkaSettings, names: dict[str, str]) -> IngestSettings:
    return IngestSettings(
        # 1000 tries with a backoff capped at 5 s: "retries exhausted" is out of reach within the test.
        kafka=kafka.model_copy(update={"dlq_max_attempts": 1000, "stuck_after_s": STUCK_AFTER_S}),
        topic_in=names["text.in"],
        topic_out=names["text.raw"],
        topic_dlq=names["dlq.ingest"],
        group_id=f"g-{names['text.in']}",
        kafka_batch_timeout_ms=50,
        lag_refresh_s=0.5,
    )


def stuck_gauge(metrics_text: str, topic: str) -> dict[str, float]:
    """``textpulse_consumer_stuck`` per partition of ``topic`` from a /metrics page."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("textpulse_consumer_stuck{") and f'topic="{topic}"' in line:
            partition = re.search(r'partition="(\d+)"', line)
            assert partition is not None
            out[partition.group(1)] = float(line.rsplit(" ", 1)[1])
    return out


async def wait_ready(client: httpx.AsyncClient, status: int, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        resp = await client.get("/ready")
        if resp.status_code == status or time.monotonic() > deadline:
            return resp
        await asyncio.sleep(0.25)


class Lines(logging.Handler):
    """Log lines that pass the services' repeat filter (as configure_logging installs it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.addFilter(RepeatFilter(60.0))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("failure", ["fails", "blocks"])
async def test_stuck_partition_turns_unready_fires_the_metric_then_recovers(
    kafka_settings: KafkaSettings, topics: dict[str, str], monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    tries: Counter[str] = Counter()
    fixed = asyncio.Event()
    original = handlers.handle_records

    async def faulty(records: Sequence[Any], deps: handlers.EdgeDeps) -> None:
        if not fixed.is_set() and any(b'"boom"' in (r.value or b"") for r in records):
            tries["boom"] += 1
            if failure == "blocks":
                await fixed.wait()
            else:
                msg = "handler bug on boom"
                raise RuntimeError(msg)
        await original(records, deps)

    monkeypatch.setattr(handlers, "handle_records", faulty)
    lines = Lines()
    logging.getLogger().addHandler(lines)
    values = [js(ev(id="boom")), js(ev(id="after-0")), js(ev(id="after-1"))]
    topic_in = topics["text.in"]
    try:
        async with running(create_app(settings_for(kafka_settings, topics))) as client:
            assert (await wait_ready(client, 200, 30)).status_code == 200
            producer = AIOKafkaProducer(**client_options(kafka_settings))  # type: ignore[arg-type]
            await producer.start()
            try:
                for value in values:
                    await producer.send_and_wait(topic_in, value, partition=0)
            finally:
                await producer.stop()

            started = time.monotonic()
            resp = await wait_ready(client, 503, 30)
            assert resp.status_code == 503, resp.text
            stuck_after = time.monotonic() - started
            assert orjson.loads(resp.content) == {"status": "not ready", "stuck": [f"{topic_in}:0"]}
            assert stuck_after >= STUCK_AFTER_S
            assert stuck_gauge((await client.get("/metrics")).text, topic_in).get("0") == 1.0

            if failure == "fails":
                assert tries["boom"] >= 3, "failed several times while stuck"
                bug_lines = [r for r in lines.records if "handler bug on boom" in r.getMessage()]
                assert 1 <= len(bug_lines) <= 2, [r.getMessage() for r in bug_lines]
            fixed.set()

            resp = await wait_ready(client, 200, 30)
            assert resp.status_code == 200, resp.text
            gauges = stuck_gauge((await client.get("/metrics")).text, topic_in)
            assert gauges.get("0") == 0.0
            raw = await read_all(kafka_settings, topics["text.raw"], expect=3, timeout_s=30)
    finally:
        logging.getLogger().removeHandler(lines)
    assert sorted(orjson.loads(r.value)["id"] for r in raw) == ["after-0", "after-1", "boom"]
