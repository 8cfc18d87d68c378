"""The exactly-once runner on Apache Kafka: abort + rewind + retry, and zombie fencing by transactional id."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from textpulse.contracts.topics import TopicSpec
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.transactions import ExactlyOnce, active_producer
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.settings import KafkaSettings

from tests.conftest import TEST_TOPICS
from tests.helpers import read_to_end

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


@dataclass
class Msg:
    """What the runner reads off FastStream's message: the records and the consumer."""

    raw_message: tuple[Any, ...]
    consumer: AIOKafkaConsumer


async def _topics(kafka: KafkaSettings, partitions: int = 3) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    prefix = TEST_TOPICS.track(f"t.eos-runner-{tag}.")  # deleted at session end
    src, dst = f"{prefix}in", f"{prefix}out"
    await create_topics(kafka, [TopicSpec(t, partitions, key="k", description="test") for t in (src, dst)])
    return src, dst


async def _produce(kafka: KafkaSettings, topic: str, n: int) -> None:
    prod = AIOKafkaProducer(**client_options(kafka), acks="all")  # type: ignore[arg-type]
    await prod.start()
    try:
        for i in range(n):
            await prod.send(topic, f"v{i}".encode(), key=f"k{i % 7}".encode())
        await prod.flush()
    finally:
        await prod.stop()


async def _read(kafka: KafkaSettings, topic: str, isolation: str) -> Counter[bytes]:
    return Counter(r.value for r in await read_to_end(kafka, topic, isolation=isolation) if r.value is not None)


def _consumer(kafka: KafkaSettings, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(kafka),  # type: ignore[arg-type]
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_poll_records=10,
    )


@pytest.mark.parametrize("chunk_records", [0, 3], ids=["whole-share", "chunked"])
async def test_failed_batch_is_aborted_rewound_and_retried(kafka_settings: KafkaSettings, chunk_records: int) -> None:
    # chunked: a partition's share of a poll runs as several transactions; a failed one rewinds only to itself.
    src, dst = await _topics(kafka_settings)
    await _produce(kafka_settings, src, 60)
    group = f"eos-runner-{uuid.uuid4().hex[:8]}"
    runner = ExactlyOnce(
        kafka_settings, group_id=group, service="test", backoff_s=(0.05, 0.1), chunk_records=chunk_records
    )
    writer = RecordWriter(lambda *a, **k: asyncio.sleep(0), dst)
    failed: set[bytes] = set()

    async def handle(records: Sequence[Any]) -> None:
        assert active_producer() is not None
        await writer.write([OutRecord(r.value, r.key, {}) for r in records])
        # Fail once per input partition, after the outputs were written: they must be aborted.
        tp = f"{records[0].partition}".encode()
        if tp not in failed:
            failed.add(tp)
            msg = "handler failed after writing"
            raise RuntimeError(msg)

    consumer = _consumer(kafka_settings, group)
    consumer.subscribe([src])
    await consumer.start()
    try:
        for _ in range(200):
            batch = await consumer.getmany(timeout_ms=300)
            records = tuple(r for recs in batch.values() for r in recs)
            if records:
                await runner.process(Msg(records, consumer), handle)
            elif runner.committed_transactions and await _lag(consumer, src) == 0:
                break
    finally:
        await runner.close()
        await consumer.stop()
    committed = await _read(kafka_settings, dst, "read_committed")
    uncommitted = await _read(kafka_settings, dst, "read_uncommitted")
    assert sorted(committed) == sorted(f"v{i}".encode() for i in range(60))
    assert set(committed.values()) == {1}
    assert runner.aborted_transactions == 3
    assert sum(uncommitted.values()) > 60  # the aborted writes exist, invisible to read_committed


async def _lag(consumer: AIOKafkaConsumer, topic: str) -> int:
    tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    ends = await consumer.end_offsets(tps)
    lag = 0
    for tp in tps:
        lag += ends[tp] - ((await consumer.committed(tp)) or 0)
    return lag


async def test_new_owner_fences_zombie(kafka_settings: KafkaSettings) -> None:
    src, dst = await _topics(kafka_settings, partitions=1)
    group = f"eos-fence-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(src, 0)
    zombie = ExactlyOnce(kafka_settings, group_id=group, service="test")
    owner = ExactlyOnce(kafka_settings, group_id=group, service="test")
    try:
        old = await zombie._producer(tp)
        await old.begin_transaction()
        await old.send_and_wait(dst, b"zombie")
        # The partition moved: its new owner initialises the same transactional id.
        new = await owner._producer(tp)
        async with new.transaction():
            await new.send_and_wait(dst, b"owner")
        with pytest.raises(KafkaError):
            await old.commit_transaction()
    finally:
        await zombie.close()
        await owner.close()
    assert await _read(kafka_settings, dst, "read_committed") == Counter({b"owner": 1})


