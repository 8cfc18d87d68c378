"""Input records → engine → changelog, alerts and pushes, in the order that keeps alerts exactly-once.

Per consumed batch (under one lock, so the two input topics never interleave):

1. every record is parsed; unreadable ones go to the DLQ, the rest are counted
   by the engine (a record whose offset the key already applied is skipped);
2. the engine evaluates the windows the watermark passed; new notifications
   go to the key's *outbox*;
3. the changed key states (outboxes included) are written to the compacted
   changelog and acknowledged;
4. the outboxes are published to ``alerts.financial`` (acknowledged) and
   pushed to Alertmanager / the webhook (best effort);
5. the emptied outboxes are written to the changelog again;
6. the handler returns and the input offsets are committed.

Entity keys are co-partitioned with ``entity.mentions``: a key fed from input
partition p writes its changelog records to changelog partition p, so the
replica a rebalance gives p to restores exactly that changelog partition
(:mod:`.partitions`). Topic keys are written by key hash.

A crash before 3 replays the batch from Kafka into the restored state (nothing
was decided twice because nothing was saved); between 3 and 5 the restored
outbox is published on restart (an alert is never lost); a crash between 4
and 5 can re-publish the same ``(alert_id, sequence)`` — never a *new* alert —
which consumers de-duplicate by that pair.

With ``delivery=exactly_once`` steps 3-5 and the input offsets are one Kafka
transaction (:mod:`textpulse.kafka.transactions`): a crash anywhere leaves
either all of them or none, so no ``(alert_id, sequence)`` is ever published
twice to ``read_committed`` readers. The Alertmanager / webhook push stays
best effort and can repeat after an abort (Alertmanager merges identical alerts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cachetools import LRUCache
from pydantic import ValidationError
from textpulse.contracts.alerts import AlertStatus, Detector, FinancialAlert, KeyKind
from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, error, reason, validation_errors
from textpulse.contracts.events import EnrichedEvent, EntityMention, encode
from textpulse.kafka import DeadLetters
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.kafka.writer import OutRecord, RecordWriter, WriteError
from textpulse.settings import KafkaSettings

from .engine import Engine, KeyState
from .metrics import AlertMetrics
from .notify import Notifier

log = logging.getLogger(__name__)
SERVICE = "alert"


class TextCache:
    """Bounded map event id → text, filled from ``text.enriched`` for the evidence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._texts: LRUCache[str, str] = LRUCache(maxsize=max(1, capacity))

    def put(self, event_id: str, text: str) -> None:
        if self.capacity <= 0:
            return
        self._texts[event_id] = text

    def get(self, event_id: str) -> str | None:
        return self._texts.get(event_id)


@dataclass
class Outputs:
    """Where decisions go; built in the lifespan, replaceable in tests."""

    state: RecordWriter
    alerts: RecordWriter
    dead_letters: DeadLetters
    notifier: Notifier | None


