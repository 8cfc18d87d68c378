"""The Kafka edge: ``text.in`` (raw JSON from other producers) → ``text.raw`` or ``dlq.ingest``.

A poll becomes one batch; the batch is committed only after every valid record
was written to ``text.raw`` and every invalid one to ``dlq.ingest`` (both
acknowledged). A broker failure while writing raises, so the batch is not
committed and is redelivered; the idempotency window drops the records that
had already been written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import DeadLetterReason, TextEvent
from textpulse.contracts.errors import ErrorCode, error
from textpulse.kafka import DeadLetters
from textpulse.kafka.broker import batch_records
from textpulse.kafka.writer import WriteError
from textpulse.kit import Kit

from .core import Ingestor, InvalidInput, Outcome, decode_json, now, validate_event
from .metrics import IngestMetrics
from .settings import IngestSettings

log = logging.getLogger(__name__)

SERVICE = "ingest"


@dataclass
class EdgeDeps:
    """What the text.in handler needs: yielded by the app's ``resources``, in FastStream's context as ``deps``."""

    ingestor: Ingestor
    dead_letters: DeadLetters
    metrics: IngestMetrics
    topic: str
    retry_backoff_s: float = 1.0


async def handle_records(records: Sequence[Any], deps: EdgeDeps) -> None:
    """Validate a batch of ``text.in`` records; write the valid, dead-letter the rest."""
    m, svc, topic = deps.metrics, SERVICE, deps.topic
    started = time.perf_counter()
    m.received.labels(svc, topic).inc(len(records))
    m.batch_size.labels(svc, topic).observe(len(records))
    ingest_time = now()
    events: list[TextEvent] = []
    rejected: list[tuple[Any, InvalidInput]] = []
    for rec in records:
        try:
            if rec.value is None:
                raise InvalidInput([error(ErrorCode.EMPTY_VALUE)])
            events.append(validate_event(decode_json(rec.value), ingest_time=ingest_time))
        except InvalidInput as exc:
            rejected.append((rec, exc))
    try:
        results = await deps.ingestor.ingest(events)
        for rec, invalid in rejected:
            # Reason, x-dlq-code and x-dlq-field are those the HTTP API answers for the same bytes.
            await deps.dead_letters.send(
                rec, DeadLetterReason.INVALID_RECORD, invalid.reason, invalid, errors=invalid.errors
            )
    except WriteError:
        log.exception("text.in batch not written; it will be redelivered")
        m.failed.labels(svc, topic, "write_error").inc(len(records))
        await asyncio.sleep(deps.retry_backoff_s)
        raise
    # Aggregated per batch: a labels() lookup per event was a measurable share of the edge's CPU.
    outcomes = Counter((event.channel.value, res.outcome.value) for res, event in zip(results, events, strict=True))
    for (channel, outcome), count in outcomes.items():
        m.ingest_events.labels(svc, channel, outcome).inc(count)
    if any(res.outcome is Outcome.ACCEPTED for res in results):
        # All events of a batch share one ingest time: one observation per batch.
        m.e2e_latency.labels(svc).observe(max(0.0, (now() - ingest_time).total_seconds()))
    if rejected:
        m.ingest_events.labels(svc, "unknown", "dlq").inc(len(rejected))
    m.processed.labels(svc, topic).inc(len(records))
    m.handler_duration.labels(svc, topic).observe(time.perf_counter() - started)


def subscribe(kit: Kit[IngestSettings, IngestMetrics]) -> None:
    """The text.in edge (when ``consume_text_in``) and the declared outputs, for the AsyncAPI document."""
    settings = kit.settings
    if settings.consume_text_in:

        @kit.subscriber(
            settings.topic_in,
            title="ingest.text_in",
            description="Raw JSON events from other producers, validated like the HTTP API.",
        )
        async def on_text_in(msg: KafkaMessage, deps: Annotated[EdgeDeps, Context("deps")]) -> None:
            # The dead letters' guard, not kit.run_batch: ingest has no exactly-once mode (docs/guarantees.md),
            # so its delivery setting stays unread. A record failing every try ends in the DLQ, not jamming.
            await deps.dead_letters.guard(batch_records(msg.raw_message), lambda records: handle_records(records, deps))

    # Writes go through RecordWriter; these declarations only document the outputs.
    kit.broker.publisher(
        settings.topic_out,
        title="ingest.text_raw",
        description="Validated, normalised events; key: conv:/user:/entity: or none (see README).",
        schema=TextEvent,
    )
    kit.broker.publisher(
        settings.topic_dlq,
        title="ingest.dlq",
        description="Rejected text.in records: original bytes, reason in x-dlq-* headers.",
        schema=bytes,
    )
