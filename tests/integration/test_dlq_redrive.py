"""``textpulse dlq list|show|redrive`` against the real Apache Kafka, with the route service running.

Dead letters come from the real :class:`DeadLetters` (valid events "lost" to a failing
dependency: ``retries exhausted``) and from route itself (an unreadable record). The CLI lists
and shows them, a dry run sends nothing, a filtered re-drive puts the valid events back on
``text.enriched`` with ``x-redrive-*`` headers and route routes them once; a second re-drive is
refused (already re-driven), a forced one is de-duplicated by route's event ids; the unreadable
record comes back with ``x-redrive-count`` and is refused past ``--max-redrives``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import Result
from textpulse.cli import app as cli_app
from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, FieldError
from textpulse.contracts.events import encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.kafka import DeadLetters
from textpulse.kafka.admin import client_options, create_topics, end_offsets
from textpulse.kafka.dlq import RETRIES_EXHAUSTED
from textpulse.kafka.redrive import H_COUNT, H_FROM
from textpulse.settings import KafkaSettings
from typer.testing import CliRunner

from services.route.app import create_app
from services.route.rules import load_rules
from services.route.settings import RouteSettings
from tests.helpers import headers, read_all, read_to_end
from tests.support.route_synth import support_event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


@dataclass
class Rec:
    """A consumed record of ``text.enriched`` as DeadLetters sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


async def cli(settings: KafkaSettings, dlq_topic: str, *args: str) -> tuple[Result, list[dict[str, Any]]]:
    """Run ``textpulse dlq ...`` (in a thread: the command runs its own event loop); its JSON lines."""
    argv = [*args, "--topic", dlq_topic, "--bootstrap", settings.bootstrap_servers]
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["dlq", *argv])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{") and line.endswith("}")]
    return result, lines


async def caught_up(settings: KafkaSettings, group: str, topic: str, timeout_s: float = 30.0) -> None:
    """Wait until ``group`` has committed every record of ``topic`` (so it has handled them)."""
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ends = await end_offsets(settings, topic)
            committed = await admin.list_consumer_group_offsets(group)
            done = {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic}
            if all(done.get(p, 0) >= end for p, end in ends.items() if end > 0):
                return
            assert time.monotonic() < deadline, f"{group} did not catch up on {topic}: {done} < {ends}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _route_settings(kafka_settings: KafkaSettings, topics: dict[str, str]) -> RouteSettings:
    prefix = topics["text.enriched"].removesuffix("text.enriched")
    settings = RouteSettings(
        kafka=kafka_settings,
        topic_in=topics["text.enriched"],
        topic_out=topics["support.routed"],
        topic_dlq=topics["dlq.route"],
        queue_topic_prefix=f"{prefix}support.queue.",
        group_id=f"{prefix}route",
        kafka_batch_timeout_ms=50,
    )
    await create_topics(
        kafka_settings,
        [
            TopicSpec(f"{settings.queue_topic_prefix}{q}", STREAM_PARTITIONS, key="conversation id", description="t")
            for q in load_rules().queues
        ],
    )
    return settings


async def _lose_events(kafka_settings: KafkaSettings, dlq_topic: str, topic_in: str) -> None:
    """Dead letters written by the real DeadLetters: three "retries exhausted" (offsets 0-2), one other reason (3)."""
    events = [
        support_event(f"lost{i}", f"card {i} never arrived", "card_arrival", 0.9, conversation=f"c{i}")
        for i in range(3)
    ]
    other = support_event("other", "my card is blocked", "card_not_working", 0.9, conversation="c9")
    prod = AIOKafkaProducer(**client_options(kafka_settings), acks="all")  # type: ignore[arg-type]
    await prod.start()

    async def publish(value: bytes, topic: str, *, key: bytes | None, headers: dict[str, str]) -> None:
        await prod.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])

    try:
        dead = DeadLetters(publish, service="route", topic=dlq_topic, kafka=kafka_settings)
        for i, event in enumerate(events):
            rec = Rec(topic_in, 0, 100 + i, f"conv:c{i}".encode(), encode(event), [("traceparent", b"00-t%d" % i)])
            exhausted = FieldError(ErrorCode.RETRIES_EXHAUSTED, "", "processing failed 5 times")
            await dead.send(
                rec,
                DeadLetterReason.RETRIES_EXHAUSTED,
                f"{RETRIES_EXHAUSTED} after 5 attempts: TimeoutError()",
                TimeoutError(),
                errors=[exhausted],
            )
        await dead.send(
            Rec(topic_in, 1, 200, b"conv:c9", encode(other), []), DeadLetterReason.INVALID_RECORD, "some other failure"
        )
        # An unreadable record for route, which dead-letters it itself (DLQ offset 4).
        await prod.send_and_wait(topic_in, b'{"schema_version": 2}', key=b"bad")
    finally:
        await prod.stop()


