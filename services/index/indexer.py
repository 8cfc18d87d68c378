"""One consumed batch → documents → Elasticsearch, with dead-lettering and no loss.

The batch handler returns (and the batch is committed) only when every record
is either indexed or acknowledged in ``dlq.index``: records that are not valid
JSON / not a valid contract, and documents Elasticsearch rejects for good (a
mapping error), each with its reason. While Elasticsearch is unavailable the
bulk write is retried with backoff; past the retry deadline the handler raises,
the batch is not committed and is redelivered — ids make that idempotent.

Writes are pipelined and concurrent: while chunk *i* is written, chunk *i+1*
is built, and up to ``concurrency`` chunks are in flight at once (Elasticsearch
indexes them on separate write threads). Two chunks that share a document id
are never in flight together — the later one waits — so the last record of an
id in the batch is the one that stays, as with strictly sequential writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, FieldError, error
from textpulse.kafka import DeadLetters
from textpulse.kafka.dlq import RecordLike

from .bulk import BulkOutcome, BulkRetryExhausted, BulkWriter
from .documents import BUILDERS, Builder, BuildOptions, Doc, InvalidRecord
from .metrics import IndexMetrics
from .pii import redact

log = logging.getLogger(__name__)

SERVICE = "index"
#: Records built between two yields to the event loop (keeps the bulk in flight moving).
YIELD_EVERY = 64
#: Documents in a batch's first bulk request. Between two batches nothing is in flight
#: (the batch is committed when all its writes are acknowledged), so Elasticsearch idles
#: while the next batch's first chunk is built: a small first chunk keeps that gap short
#: (building costs about 65 µs a document here, so 1,000 documents leave it idle ~65 ms a batch).
FIRST_CHUNK = 200


def chunk_bounds(n: int, step: int, first: int = FIRST_CHUNK) -> list[tuple[int, int]]:
    """``[start, end)`` of each chunk of ``n`` records: a short first chunk, then ``step``-sized ones."""
    if n <= 0:
        return []
    bounds = [(0, min(n, max(1, min(first, step))))]
    while bounds[-1][1] < n:
        start = bounds[-1][1]
        bounds.append((start, min(n, start + step)))
    return bounds


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Flight:
    """One chunk being written: its documents, their records, their ids and the write task."""

    docs: list[Doc]
    sources: list[RecordLike]
    ids: set[str] = field(init=False)
    task: asyncio.Task[BulkOutcome] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = {d.id for d in self.docs}

    def start(self, writer: BulkWriter) -> _Flight:
        self.task = asyncio.create_task(writer.write(self.docs))
        return self

    async def result(self) -> tuple[list[Doc], list[RecordLike], BulkOutcome]:
        return self.docs, self.sources, await self.task


@dataclass
class Indexer:
    """Shared by the per-topic subscribers; built in the lifespan, replaceable in tests."""

    writer: BulkWriter
    dead_letters: DeadLetters
    metrics: IndexMetrics
    options: BuildOptions
    clock: Callable[[], datetime] = utcnow
    #: Bulk requests in flight at once per batch (1 = strictly one after the other).
    concurrency: int = 2

    async def handle(self, records: Sequence[RecordLike], family: str) -> None:
        """Index one batch of records of ``family``; raises (no commit) if it cannot be written yet."""
        m = self.metrics
        topic = records[0].topic if records else family
        started = time.perf_counter()
        m.received.labels(SERVICE, topic).inc(len(records))
        m.batch_size.labels(SERVICE, topic).observe(len(records))
        build = BUILDERS[family][1]
        now = self.clock()
        step = self.writer.chunk_docs
        invalid: list[tuple[RecordLike, InvalidRecord]] = []
        written: list[tuple[list[Doc], list[RecordLike], BulkOutcome]] = []
        flights: deque[_Flight] = deque()
        try:
            for first, last in chunk_bounds(len(records), step, FIRST_CHUNK):
                docs, sources = await self._build(records[first:last], build, now, invalid)
                if not docs:
                    continue
                flight = _Flight(docs, sources)
                while flights and (
                    len(flights) >= self.concurrency or any(not flight.ids.isdisjoint(f.ids) for f in flights)
                ):
                    written.append(await flights.popleft().result())
                flights.append(flight.start(self.writer))
            while flights:
                written.append(await flights.popleft().result())
        except BulkRetryExhausted:
            m.failed.labels(SERVICE, topic, "es_unavailable").inc(len(records))
            log.exception("batch not indexed; it is not committed and will be redelivered", extra={"topic": topic})
            raise
        finally:
            for pending in flights:
                if not pending.task.done():
                    pending.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, BulkRetryExhausted):
                    await pending.task
            m.bulk_duration.labels(SERVICE, family).observe(time.perf_counter() - started)
        await self._dead_letter(invalid, written)
        self._count(family, topic, len(records), len(invalid), written)
        m.handler_duration.labels(SERVICE, topic).observe(time.perf_counter() - started)

    async def _build(
        self,
        records: Sequence[RecordLike],
        build: Builder,
        now: datetime,
        invalid: list[tuple[RecordLike, InvalidRecord]],
    ) -> tuple[list[Doc], list[RecordLike]]:
        docs: list[Doc] = []
        sources: list[RecordLike] = []
        for k, rec in enumerate(records, 1):
            try:
                if rec.value is None:
                    raise InvalidRecord([error(ErrorCode.EMPTY_VALUE)])
                docs.append(build(rec.value, now, self.options))
                sources.append(rec)
            except InvalidRecord as exc:
                invalid.append((rec, exc))
            if k % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let the bulk request in flight progress
        return docs, sources

    async def _dead_letter(
        self,
        invalid: list[tuple[RecordLike, InvalidRecord]],
        written: list[tuple[list[Doc], list[RecordLike], BulkOutcome]],
    ) -> None:
        for rec, exc in invalid:
            # Field paths can hold a record's own keys (an unknown metadata key): redacted like the reason.
            errors = [FieldError(e.code, redact(e.field), e.message) for e in exc.errors]
            await self.dead_letters.send(rec, DeadLetterReason.INVALID_RECORD, redact(exc.reason), errors=errors)
        for _, sources, outcome in written:
            for pos, reason in outcome.rejected:
                await self.dead_letters.send(
                    sources[pos], DeadLetterReason.STORE_REJECTED, f"rejected by Elasticsearch: {reason}"
                )

    def _count(
        self,
        family: str,
        topic: str,
        received: int,
        invalid: int,
        written: list[tuple[list[Doc], list[RecordLike], BulkOutcome]],
    ) -> None:
        m, done = self.metrics, self.clock()
        e2e = m.e2e_latency.labels(SERVICE)
        indexed = rejected_count = 0
        for docs, _, outcome in written:
            rejected = {pos for pos, _ in outcome.rejected}
            indexed += outcome.indexed
            rejected_count += len(rejected)
            for pos, doc in enumerate(docs):
                if doc.ingest_time is not None and pos not in rejected:
                    e2e.observe(max(0.0, (done - doc.ingest_time).total_seconds()))
        m.documents.labels(SERVICE, family, "indexed").inc(indexed)
        m.documents.labels(SERVICE, family, "rejected").inc(rejected_count)
        m.documents.labels(SERVICE, family, "invalid").inc(invalid)
        m.processed.labels(SERVICE, topic).inc(received)
