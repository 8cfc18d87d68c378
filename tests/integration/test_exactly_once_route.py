"""Route as a real process on Apache Kafka, SIGKILLed mid-stream and restarted.

exactly_once: the ``read_committed`` outputs hold every routed event exactly
once (the transaction open at the kill is aborted by the restarted instance).
at_least_once: nothing is lost; the duplicates the kill causes are counted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from textpulse.contracts.events import encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.settings import KafkaSettings

from services.route.rules import load_rules
from tests.helpers import route_env, start_route
from tests.support.route_synth import support_event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(110)]

EVENTS = 600
INTENTS = ["card_arrival", "declined_card_payment", "card_payment_not_recognised", "book_flight"]


def _env(kafka: KafkaSettings, names: dict[str, str], delivery: str, prefix: str) -> dict[str, str]:
    return route_env(
        kafka,
        names,
        prefix,
        delivery=delivery,
        # The killed member holds its partitions until its session expires: keep that short.
        TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS="6000",
        # Small batches: many transactions, so the kill lands inside one.
        TEXTPULSE_ROUTE_KAFKA_BATCH_RECORDS="10",
        TEXTPULSE_ROUTE_LOG_LEVEL="WARNING",
    )


async def _ids(kafka: KafkaSettings, topics: list[str], isolation: str) -> Counter[str]:
    """Event ids in ``topics`` right now (from the beginning up to the current end)."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level=isolation,
    )
    await consumer.start()
    found: Counter[str] = Counter()
    try:
        tps = [tp for topic in topics for tp in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.update(orjson.loads(r.value)["event_id"] for r in records)
    finally:
        await consumer.stop()
    return found


async def _wait_for(kafka: KafkaSettings, topics: list[str], count: int, timeout_s: float) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        ids = await _ids(kafka, topics, "read_committed")
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(0.3)


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
async def test_sigkill_mid_stream(
    delivery: str, kafka_settings: KafkaSettings, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    names = kafka_topics
    prefix = names["support.routed"].removesuffix("support.routed")
    queues = [f"{prefix}support.queue.{q}" for q in load_rules().queues]
    await create_topics(
        kafka_settings, [TopicSpec(q, STREAM_PARTITIONS, key="conversation", description="t") for q in queues]
    )
    env = _env(kafka_settings, names, delivery, prefix)
    tag = uuid.uuid4().hex[:6]
    events = [
        support_event(f"{tag}-{i}", f"message {i}", INTENTS[i % len(INTENTS)], 0.9, conversation=f"c{i % 40}")
        for i in range(EVENTS)
    ]
    log = tmp_path / "route.log"
    producer = AIOKafkaProducer(**client_options(kafka_settings), acks="all", linger_ms=0)  # type: ignore[arg-type]
    await producer.start()

    # A backlog, consumed in small batches: the service is always inside a transaction when it is killed.
    for e in events:
        await producer.send(names["text.enriched"], encode(e), key=f"conv:{e.event.conversation_id}".encode())
    await producer.flush()
    await producer.stop()
    service = start_route(env, log)
    try:
        before = await _wait_for(kafka_settings, [names["support.routed"]], EVENTS // 3, 30)
        assert len(before) >= EVENTS // 3, log.read_text()[-3000:]
        service.send_signal(signal.SIGKILL)
        service.wait(10)
        killed_at = len(before)
        await asyncio.sleep(0.5)
        service = start_route(env, log)
        routed = await _wait_for(kafka_settings, [names["support.routed"]], EVENTS, 45)
        in_queues = await _ids(kafka_settings, queues, "read_committed")
        uncommitted = await _ids(kafka_settings, [names["support.routed"]], "read_uncommitted")
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
    want = {e.event.id for e in events}
    duplicates = sum(n - 1 for n in routed.values())
    aborted = sum(uncommitted.values()) - sum(routed.values())
    print(
        f"\n{delivery}: killed after {killed_at} routed; routed ids {len(routed)}/{EVENTS}, "
        f"duplicates {duplicates}, queue records {sum(in_queues.values())}, "
        f"aborted records visible to read_uncommitted {aborted}"
    )
    assert set(routed) == want, f"lost: {sorted(want - set(routed))[:10]}\n{log.read_text()[-3000:]}"
    assert set(in_queues) == want
    if delivery == "exactly_once":
        assert duplicates == 0, routed.most_common(5)
        assert all(n == 1 for n in in_queues.values()), in_queues.most_common(5)