async def _loop_limit(kafka_settings: KafkaSettings, dlq_topic: str, topic_in: str) -> None:
    """The unreadable record re-driven fails again: its new dead letter carries the count, and the limit holds."""
    result, lines = await cli(kafka_settings, dlq_topic, "redrive", "route", "--from-offset", "4", "--to-offset", "4")
    assert result.exit_code == 0, result.output
    again = await read_all(kafka_settings, dlq_topic, expect=6, idle_s=0.2)
    assert len(again) == 6
    assert headers(again[5])[H_COUNT] == "1"
    assert headers(again[5])[H_FROM] == f"{dlq_topic}:0:4"
    _, lines = await cli(kafka_settings, dlq_topic, "list", "route", "--from-offset", "5")
    assert [(d["offset"], d["redrives"]) for d in lines] == [(5, 1)]
    args = ("redrive", "route", "--from-offset", "5", "--max-redrives", "1")
    result, lines = await cli(kafka_settings, dlq_topic, *args)
    assert result.exit_code == 1
    assert "re-driven 1 times already" in lines[0]["why"]
    result, lines = await cli(kafka_settings, dlq_topic, *args, "--force")
    assert result.exit_code == 0, result.output
    assert lines[0]["action"] == "redrive"
    third = [r for r in await read_to_end(kafka_settings, topic_in) if headers(r).get(H_FROM) == f"{dlq_topic}:0:5"]
    assert [headers(r)[H_COUNT] for r in third] == ["2"]


async def _category_filter(kafka_settings: KafkaSettings, dlq_topic: str, topic_in: str) -> None:
    """``--category`` selects on x-dlq-category: the real DeadLetters' and route's own (DeadLetterReason)."""
    _, lines = await cli(kafka_settings, dlq_topic, "list", "route", "--category", "invalid_record")
    assert [(d["offset"], d["category"]) for d in lines] == [(3, "invalid_record"), (4, "invalid_record")]
    before = await end_offsets(kafka_settings, topic_in)
    args = ("redrive", "route", "--category", "retries_exhausted", "--from-offset", "1", "--dry-run")
    result, lines = await cli(kafka_settings, dlq_topic, *args)
    assert result.exit_code == 0, result.output
    assert [(d["dlq"], d["action"]) for d in lines] == [(f"{dlq_topic}:0:{i}", "would redrive") for i in (1, 2)]
    assert await end_offsets(kafka_settings, topic_in) == before


