"""Reading topics to their end: the one implementation the CLI, the chaos verifier, benches and tests share.

Two questions come up again and again and get different answers:

* :func:`read_to_end` — "everything written so far": the end offsets are taken
  once at the start and the read stops when every partition's position reaches
  them (positions move past transaction markers too, so an aborted tail still
  ends the read). ``read_committed`` by default: a reader of exactly-once
  outputs sees only committed records.
* :func:`read_until` — "everything, waiting for ``expect`` records": for a test or
  a benchmark whose writers are still running; stops ``idle_s`` after the last
  new record once ``expect`` were read (or at the timeout).

:func:`read_range` is the building block: records of given partitions between
start and end offsets, as an async iterator, from a consumer the caller owns.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from textpulse.settings import KafkaSettings

from .admin import client_options, topic_partitions

#: large records (near the broker's 1 MiB default, or bigger on DLQ topics) must fit one fetch
MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024


def reader(settings: KafkaSettings, *, isolation: str = "read_committed") -> AIOKafkaConsumer:
    """A group-less consumer for reading (never commits), large records allowed."""
    return AIOKafkaConsumer(
        **client_options(settings),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level=isolation,
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
    )


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    timeout_s: float,
) -> AsyncIterator[Any]:
    """Records of each partition from ``starts`` up to ``ends`` (exclusive), in offset order per partition.

    Raises :class:`TimeoutError` naming the partitions not read to their end within ``timeout_s``.
    """
    pending = {tp for tp in starts if starts[tp] < ends[tp]}
    if not pending:
        return
    consumer.assign(sorted(pending, key=lambda tp: (tp.topic, tp.partition)))
    for tp in pending:
        consumer.seek(tp, starts[tp])
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            msg = f"could not read {sorted(str(tp) for tp in pending)} to the end within {timeout_s:.0f}s"
            raise TimeoutError(msg)
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=10_000)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset < ends[tp]:
                    yield rec
        for tp in list(pending):
            # Positions move past transaction markers too, so an aborted tail still ends the read.
            if await consumer.position(tp) >= ends[tp]:
                pending.discard(tp)


async def read_to_end(
    settings: KafkaSettings, *topics: str, isolation: str = "read_committed", timeout_s: float = 120.0
) -> dict[str, list[Any]]:
    """Every record of ``topics`` from the beginning up to their end offsets now (topic → records)."""
    consumer = reader(settings, isolation=isolation)
    await consumer.start()
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        tps = await topic_partitions(consumer, *topics)
        if not tps:
            return out
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        async for rec in read_range(consumer, starts, ends, timeout_s):
            out[rec.topic].append(rec)
    finally:
        await consumer.stop()
    return out


async def read_until(
    settings: KafkaSettings,
    topic: str,
    *,
    expect: int | None = None,
    timeout_s: float = 30.0,
    idle_s: float = 1.0,
    isolation: str = "read_uncommitted",
) -> list[Any]:
    """Every record of ``topic`` from the beginning, waiting for ``expect`` records (then ``idle_s`` more).

    Waits for the topic to appear (its writer may create it). Returns what was read at the
    timeout, fewer than ``expect`` records included: the caller asserts on the count.
    """
    consumer = reader(settings, isolation=isolation)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        tps: list[TopicPartition] = []
        while not tps and time.monotonic() < deadline:
            tps = await topic_partitions(consumer, topic)
            if not tps:
                await asyncio.sleep(0.2)
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
                last_new = time.monotonic()
            enough = expect is None or len(out) >= expect
            if enough and time.monotonic() - last_new >= idle_s:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out
