"""A rebalance that moves a partition while its batch's transaction is open (issue #22), on real Kafka.

aiokafka commits offsets in a transaction with the pre-KIP-447 protocol: ``TxnOffsetCommit`` carries
the group id but no generation or member id, so the group cannot reject the commit of a member that
has lost the partition, and ``OffsetFetch`` has no ``require_stable``, so the new owner reads the
committed offset from *before* the open transaction. Deterministic version of what a session expiry
or a ``kill -9`` restart does to a member in the middle of a batch: member A writes the batch's
outputs inside its transaction and stalls before committing; A leaves the group; member B gets the
partition, reads the old committed offset and processes the same records; then A wakes up and
commits. With one transactional id per *instance* both commits succeed and the batch's outputs are
there twice (the first test shows it happens). With the runner's id per *input partition*, B's
``InitProducerId`` fences A and aborts A's open transaction before B reads the committed offset:
every record is in the output once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from textpulse.kafka.transactions import ExactlyOnce
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.settings import KafkaSettings

from tests.integration.test_exactly_once_runner import Msg, _consumer, _lag, _produce, _read, _topics

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

RECORDS = 20


class PerInstance(ExactlyOnce):
    """The naive layout: one transactional id per process, which a new owner of a partition never fences."""

    def __init__(self, *args: Any, instance: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance = instance

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self.group_id}.{self.instance}"


async def _drain(runner: ExactlyOnce, consumer: AIOKafkaConsumer, src: str, handle: Any) -> None:
    """Poll and process until the group has committed everything of ``src``."""
    for _ in range(300):
        batch = await consumer.getmany(timeout_ms=300)
        records = tuple(r for recs in batch.values() for r in recs)
        if records:
            await runner.process(Msg(records, consumer), handle)
        elif consumer.assignment() and await _lag(consumer, src) == 0:
            return
    msg = "member B did not drain the topic"
    raise AssertionError(msg)


async def _straddle(kafka: KafkaSettings, *, per_instance: bool) -> Counter[bytes]:
    """Run the scenario of the module doc; the output as ``read_committed`` readers see it."""
    src, dst = await _topics(kafka, partitions=1)
    await _produce(kafka, src, RECORDS)
    group = f"eos-straddle-{uuid.uuid4().hex[:8]}"

    def runner(instance: str) -> ExactlyOnce:
        if per_instance:
            return PerInstance(kafka, group_id=group, service="test", backoff_s=(0.05, 0.1), instance=instance)
        return ExactlyOnce(kafka, group_id=group, service="test", backoff_s=(0.05, 0.1))

    writer = RecordWriter(lambda *a, **k: asyncio.sleep(0), dst)
    written, release = asyncio.Event(), asyncio.Event()

    async def stalled(records: Sequence[Any]) -> None:
        # A writes the batch's outputs in its open transaction, then stalls (GC pause, lost session...).
        await writer.write([OutRecord(r.value, r.key, {}) for r in records])
        written.set()
        await release.wait()

    async def handle(records: Sequence[Any]) -> None:
        await writer.write([OutRecord(r.value, r.key, {}) for r in records])

    runner_a, runner_b = runner("a"), runner("b")
    consumer_a, consumer_b = _consumer(kafka, group), _consumer(kafka, group)
    consumer_a.subscribe([src])
    await consumer_a.start()
    a_task: asyncio.Task[None] | None = None
    try:
        batch: dict[TopicPartition, list[Any]] = {}
        for _ in range(100):
            batch = await consumer_a.getmany(timeout_ms=300)
            if batch:
                break
        records = tuple(r for recs in batch.values() for r in recs)
        assert records, "member A got no batch"
        a_task = asyncio.create_task(runner_a.process(Msg(records, consumer_a), stalled))
        await asyncio.wait_for(written.wait(), 30)
        # A leaves the group with its transaction open: the partition moves to B (a rebalance).
        await consumer_a.stop()
        consumer_b.subscribe([src])
        await consumer_b.start()
        await _drain(runner_b, consumer_b, src, handle)
        release.set()  # A wakes up and tries to commit what it wrote
        await asyncio.wait_for(a_task, 60)
    finally:
        release.set()
        if a_task is not None and not a_task.done():
            a_task.cancel()
        await runner_a.close()
        await runner_b.close()
        await consumer_b.stop()
        await consumer_a.stop()
    if not per_instance:
        assert runner_a.aborted_transactions >= 1, "A's commit must have been fenced"
    return await _read(kafka, dst, "read_committed")


async def test_per_instance_transactional_ids_duplicate_a_batch_that_straddles_a_rebalance(
    kafka_settings: KafkaSettings,
) -> None:
    """The bug this layout has: both A's late commit and B's reprocessing reach the output."""
    out = await _straddle(kafka_settings, per_instance=True)
    assert sorted(out) == sorted(f"v{i}".encode() for i in range(RECORDS))
    assert max(out.values()) == 2, "the straddling batch must be in the output twice"


async def test_per_partition_transactional_ids_fence_the_old_owner_every_record_once(
    kafka_settings: KafkaSettings,
) -> None:
    out = await _straddle(kafka_settings, per_instance=False)
    assert sorted(out) == sorted(f"v{i}".encode() for i in range(RECORDS))
    assert set(out.values()) == {1}, {k: v for k, v in out.items() if v > 1}