class Processor:
    """Owns the engine and applies the per-batch protocol above."""

    def __init__(
        self,
        engine: Engine,
        texts: TextCache,
        metrics: AlertMetrics,
        *,
        topic_kind: dict[str, str],
        dedup_offsets: bool = True,
    ) -> None:
        """``dedup_offsets=False`` only for in-memory brokers, whose records all have offset 0
        (and no meaningful partition: their entity keys are then not co-partitioned either).
        """
        self.engine = engine
        self.texts = texts
        self.metrics = metrics
        self.topic_kind = topic_kind
        self.outputs: Outputs | None = None
        self.lock = asyncio.Lock()
        self.dedup_offsets = dedup_offsets
        self.retry_backoff_s = 1.0
        #: Called with each batch under the lock before it is applied (see :mod:`.partitions`).
        self.before_batch: Callable[[Sequence[Any]], Awaitable[None]] | None = None
        #: Whether a timer evaluation may run now (False while the group rebalances; see :mod:`.partitions`).
        self.may_tick: Callable[[], bool] = lambda: True
        #: The aiokafka consumer of the input topics (set from the first batch): tells empty partitions apart.
        self.consumer: Any = None

    # -- input -------------------------------------------------------------------

    def _mention(self, rec: Any) -> str:
        m = EntityMention.model_validate_json(rec.value)
        return self.engine.add(
            key=f"entity:{m.entity_key}",
            kind=KeyKind.ENTITY,
            subject=m.entity_key,
            event_id=m.event_id,
            event_time=m.event_time,
            sentiment=m.sentiment,
            ingest_time=m.ingest_time,
            text=self.texts.get(m.event_id),
            source=f"{rec.topic}:{rec.partition}" if self.dedup_offsets else None,
            offset=rec.offset,
            partition=rec.partition if self.dedup_offsets else None,
        )

    def _enriched(self, rec: Any) -> str:
        e = EnrichedEvent.model_validate_json(rec.value)
        self.texts.put(e.event.id, e.event.text)
        if e.topic is None or not self.engine.config.topic_alerts:
            return "no_topic"
        return self.engine.add(
            key=f"topic:{e.topic.label}",
            kind=KeyKind.TOPIC,
            subject=e.topic.label,
            event_id=e.event.id,
            event_time=e.event.event_time,
            sentiment=e.sentiment,
            ingest_time=e.event.ingest_time,
            text=e.event.text,
            source=f"{rec.topic}:{rec.partition}" if self.dedup_offsets else None,
            offset=rec.offset,
        )

    async def handle(self, records: Sequence[Any]) -> None:
        """Apply one consumed batch (all records of one topic) and flush the consequences."""
        assert self.outputs is not None, "outputs are set in the lifespan"
        m, svc = self.metrics, SERVICE
        started = time.perf_counter()
        async with self.lock:
            if self.before_batch is not None:
                await self.before_batch(records)
            for rec in records:
                kind = self.topic_kind.get(rec.topic, "mention")
                m.received.labels(svc, rec.topic).inc()
                try:
                    if rec.value is None:
                        raise ValueError("empty record value")
                    if kind == "mention" and not self.engine.config.entity_alerts:
                        outcome = "disabled"
                    else:
                        outcome = self._mention(rec) if kind == "mention" else self._enriched(rec)
                except (ValidationError, ValueError) as exc:
                    # The shared vocabulary (x-dlq-code/-field); pydantic's own text would echo the input.
                    if isinstance(exc, ValidationError):
                        errs = validation_errors(exc)
                    elif rec.value is None:
                        errs = [error(ErrorCode.EMPTY_VALUE)]
                    else:
                        errs = [error(ErrorCode.INVALID_VALUE, why=type(exc).__name__)]
                    await self.outputs.dead_letters.send(
                        rec,
                        DeadLetterReason.INVALID_RECORD,
                        f"not a valid {kind} record: {reason(errs)}",
                        exc,
                        errors=errs,
                    )
                    continue
                m.mentions.labels(svc, kind, outcome).inc()
            try:
                await self.flush()
            except (WriteError, TimeoutError):
                # Not committed: the batch is redelivered; its records are already counted
                # (skipped as duplicates by offset) and the outboxes are published next time.
                log.exception("alert outputs not written; the batch will be redelivered")
                m.failed.labels(svc, records[0].topic, "write_error").inc(len(records))
                await asyncio.sleep(self.retry_backoff_s)
                raise
            for topic in {r.topic for r in records}:
                m.processed.labels(svc, topic).inc(sum(r.topic == topic for r in records))
                m.handler_duration.labels(svc, topic).observe(time.perf_counter() - started)

    # -- timer -------------------------------------------------------------------

    async def tick(self, run_alone: Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]) -> bool:
        """Timer-driven evaluation: close the windows the watermark passed while no batch arrives.

        Windows are otherwise evaluated per consumed batch; without this, partitions that
        stop delivering (the end of a burst, an empty partition releasing the watermark)
        would hold the last windows — and their alerts and resolutions — until the next
        record. ``run_alone`` runs the flush (in a transaction of its own with exactly-once
        delivery). Returns whether it flushed.
        """
        async with self.lock:
            if not self.may_tick():
                return False
            await self._release_empty()
            if not (self.engine.due() or self.engine.pending()):
                return False
        await run_alone(self._flush_tick)
        return True

    async def _flush_tick(self) -> None:
        async with self.lock:
            if self.may_tick():
                await self.flush()

    async def _release_empty(self) -> None:
        """Partitions assigned but not delivering, with nothing to read, stop holding the watermark."""
        waiting = self.engine.waiting_sources()
        if not waiting or self.consumer is None:
            return
        empty = []
        for source in waiting:
            topic, _, partition = source.rpartition(":")
            tp = TopicPartition(topic, int(partition))
            try:
                # read_committed (the services' consumers): readable up to the last stable offset;
                # -1 or None where the broker gives none: the high watermark.
                lso = self.consumer.last_stable_offset(tp)
                end = lso if lso is not None and lso >= 0 else self.consumer.highwater(tp)
                if end is None:  # not fetched yet: unknown, keeps holding
                    continue
                position = await asyncio.wait_for(self.consumer.position(tp), timeout=1.0)
            except Exception as exc:  # noqa: BLE001 - unassigned meanwhile, no position yet: decide next tick
                log.debug("partition lag unknown", extra={"partition": source, "error": repr(exc)})
                continue
            if position >= end:
                empty.append(source)
        if empty:
            self.engine.release_sources(empty)
            log.info("empty partitions no longer hold the watermark", extra={"partitions": sorted(empty)})

    # -- output ------------------------------------------------------------------

    async def _write_state(self) -> None:
        assert self.outputs is not None
        states = self.engine.take_dirty()
        await self.outputs.state.write(
            [
                OutRecord(
                    Engine.dump(s),
                    s.key.encode(),
                    {"content-type": "application/json"},
                    partition=s.partition if s.kind is KeyKind.ENTITY else None,
                )
                for s in states
            ]
        )

    async def flush(self, *, evaluate: bool = True) -> None:
        """Evaluate, save, publish, save again (see the module docstring).

        ``evaluate=False``: only publish the outboxes already decided (restored ones), decide nothing new.
        """
        assert self.outputs is not None
        notes = self.engine.advance() if evaluate else []
        await self._write_state()
        pending = self.engine.pending()
        if not pending:
            return
        await self.outputs.alerts.write(
            [
                OutRecord(
                    encode(a),
                    a.key.encode(),
                    {"content-type": "application/json", "alert-id": a.alert_id, "sequence": str(a.sequence)},
                )
                for a in pending
            ]
        )
        if self.outputs.notifier is not None:
            for target in await self.outputs.notifier.push(pending):
                self.metrics.push_failures.labels(SERVICE, target).inc()
        self.engine.mark_published({a.key for a in pending})
        await self._write_state()
        self._count(pending, {id(n.alert): n.ingest_time for n in notes})

    def _count(self, published: Sequence[FinancialAlert], ingest: dict[int, float]) -> None:
        m, now = self.metrics, time.time()
        for a in published:
            m.notifications.labels(SERVICE, a.status.value).inc()
            det = a.detector.value
            if a.status is AlertStatus.RESOLVED:
                m.resolved.labels(SERVICE, det).inc()
            elif a.sequence == 1:
                m.fired.labels(SERVICE, det).inc()
                if ingest.get(id(a)):
                    m.delay.labels(SERVICE, det).observe(max(0.0, now - ingest[id(a)]))
        self.refresh_gauges()

    def refresh_gauges(self) -> None:
        """Open alerts per detector and the number of keys."""
        counts: dict[str, int] = {}
        for _state, det, _alert in self.engine.open_alerts():
            counts[det.value] = counts.get(det.value, 0) + 1
        for detector in Detector:
            self.metrics.open.labels(SERVICE, detector.value).set(counts.get(detector.value, 0))
        self.metrics.keys.labels(SERVICE).set(len(self.engine.keys))

    async def repush_open(self) -> None:
        """Re-push every open alert to Alertmanager (keeps them firing there, heals missed pushes)."""
        if self.outputs is None or self.outputs.notifier is None:
            return
        async with self.lock:
            current = [self.engine.current_view(s, d, a) for s, d, a in self.engine.open_alerts()]
        for target in await self.outputs.notifier.push(current):
            self.metrics.push_failures.labels(SERVICE, target).inc()