async def test_run_alone_commits_its_writes_or_none(kafka_settings: KafkaSettings) -> None:
    """Writes decided without input (alert's timer): one transaction; a failure aborts it and rolls back."""
    _src, dst = await _topics(kafka_settings, partitions=1)
    rollbacks: list[int] = []

    async def rollback() -> None:
        rollbacks.append(1)

    runner = ExactlyOnce(kafka_settings, group_id=f"g-{uuid.uuid4().hex[:6]}", service="alone", on_abort=rollback)
    out = RecordWriter(lambda *_a, **_k: asyncio.sleep(0), dst)

    async def good() -> None:
        assert active_producer() is not None
        await out.write([OutRecord(b"kept-1", b"k", {}), OutRecord(b"kept-2", b"k", {})])

    async def bad() -> None:
        await out.write([OutRecord(b"aborted", b"k", {})])
        raise RuntimeError("decided, then failed")

    try:
        await runner.run_alone(good)
        with pytest.raises(RuntimeError, match="then failed"):
            await runner.run_alone(bad)
        await runner.run_alone(good)  # a fresh producer after the failure
    finally:
        await runner.close()
    assert active_producer() is None
    assert rollbacks == [1]
    assert (runner.committed_transactions, runner.aborted_transactions) == (2, 1)
    assert await _read(kafka_settings, dst, "read_committed") == Counter({b"kept-1": 2, b"kept-2": 2})
    assert (await _read(kafka_settings, dst, "read_uncommitted"))[b"aborted"] == 1


@dataclass
class Holding:
    """A consumer as far as ``run_alone`` looks at one: the partitions it holds now."""

    partitions: set[TopicPartition]

    def assignment(self) -> set[TopicPartition]:
        return self.partitions


async def test_timer_transaction_left_open_is_aborted_by_the_next_holder(kafka_settings: KafkaSettings) -> None:
    """A process killed inside ``run_alone``: the next holder of its lowest partition aborts the open transaction.

    Without that, the open transaction would hold the output partition's last stable offset back
    (read_committed readers, and a restart restoring state, see nothing after it) until the
    broker's transaction timeout.
    """
    src, dst = await _topics(kafka_settings, partitions=2)
    group = f"eos-alone-{uuid.uuid4().hex[:8]}"
    held = Holding({TopicPartition(src, 1), TopicPartition(src, 0)})
    out = RecordWriter(lambda *_a, **_k: asyncio.sleep(0), dst)
    killed = ExactlyOnce(kafka_settings, group_id=group, service="test")
    restarted = ExactlyOnce(kafka_settings, group_id=group, service="test")
    killed._consumer = restarted._consumer = held
    written = asyncio.Event()

    async def hangs() -> None:
        await out.write([OutRecord(b"left-open", b"k", {})])
        written.set()
        await asyncio.Event().wait()  # killed here: neither committed nor aborted

    async def after() -> None:
        await out.write([OutRecord(b"after-restart", b"k", {})])

    stuck = asyncio.create_task(killed.run_alone(hangs))
    try:
        await asyncio.wait_for(written.wait(), 20)
        await restarted.run_alone(after)
        assert await _read(kafka_settings, dst, "read_committed") == Counter({b"after-restart": 1})
        assert (await _read(kafka_settings, dst, "read_uncommitted"))[b"left-open"] == 1
    finally:
        stuck.cancel()
        with contextlib.suppress(BaseException):
            await stuck
        await killed.close()
        await restarted.close()


async def test_restart_on_transactional_input_resumes_past_the_commit_marker(kafka_settings: KafkaSettings) -> None:
    """Input written in transactions: the committed offset points at a commit marker, the next record is after it.

    A restarted runner checks its first batch against the committed offset once, seeks there, and
    then processes the batch that starts past the marker (it must not seek forever).
    """
    src, dst = await _topics(kafka_settings, partitions=1)
    txn = AIOKafkaProducer(**client_options(kafka_settings), transactional_id=f"src-{uuid.uuid4().hex[:8]}")  # type: ignore[arg-type]
    await txn.start()
    try:
        for part in ("a", "b"):
            async with txn.transaction():
                for i in range(5):
                    await txn.send_and_wait(src, f"{part}{i}".encode(), key=b"k")
    finally:
        await txn.stop()
    group = f"eos-marker-{uuid.uuid4().hex[:8]}"
    writer = RecordWriter(lambda *a, **k: asyncio.sleep(0), dst)

    async def handle(records: Sequence[Any]) -> None:
        await writer.write([OutRecord(r.value, r.key, {}) for r in records])

    async def run_one_transaction(max_records: int) -> None:
        runner = ExactlyOnce(kafka_settings, group_id=group, service="test")
        consumer = _consumer(kafka_settings, group)
        consumer.subscribe([src])
        await consumer.start()
        try:
            for _ in range(60):
                batch = await consumer.getmany(timeout_ms=300, max_records=max_records)
                records = tuple(r for recs in batch.values() for r in recs)
                if records:
                    await runner.process(Msg(records, consumer), handle)
                if runner.committed_transactions:
                    break
        finally:
            await runner.close()
            await consumer.stop()

    await run_one_transaction(max_records=5)  # a0-a4 (offsets 0-4): committed offset 5, the marker
    await run_one_transaction(max_records=10)  # restart: b0-b4 start at offset 6
    assert await _read(kafka_settings, dst, "read_committed") == Counter(
        f"{part}{i}".encode() for part in ("a", "b") for i in range(5)
    )