async def test_list_show_redrive(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = await _route_settings(kafka_settings, kafka_topics)
    dlq_topic, topic_in = settings.topic_dlq, settings.topic_in
    await _lose_events(kafka_settings, dlq_topic, topic_in)

    app = create_app(settings)
    async with app.start_lifespan_context():
        assert len(await read_all(kafka_settings, dlq_topic, expect=5, idle_s=0.2)) == 5

        # 3. list and show.
        result, lines = await cli(kafka_settings, dlq_topic, "list", "route")
        assert result.exit_code == 0, result.output
        assert [d["offset"] for d in lines] == [0, 1, 2, 3, 4]
        assert [d["event_id"] for d in lines[:4]] == ["lost0", "lost1", "lost2", "other"]
        assert lines[4]["source"].startswith(f"{topic_in}:")
        assert lines[4]["code"]  # route's validation error code
        assert "5 dead letter(s)" in result.stderr
        _, lines = await cli(kafka_settings, dlq_topic, "list", "route", "--code", "retries_exhausted")
        assert [d["offset"] for d in lines] == [0, 1, 2]
        _, lines = await cli(kafka_settings, dlq_topic, "list", "route", "--reason", "other", "--since", "10m")
        assert [d["offset"] for d in lines] == [3]
        await _category_filter(kafka_settings, dlq_topic, topic_in)
        result = (await cli(kafka_settings, dlq_topic, "show", "route", "1"))[0]
        shown = json.loads(result.stdout)
        assert orjson.loads(shown["value"])["event"]["id"] == "lost1"
        assert ["traceparent", "00-t1"] in shown["headers"]
        assert shown["source"] == f"{topic_in}:0:101"

        # 4. Dry run: what would go, and nothing sent.
        before = await end_offsets(kafka_settings, topic_in)
        result, lines = await cli(
            kafka_settings, dlq_topic, "redrive", "route", "--code", "retries_exhausted", "--dry-run"
        )
        assert result.exit_code == 0, result.output
        assert [(d["dlq"], d["action"]) for d in lines] == [(f"{dlq_topic}:0:{i}", "would redrive") for i in range(3)]
        assert await end_offsets(kafka_settings, topic_in) == before

        # 5. The re-drive: back on text.enriched with the headers, routed once each.
        result, lines = await cli(
            kafka_settings, dlq_topic, "redrive", "route", "--code", "retries_exhausted", "--rate", "20"
        )
        assert result.exit_code == 0, result.output
        assert [d["action"] for d in lines] == ["redrive"] * 3
        copies = [r for r in await read_to_end(kafka_settings, topic_in) if H_FROM in headers(r)]
        assert sorted(headers(r)[H_FROM] for r in copies) == [f"{dlq_topic}:0:{i}" for i in range(3)]
        assert {headers(r)[H_COUNT] for r in copies} == {"1"}
        assert sorted(headers(r)["traceparent"] for r in copies) == ["00-t0", "00-t1", "00-t2"]
        assert not any(k.startswith("x-dlq-") for r in copies for k in headers(r))
        routed = await read_all(kafka_settings, settings.topic_out, expect=3, idle_s=0.2)
        assert sorted(orjson.loads(r.value)["event_id"] for r in routed) == ["lost0", "lost1", "lost2"]

        # 6. Again: refused, each was re-driven already (the target topic names it).
        result, lines = await cli(kafka_settings, dlq_topic, "redrive", "route", "--code", "retries_exhausted")
        assert result.exit_code == 1
        assert all(d["action"] == "skip" and "already re-driven" in d["why"] for d in lines), lines
        assert len([r for r in await read_to_end(kafka_settings, topic_in) if H_FROM in headers(r)]) == 3

        # 7. Forced: three more copies, which route's event-id de-duplication drops.
        result, lines = await cli(
            kafka_settings, dlq_topic, "redrive", "route", "--code", "retries_exhausted", "--force", "--rate", "0"
        )
        assert result.exit_code == 0, result.output
        assert len([r for r in await read_to_end(kafka_settings, topic_in) if H_FROM in headers(r)]) == 6
        await caught_up(kafka_settings, settings.group_id or "", topic_in)
        routed = await read_to_end(kafka_settings, settings.topic_out)
        assert sorted(orjson.loads(r.value)["event_id"] for r in routed) == ["lost0", "lost1", "lost2"]

        await _loop_limit(kafka_settings, dlq_topic, topic_in)


async def test_redrive_refuses_no_filter_and_unknown_service(kafka_settings: KafkaSettings) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_app, ["dlq", "redrive", "route", "--bootstrap", kafka_settings.bootstrap_servers]
    )
    assert result.exit_code == 2
    assert "--all" in result.output
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["dlq", "list", "nope"])
    assert result.exit_code == 2
    assert "unknown service" in result.output


async def test_truncated_dead_letter_is_redriven_whole(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str]
) -> None:
    """A dead letter cut to fit its topic is re-driven from the original at its source coordinates."""
    topic_in, dlq_topic = kafka_topics["text.in"], kafka_topics["dlq.ingest"]
    value = orjson.dumps({"id": "big1", "text": "x" * 6000})
    prod = AIOKafkaProducer(**client_options(kafka_settings), acks="all")  # type: ignore[arg-type]
    await prod.start()

    async def publish(value: bytes, topic: str, *, key: bytes | None, headers: dict[str, str]) -> None:
        await prod.send_and_wait(topic, value, key=key, headers=[(k, v.encode()) for k, v in headers.items()])

    try:
        await prod.send_and_wait(topic_in, value, key=b"big", headers=[("traceparent", b"00-big")])
        (original,) = await read_to_end(kafka_settings, topic_in)
        dead = DeadLetters(publish, service="ingest", topic=dlq_topic, max_bytes=2000)
        await dead.send(original, DeadLetterReason.RETRIES_EXHAUSTED, "too slow")
    finally:
        await prod.stop()
    result, lines = await cli(kafka_settings, dlq_topic, "list", "ingest")
    assert [(d["truncated"], d["bytes"] < 2000) for d in lines] == [(True, True)]
    result, lines = await cli(kafka_settings, dlq_topic, "redrive", "ingest", "--reason", "too slow")
    assert result.exit_code == 0, result.output
    copies = [r for r in await read_to_end(kafka_settings, topic_in) if H_FROM in headers(r)]
    assert [(r.key, r.value, headers(r)["traceparent"]) for r in copies] == [(b"big", value, "00-big")]
    assert not any(k.startswith("x-dlq-") for k in headers(copies[0]))