def _everything(_state: KeyState) -> bool:
    return True


def _apply(engine: Engine, rec: Any, select: Callable[[KeyState], bool]) -> None:
    """One changelog record: install the state, or remove the key for a tombstone (where ``select`` accepts)."""
    if rec.value is None:
        key = (rec.key or b"").decode()
        if key in engine.keys and select(engine.keys[key]):
            del engine.keys[key]
        return
    state = Engine.load(rec.value)
    if select(state):
        engine.install(state)


async def restore(
    settings: KafkaSettings,
    topic: str,
    engine: Engine,
    timeout_s: float,
    *,
    partitions: Collection[int] | None = None,
    select: Callable[[KeyState], bool] = _everything,
) -> int:
    """Replay the (committed) changelog into ``engine``; returns the number of records read.

    ``partitions``: only these changelog partitions (None: all). ``select``: only the states it
    accepts are installed (a tombstone removes its key only where ``select`` accepts the copy in
    ``engine``). ``read_committed``: changelog writes of aborted exactly-once transactions never count.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    count = 0
    try:
        async with asyncio.timeout(timeout_s):
            tps = await topic_partitions(consumer, topic)
            if not tps:
                msg = f"changelog topic {topic!r} does not exist (create it: textpulse topics create)"
                raise RuntimeError(msg)
            if partitions is not None:
                tps = [tp for tp in tps if tp.partition in partitions]
            if not tps:
                return 0
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500)
                for tp, records in batch.items():
                    for rec in records:
                        _apply(engine, rec, select)
                        count += 1
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return count
