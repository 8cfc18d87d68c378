"""Dead letters at the size limit and retries exhausted, against the real Apache Kafka.

ingest's ``text.in`` path end to end, and the shared guard inside an exactly-once transaction.

The input and DLQ topics are created with ``max.message.bytes`` = 64 KiB so records at the
limit are cheap; ingest reads the DLQ topic's limit at start-up, as in production. Each test
checks that the partition keeps moving: the valid records behind the bad one arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textpulse.contracts.topics import ALL_TOPICS, TopicSpec
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.kafka.dlq import (
    H_ATTEMPTS,
    H_EXC_TYPE,
    H_ORIGINAL_SHA256,
    H_ORIGINAL_SIZE,
    H_REASON,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_TRUNCATED,
    RETRIES_EXHAUSTED,
    DeadLetters,
    record_size,
)
from textpulse.kafka.transactions import ExactlyOnce
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.settings import KafkaSettings

from services.ingest import handlers
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import TEST_TOPICS
from tests.helpers import headers, read_all, read_to_end, running
from tests.ingest_cases import ev, js
from tests.property.loop import LoopThread

pytestmark = [pytest.mark.kafka]

LIMIT = 64 * 1024
#: The largest value the test producer puts on the 64 KiB input topic (batch and record overhead fit in the rest).
VALUE_MAX = LIMIT - 256
ATTEMPTS = 3
SPECS = {s.name: s for s in ALL_TOPICS}


async def limited_topics(kafka: KafkaSettings, names: dict[str, str]) -> str:
    """``text.in`` and ``dlq.ingest`` with a 64 KiB limit, ``text.raw`` as declared; returns the cleanup prefix."""
    prefix = TEST_TOPICS.track_names(names)
    small = {"max.message.bytes": str(LIMIT)}
    specs = [
        replace(SPECS["text.in"], configs={**SPECS["text.in"].configs, **small}),
        SPECS["text.raw"],
        replace(SPECS["dlq.ingest"], configs={**SPECS["dlq.ingest"].configs, **small}),
    ]
    await create_topics(kafka, specs, rename=names)
    return prefix


@pytest.fixture
async def topics(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]
) -> AsyncIterator[dict[str, str]]:
    names = topic_names()
    prefix = await limited_topics(kafka_settings, names)
    yield names
    await TEST_TOPICS.cleanup(kafka_settings, [prefix])


def ingest_settings(kafka: KafkaSettings, names: dict[str, str]) -> IngestSettings:
    return IngestSettings(
        kafka=kafka.model_copy(update={"dlq_max_attempts": ATTEMPTS}),
        topic_in=names["text.in"],
        topic_out=names["text.raw"],
        topic_dlq=names["dlq.ingest"],
        group_id=f"g-{names['text.in']}",
        kafka_batch_timeout_ms=50,
    )


async def produce(
    kafka: KafkaSettings, topic: str, values: Sequence[bytes], keys: Sequence[bytes] | None = None
) -> None:
    """One record at a time (a batch of two near-limit records would exceed the topic's limit), all on partition 0."""
    producer = AIOKafkaProducer(**client_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=keys[i] if keys else None, partition=0)
    finally:
        await producer.stop()


def event_ids(records: Sequence[ConsumerRecord[bytes, bytes]]) -> list[str]:
    return [orjson.loads(r.value)["id"] for r in records]


@pytest.mark.timeout(120)
async def test_record_just_under_the_limit_is_dead_lettered_truncated(
    kafka_settings: KafkaSettings, topics: dict[str, str]
) -> None:
    poison = b"{" + b"x" * (VALUE_MAX - 1)  # not JSON, and 65,280 bytes: its DLQ copy with headers would not fit
    valid = [js(ev(id=f"after-{i}")) for i in range(3)]
    app = create_app(ingest_settings(kafka_settings, topics))
    async with running(app):
        await produce(kafka_settings, topics["text.in"], [poison, *valid])
        raw = await read_all(kafka_settings, topics["text.raw"], expect=3, timeout_s=60)
        dlq = await read_all(kafka_settings, topics["dlq.ingest"], expect=1, timeout_s=30)
    # The partition kept moving: the valid records behind the poison one arrived, once each.
    assert sorted(event_ids(raw)) == ["after-0", "after-1", "after-2"]
    (rec,) = dlq
    h = headers(rec)
    assert h[H_TRUNCATED] == "true"
    assert h[H_ORIGINAL_SIZE] == str(len(poison))
    assert h[H_ORIGINAL_SHA256] == hashlib.sha256(poison).hexdigest()
    assert (h[H_SOURCE_TOPIC], h[H_SOURCE_PARTITION], h[H_SOURCE_OFFSET]) == (topics["text.in"], "0", "0")
    assert h[H_REASON]  # the validation reason, not "retries exhausted": it was dead-lettered at the first try
    assert not h[H_REASON].startswith(RETRIES_EXHAUSTED)
    assert poison.startswith(rec.value)
    assert len(rec.value) < len(poison)
    # Without the cut the copy would have been refused (the jam of issue #22).
    untruncated = {k: v for k, v in h.items() if k not in {H_TRUNCATED, H_ORIGINAL_SIZE, H_ORIGINAL_SHA256}}
    assert record_size(None, poison, untruncated) > LIMIT
    # The original is still addressable at its source coordinates.
    original = await read_all(kafka_settings, topics["text.in"], expect=4, timeout_s=30)
    assert next(r.value for r in original if (r.partition, r.offset) == (0, 0)) == poison


@pytest.mark.timeout(120)
async def test_record_failing_every_time_is_dead_lettered_as_retries_exhausted(
    kafka_settings: KafkaSettings, topics: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tries: Counter[str] = Counter()
    original = handlers.handle_records

    async def failing(records: Sequence[Any], deps: handlers.EdgeDeps) -> None:
        if any(b'"boom"' in (r.value or b"") for r in records):
            tries["boom"] += 1
            msg = "handler bug on boom"
            raise RuntimeError(msg)
        await original(records, deps)

    monkeypatch.setattr(handlers, "handle_records", failing)
    values = [js(ev(id="before")), js(ev(id="boom")), js(ev(id="after-0")), js(ev(id="after-1"))]
    app = create_app(ingest_settings(kafka_settings, topics))
    async with running(app):
        await produce(kafka_settings, topics["text.in"], values)
        raw = await read_all(kafka_settings, topics["text.raw"], expect=3, timeout_s=60)
        dlq = await read_all(kafka_settings, topics["dlq.ingest"], expect=1, timeout_s=30)
    assert sorted(event_ids(raw)) == ["after-0", "after-1", "before"]
    (rec,) = dlq
    h = headers(rec)
    assert rec.value == values[1]
    assert h[H_REASON].startswith(f"{RETRIES_EXHAUSTED} after {ATTEMPTS} attempts: RuntimeError('handler bug on boom')")
    assert h[H_ATTEMPTS] == str(ATTEMPTS)
    assert h[H_EXC_TYPE] == "RuntimeError"
    assert (h[H_SOURCE_PARTITION], h[H_SOURCE_OFFSET]) == ("0", "1")
    assert tries["boom"] == ATTEMPTS  # tried N times, then never again


@dataclass
class Msg:
    """What the exactly-once runner reads off FastStream's message: the records and the consumer."""

    raw_message: tuple[Any, ...]
    consumer: AIOKafkaConsumer


@pytest.mark.timeout(120)
async def test_retries_exhausted_inside_an_exactly_once_transaction(kafka_settings: KafkaSettings) -> None:
    prefix = TEST_TOPICS.track(f"t.dlq-eos-{uuid.uuid4().hex[:8]}.")
    src, dst, dlq_topic = f"{prefix}in", f"{prefix}out", f"{prefix}dlq"
    await create_topics(kafka_settings, [TopicSpec(t, 1, key="k", description="test") for t in (src, dst, dlq_topic)])
    try:
        await produce(kafka_settings, src, [f"v{i}".encode() for i in range(8)])
        group = f"g-{prefix}"
        runner = ExactlyOnce(kafka_settings, group_id=group, service="test", backoff_s=(0.05, 0.1))
        writer = RecordWriter(lambda *a, **k: asyncio.sleep(0), dst)
        dead_letters = DeadLetters(
            lambda *a, **k: asyncio.sleep(0),
            service="test",
            topic=dlq_topic,
            kafka=kafka_settings,
            max_attempts=ATTEMPTS,
        )
        await dead_letters.start()
        tries: Counter[bytes] = Counter()

        async def handle(records: Sequence[Any]) -> None:
            if any(r.value == b"v3" for r in records):
                tries[b"v3"] += 1
                msg = "always fails on v3"
                raise RuntimeError(msg)
            await writer.write([OutRecord(r.value, r.key, {}) for r in records])

        consumer = AIOKafkaConsumer(
            **client_options(kafka_settings),  # type: ignore[arg-type]
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        consumer.subscribe([src])
        await consumer.start()
        try:
            tp = TopicPartition(src, 0)
            for _ in range(100):
                batch = await consumer.getmany(timeout_ms=300)
                records = tuple(r for recs in batch.values() for r in recs)
                if records:
                    await runner.process(Msg(records, consumer), lambda recs: dead_letters.guard(recs, handle))
                elif await consumer.committed(tp) == 8:
                    break
        finally:
            await runner.close()
            await consumer.stop()
        out = await read_to_end(kafka_settings, dst, isolation="read_committed")
        dead = await read_to_end(kafka_settings, dlq_topic, isolation="read_committed")
    finally:
        await TEST_TOPICS.cleanup(kafka_settings, [prefix])
    assert sorted(r.value for r in out) == [f"v{i}".encode() for i in range(8) if i != 3]
    (rec,) = dead
    assert rec.value == b"v3"
    assert headers(rec)[H_REASON].startswith(f"{RETRIES_EXHAUSTED} after {ATTEMPTS} attempts")
    assert tries[b"v3"] == ATTEMPTS
    assert runner.aborted_transactions == ATTEMPTS - 1


# --- property: any size from 0 to the limit lands exactly once ---------------------------------------------------


@dataclass
class Collector:
    """The ingest app running on the limited topics, and everything it wrote to ``text.raw`` and the DLQ."""

    kafka: KafkaSettings
    names: dict[str, str]
    raw: Counter[str] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)
    serial: int = 0

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.kafka), enable_auto_commit=False)  # type: ignore[arg-type]
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, self.names["text.raw"], self.names["dlq.ingest"])
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    for r in records:
                        if tp.topic == self.names["text.raw"]:
                            self.raw[orjson.loads(r.value)["id"]] += 1
                        else:
                            self.dlq[(r.key or b"").decode()] += 1
        finally:
            await consumer.stop()

    def record(self, size: int, want_valid: bool) -> tuple[str, bytes, str]:
        """A ``text.in`` value of exactly ``size`` bytes, its id, and where it must land."""
        self.serial += 1
        uid = f"p-{self.serial}"
        room = size - len(js(ev(id=uid, text="")))
        if room >= 1 and (room > 10_000 or want_valid):  # TextEvent.text: at most 10,000 characters
            value = js(ev(id=uid, text="a" * room))
            return uid, value, "raw" if room <= 10_000 else "dlq"
        return uid, (b"\xff" + b"z" * size)[:size], "dlq"

    async def roundtrip(self, cases: list[tuple[int, bool]]) -> None:
        made = [self.record(size, valid) for size, valid in cases]
        for (size, _), (_, value, _) in zip(cases, made, strict=True):
            assert len(value) == size
        await produce(self.kafka, self.names["text.in"], [v for _, v, _ in made], [u.encode() for u, _, _ in made])
        deadline = time.monotonic() + 60
        while any(self.raw[u] + self.dlq[u] == 0 for u, _, _ in made):
            assert time.monotonic() < deadline, (
                f"not delivered: {[u for u, _, _ in made if not self.raw[u] + self.dlq[u]]}"
            )
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # room for a duplicate to show up
        for uid, _, where in made:
            assert (self.raw[uid], self.dlq[uid]) == ((1, 0) if where == "raw" else (0, 1)), uid


