"""The indexer's pipeline: bounded concurrent bulk writes that never reorder writes of one id."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from textpulse.kafka import DeadLetters

from .bulk import BulkOutcome, BulkWriter
from .documents import BuildOptions, Doc
from .indexer import Indexer
from .metrics import IndexMetrics
from .test_logic import enriched


@dataclass
class Record:
    value: bytes | None
    topic: str = "text.enriched"
    partition: int = 0
    offset: int = 0
    key: bytes | None = None
    headers: Any = ()


class SlowWriter(BulkWriter):
    """Records which chunks overlap in time; every document is indexed after a short delay."""

    def __init__(self, chunk_docs: int) -> None:
        super().__init__(es=None, chunk_docs=chunk_docs)  # type: ignore[arg-type]
        self.in_flight: list[set[str]] = []
        self.most = 0
        self.overlapping_ids: set[str] = set()
        self.order: list[str] = []

    async def write(self, docs: Sequence[Doc]) -> BulkOutcome:
        ids = {d.id for d in docs}
        for other in self.in_flight:
            self.overlapping_ids |= ids & other
        self.in_flight.append(ids)
        self.most = max(self.most, len(self.in_flight))
        await asyncio.sleep(0.02)
        self.order.extend(f"{d.id}:{d.source['text']}" for d in docs)
        self.in_flight.remove(ids)
        return BulkOutcome(indexed=len(docs))


def record(i: int, text: str = "ACME Corp news") -> Record:
    ev = orjson.loads(orjson.dumps(enriched(text).model_dump(mode="json")))
    ev["event"]["id"] = f"ev-{i}"
    return Record(orjson.dumps(ev), offset=i)


def indexer(writer: BulkWriter, concurrency: int) -> tuple[Indexer, list[Any]]:
    sent: list[Any] = []

    async def publish(*args: Any, **kwargs: Any) -> None:
        sent.append((args, kwargs))

    dlq = DeadLetters(publish, service="index", topic="dlq.index")
    opts = BuildOptions(prefix="tp", redact=True)
    clock = lambda: datetime(2026, 11, 29, tzinfo=UTC)  # noqa: E731 - a fixed clock
    return Indexer(writer, dlq, IndexMetrics(), opts, clock=clock, concurrency=concurrency), sent


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_in_flight_is_bounded(concurrency: int) -> None:
    writer = SlowWriter(chunk_docs=10)
    idx, sent = indexer(writer, concurrency)
    await idx.handle([record(i) for i in range(100)], "events")
    assert writer.most == concurrency
    assert len(writer.order) == 100
    assert sent == []


async def test_chunks_sharing_an_id_never_overlap_and_the_last_version_wins() -> None:
    writer = SlowWriter(chunk_docs=10)
    idx, _ = indexer(writer, 4)
    # ev-5 appears in the first and in the third chunk (a re-enriched event later in the batch)
    records = [record(i) for i in range(20)] + [record(5, text="ACME Corp update")] + [record(i) for i in range(30, 39)]
    await idx.handle(records, "events")
    assert writer.overlapping_ids == set()
    versions = [entry for entry in writer.order if entry.startswith("ev-5:")]
    assert versions == ["ev-5:ACME Corp news", "ev-5:ACME Corp update"]
    assert writer.most >= 2  # chunks without shared ids still overlap


async def test_invalid_records_are_dead_lettered_and_the_rest_indexed() -> None:
    writer = SlowWriter(chunk_docs=4)
    idx, sent = indexer(writer, 2)
    records = [record(0), Record(b"{not json", offset=1), record(2), Record(None, offset=3), record(4)]
    await idx.handle(records, "events")
    assert len(writer.order) == 3
    assert len(sent) == 2
    # in the shared vocabulary, like every service's dead letters (code and field headers too)
    by_offset = {kw["headers"]["x-dlq-source-offset"]: kw["headers"] for _, kw in sent}
    assert by_offset["1"]["x-dlq-code"] == "not_json"
    assert by_offset["1"]["x-dlq-reason"].startswith("not_json: the value is not valid JSON")
    assert by_offset["3"]["x-dlq-code"] == "empty_value"
    assert all(h["x-dlq-category"] == "invalid_record" for h in by_offset.values())


def test_chunk_bounds_short_first_chunk_then_full_steps() -> None:
    import itertools

    from services.index.indexer import chunk_bounds

    assert chunk_bounds(0, 1000, 200) == []
    assert chunk_bounds(150, 1000, 200) == [(0, 150)]
    assert chunk_bounds(2500, 1000, 200) == [(0, 200), (200, 1200), (1200, 2200), (2200, 2500)]
    # a step smaller than the first chunk: every chunk is one step
    assert chunk_bounds(5, 2, 200) == [(0, 2), (2, 4), (4, 5)]
    for n in (1, 7, 1000, 5001):
        bounds = chunk_bounds(n, 1000, 200)
        assert bounds[0][0] == 0
        assert bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
