"""Chunked hand-off inside a polled batch: order kept, nothing lost, 0 = the whole poll."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from textpulse.kafka.transactions import AtLeastOnce, chunks


@pytest.mark.parametrize(("n", "size", "sizes"), [(10, 0, [10]), (10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 128, [3])])
def test_chunks_keep_order_and_every_record(n: int, size: int, sizes: list[int]) -> None:
    parts = chunks(list(range(n)), size)
    assert [len(p) for p in parts] == sizes
    assert [x for p in parts for x in p] == list(range(n))


@dataclass
class _Msg:
    raw_message: tuple[Any, ...]


def test_at_least_once_hands_the_poll_over_chunk_by_chunk() -> None:
    seen: list[Sequence[int]] = []

    async def handle(records: Sequence[int]) -> None:
        seen.append(list(records))

    asyncio.run(AtLeastOnce(chunk_records=2).process(_Msg((1, 2, 3, 4, 5)), handle))
    assert seen == [[1, 2], [3, 4], [5]]
