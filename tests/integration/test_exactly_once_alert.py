"""Alert as a real process in exactly-once mode on Apache Kafka, SIGKILLed mid-stream and restarted.

Two entities each go through a negative-sentiment surge (real labelled tweets):
the ``read_committed`` alerts topic must hold each entity's firing and resolved
notification exactly once, although the service was killed inside a
transaction and rebuilt its state from the committed changelog.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError
from textpulse.contracts.events import encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.datasets import data_dir, load_text_examples
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.settings import KafkaSettings

from tests.conftest import REPO, missing
from tests.support.alert_synth import surge_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(110)]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tweets() -> list[Any]:
    if not (data_dir() / "twitter_fin_sentiment").exists():
        missing("twitter_fin_sentiment", f"not staged under {data_dir()}")
    return load_text_examples("twitter_fin_sentiment/sent_train.csv")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.alert.app"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _alive(service: subprocess.Popen[bytes], deadline: float, log: Path) -> None:
    assert service.poll() is None, log.read_text()[-3000:]
    assert time.monotonic() < deadline, log.read_text()[-3000:]


async def _committed(kafka: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(kafka))  # type: ignore[arg-type]
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        # A fresh broker creates __consumer_offsets on the first group lookup: nothing committed yet.
        return 0
    finally:
        await admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset > 0)


async def _values(kafka: KafkaSettings, topic: str, isolation: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        **client_options(kafka),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return out


def _surge(alerts: list[dict[str, Any]], entity: str) -> list[str]:
    """The statuses of ``entity``'s negative-surge notifications, in topic order."""
    return [a["status"] for a in alerts if a["detector"] == "negative_surge" and a["subject"] == entity]


async def test_sigkill_mid_stream_exactly_once(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], tweets: list[Any], tmp_path: Path
) -> None:
    names = kafka_topics
    prefix = names["alerts.financial"].removesuffix("alerts.financial")
    state_topic, group = f"{prefix}alerts.state", f"{prefix}alert"
    await create_topics(
        kafka_settings, [TopicSpec(state_topic, STREAM_PARTITIONS, key="alert key", description="test", compacted=True)]
    )
    tag = uuid.uuid4().hex[:4].upper()
    entities = [f"EO{tag}{i}" for i in range(2)]
    plans = [surge_scenario(tweets, entity=e, start=T0, seed=i) for i, e in enumerate(entities)]
    producer = AIOKafkaProducer(**client_options(kafka_settings), acks="all", linger_ms=5)  # type: ignore[arg-type]
    await producer.start()
    try:
        # One stream in event-time order: the engine's watermark is shared by every key.
        for p in sorted((p for plan in plans for p in plan), key=lambda p: p.mention.event_time):
            await producer.send(names["entity.mentions"], encode(p.mention), key=p.mention.entity_key.encode())
        await producer.flush()
    finally:
        await producer.stop()
    total = sum(len(p) for p in plans)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    env.update(
        PYTHONPATH=f"{REPO / 'libs'}:{REPO}",
        TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
        TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS="6000",
        TEXTPULSE_ALERT_DELIVERY="exactly_once",
        TEXTPULSE_ALERT_TOPIC_MENTIONS=names["entity.mentions"],
        TEXTPULSE_ALERT_TOPIC_ENRICHED=names["text.enriched"],
        TEXTPULSE_ALERT_CONSUME_ENRICHED="false",
        TEXTPULSE_ALERT_TOPIC_OUT=names["alerts.financial"],
        TEXTPULSE_ALERT_TOPIC_STATE=state_topic,
        TEXTPULSE_ALERT_TOPIC_DLQ=names["dlq.alert"],
        TEXTPULSE_ALERT_GROUP_ID=group,
        TEXTPULSE_ALERT_ALERTMANAGER_URL="",
        # Small batches: many transactions, so the kill lands inside one.
        TEXTPULSE_ALERT_KAFKA_BATCH_RECORDS="30",
        TEXTPULSE_ALERT_KAFKA_BATCH_TIMEOUT_MS="20",
        TEXTPULSE_ALERT_HTTP_PORT="0",
    )
    log = tmp_path / "alert.log"
    service = _start(env, log)
    try:
        deadline = time.monotonic() + 40
        # Kill while the surges are being evaluated (they start ~70 % into each stream).
        while (done := await _committed(kafka_settings, group)) < 0.7 * total:
            _alive(service, deadline, log)
            await asyncio.sleep(0.1)
        service.send_signal(signal.SIGKILL)
        service.wait(10)
        service = _start(env, log)
        deadline = time.monotonic() + 50
        while await _committed(kafka_settings, group) < total:
            _alive(service, deadline, log)
            await asyncio.sleep(0.3)
        # Every input offset committed is not the end: windows that close after the last record are
        # evaluated by the timer (the restarted process's empty partitions hold the watermark until
        # its first tick), in a transaction of its own. Wait for both surges to resolve, then check.
        while True:
            alerts = [
                orjson.loads(v) for v in await _values(kafka_settings, names["alerts.financial"], "read_committed")
            ]
            if all(_surge(alerts, e)[-1:] == ["resolved"] for e in entities) or time.monotonic() > deadline:
                break
            _alive(service, deadline + 1, log)
            await asyncio.sleep(0.5)
        state = {i: len(await _values(kafka_settings, state_topic, i)) for i in ("read_committed", "read_uncommitted")}
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
    pairs = Counter((a["alert_id"], a["sequence"]) for a in alerts)
    print(
        f"\nalert exactly_once: killed at {done}/{total} committed; {len(alerts)} alerts read_committed, "
        f"max copies of one (alert_id, sequence): {max(pairs.values(), default=0)}; changelog records {state}"
    )
    assert all(n == 1 for n in pairs.values()), pairs.most_common(3)
    for entity in entities:
        assert _surge(alerts, entity) == ["firing", "resolved"], (entity, alerts, log.read_text()[-2000:])
