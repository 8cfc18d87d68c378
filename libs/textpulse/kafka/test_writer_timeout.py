"""A write that times out says which batches are still queued, and never cancels their delivery."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .writer import OutRecord, RecordWriter, WriteTimeout


class Batch:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def append(self, **record: Any) -> object:
        self.records.append(record)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class StalledProducer:
    """Accepts batches, never acknowledges them (a broker that went away)."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    async def partitions_for(self, _topic: str) -> set[int]:
        return {0, 1}

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, _batch: Batch, _topic: str, *, partition: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(fut)
        return fut


async def test_timeout_names_the_undecided_batches_and_leaves_them_running() -> None:
    producer = StalledProducer()

    async def no_publish(*_a: Any, **_k: Any) -> None:
        raise AssertionError

    writer = RecordWriter(no_publish, "t", timeout_s=0.05, producer=lambda: producer)  # type: ignore[arg-type,return-value]
    with pytest.raises(WriteTimeout) as timed_out:
        await writer.write([OutRecord(b"a", b"k1", {}), OutRecord(b"b", b"k2", {}), OutRecord(b"c", None, {})])
    assert timed_out.value.undecided == producer.futures
    assert producer.futures
    # Still pending, not cancelled: they settle when the producer delivers or gives up.
    assert not any(f.done() for f in producer.futures)
    for f in producer.futures:
        f.set_result(None)