@asynccontextmanager
async def harness(kafka: KafkaSettings, names: dict[str, str]) -> AsyncIterator[Collector]:
    prefix = await limited_topics(kafka, names)
    try:
        async with running(create_app(ingest_settings(kafka, names))):
            collector = Collector(kafka, names)
            task = asyncio.create_task(collector.follow())
            try:
                yield collector
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    finally:
        await TEST_TOPICS.cleanup(kafka, [prefix])


@pytest.fixture
def live(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]
) -> Iterator[tuple[LoopThread[Collector], Collector]]:
    """The harness entered once on its own loop (hypothesis drives a synchronous test)."""
    loop = LoopThread(lambda: harness(kafka_settings, topic_names()), timeout_s=120)
    with loop as collector:
        yield loop, collector


@pytest.mark.timeout(300)
@settings(
    max_examples=15,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    cases=st.lists(
        st.tuples(st.one_of(st.integers(0, VALUE_MAX), st.sampled_from([0, 1, VALUE_MAX])), st.booleans()),
        min_size=1,
        max_size=4,
    )
)
def test_every_size_lands_exactly_once(
    live: tuple[LoopThread[Collector], Collector], cases: list[tuple[int, bool]]
) -> None:
    loop, collector = live
    loop.run(collector.roundtrip(cases))