async def test_rebalance_during_a_batch_does_not_reprocess_it(kafka_settings: KafkaSettings) -> None:
    """A rebalance while a batch is handled hands the partition back with the position reset to the
    committed offset read *before* that batch's transaction committed; the runner must verify the
    position again (it re-initialises the producer and seeks to the new committed offset) instead of
    re-reading the batch and writing its outputs twice (#22: the chaos run's duplicates)."""
    from textpulse.observability.progress import ASSIGNMENTS, AssignmentListener

    src, dst = await _topics(kafka_settings, partitions=1)
    extra, _ = await _topics(kafka_settings, partitions=1)
    await _produce(kafka_settings, src, 40)
    group = f"eos-rebalance-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(src, 0)
    runner = ExactlyOnce(kafka_settings, group_id=group, service="test", backoff_s=(0.05, 0.1))
    writer = RecordWriter(lambda *a, **k: asyncio.sleep(0), dst)
    listener = AssignmentListener(group)
    consumer = _consumer(kafka_settings, group)
    rebalanced = False

    async def handle(records: Sequence[Any]) -> None:
        nonlocal rebalanced
        if not rebalanced:
            rebalanced = True
            before = ASSIGNMENTS.get(group, 0)
            consumer.subscribe([src, extra], listener=listener)  # a rebalance that hands src:0 back
            for _ in range(200):
                if ASSIGNMENTS.get(group, 0) > before and tp in consumer.assignment():
                    break
                await asyncio.sleep(0.05)
            assert ASSIGNMENTS.get(group, 0) > before, "no rebalance happened"
            # The reset position is the committed offset before this batch's transaction.
            assert await consumer.position(tp) == records[0].offset
        await writer.write([OutRecord(r.value, r.key, {}) for r in records])

    consumer.subscribe([src], listener=listener)
    await consumer.start()
    try:
        for _ in range(200):
            batch = await consumer.getmany(tp, timeout_ms=300) if tp in consumer.assignment() else {}
            records = tuple(r for recs in batch.values() for r in recs)
            if records:
                await runner.process(Msg(records, consumer), handle)
            elif runner.committed_transactions and await _lag(consumer, src) == 0:
                break
    finally:
        await runner.close()
        await consumer.stop()
    assert rebalanced
    committed = await _read(kafka_settings, dst, "read_committed")
    assert sorted(committed) == sorted(f"v{i}".encode() for i in range(40))
    assert set(committed.values()) == {1}, {k: v for k, v in committed.items() if v > 1}


async def test_fence_writes_only_abort_markers(kafka_settings: KafkaSettings) -> None:
    """The fence after a failure (ExactlyOnce._fence_orphans) puts an ABORT marker on each partition, no record.

    One offset more on every output partition (the control batch), nothing for any reader, the
    committed offset unchanged: what closes records a lost marker left open, at no cost to readers.
    """
    src, dst = await _topics(kafka_settings)
    group = f"eos-fence-markers-{uuid.uuid4().hex[:8]}"
    runner = ExactlyOnce(kafka_settings, group_id=group, service="test")
    tp = TopicPartition(src, 0)
    outs = {TopicPartition(dst, p) for p in range(3)}
    reader = AIOKafkaConsumer(**client_options(kafka_settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await reader.start()
    try:
        before = await reader.end_offsets(sorted(outs))
        runner._unconfirmed[tp] = set(outs)
        runner._failed.add(tp)
        await runner._fence_orphans(tp, committed=None)
        # The coordinator writes the markers after it answers the abort.
        for _ in range(50):
            after = await reader.end_offsets(sorted(outs))
            if all(after[out] > before[out] for out in outs):
                break
            await asyncio.sleep(0.1)
    finally:
        await runner.close()
        await reader.stop()
    assert runner.fenced_transactions == 1
    assert {out: after[out] - before[out] for out in outs} == dict.fromkeys(outs, 1)
    assert await _read(kafka_settings, dst, "read_uncommitted") == Counter()
