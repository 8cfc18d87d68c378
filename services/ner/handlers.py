"""The Kafka edge of NER: ``text.classified`` → ``text.enriched`` + ``entity.mentions`` (or ``dlq.ner``).

Same batch semantics as classify: a poll is one inference batch; both output
topics (and any dead letters) are acknowledged before the handler returns,
which commits the batch; an unavailable backend pauses consumption (retries)
and eventually redelivers the batch instead of committing it.

``delivery=exactly_once``: both outputs, dead letters and the offsets of each input
partition commit in one Kafka transaction (:mod:`textpulse.kafka.transactions`).
At-least-once skips events whose outputs this process already wrote
(:class:`~textpulse.kafka.dedup.RecentIds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import ClassifiedEvent, DeadLetterReason, EnrichedEvent, EntityMention, encode
from textpulse.inference import BackendUnavailable
from textpulse.inference.consume import decode_batch, guard_counting_failures, record_headers
from textpulse.inference.metrics import InferenceMetrics
from textpulse.inference.resilience import isolate_rejects, until_available
from textpulse.kafka import DeadLetters
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.kit import Kit

from .core import Enricher, mentions
from .settings import NerSettings

log = logging.getLogger(__name__)

SERVICE = "ner"


@dataclass
class Deps:
    """What the handler needs: built by the app's ``resources``, in FastStream's context as ``deps``."""

    enricher: Enricher
    enriched_writer: RecordWriter
    mentions_writer: RecordWriter
    dead_letters: DeadLetters
    metrics: InferenceMetrics
    settings: NerSettings
    seen: RecentIds | None = None


def output_records(rec: Any, enriched: EnrichedEvent) -> tuple[OutRecord, list[OutRecord]]:
    """The text.enriched record (same key as the input) and one entity.mentions record per entity key."""
    out = OutRecord(encode(enriched), rec.key, record_headers(rec, **{"event-type": "EnrichedEvent"}))
    base = {"event-id": enriched.event.id, "event-type": "EntityMention", "schema-version": "1"}
    return out, [OutRecord(encode(m), m.entity_key.encode(), dict(base)) for m in mentions(enriched)]


async def handle_records(records: Sequence[Any], deps: Deps) -> None:
    """Enrich a batch of ``text.classified`` records; write both outputs, dead-letter poison."""
    m, s, topic = deps.metrics, deps.settings, deps.settings.topic_in
    started = time.perf_counter()
    m.received.labels(SERVICE, topic).inc(len(records))
    m.batch_size.labels(SERVICE, topic).observe(len(records))
    batch = decode_batch(records, ClassifiedEvent)
    if deps.seen is not None:
        fresh = deps.seen.fresh(event.event.id for _, event in batch.good)
        batch.good[:] = [item for item, new in zip(batch.good, fresh, strict=True) if new]
    events = [event for _, event in batch.good]

    def waiting(_exc: BackendUnavailable, _wait: float) -> None:
        m.inference_unavailable.labels(SERVICE).inc()

    results, rejected = await until_available(
        lambda: isolate_rejects(deps.enricher.enrich, events),
        max_wait_s=s.unavailable_max_wait_s,
        initial_s=s.unavailable_backoff_s,
        max_backoff_s=s.unavailable_backoff_max_s,
        on_retry=waiting,
    )
    enriched_out: list[OutRecord] = []
    mention_out: list[OutRecord] = []
    for (rec, _), result in zip(batch.good, results, strict=True):
        if result is not None:
            one, many = output_records(rec, result)
            enriched_out.append(one)
            mention_out.extend(many)
    await asyncio.gather(deps.enriched_writer.write(enriched_out), deps.mentions_writer.write(mention_out))
    if deps.seen is not None:
        deps.seen.add(event.event.id for event, result in zip(events, results, strict=True) if result is not None)
    for rec, poison in batch.poison:
        await deps.dead_letters.send(rec, DeadLetterReason.INVALID_RECORD, poison.reason, poison)
        m.failed.labels(SERVICE, topic, "poison").inc()
    for index, exc in rejected:
        await deps.dead_letters.send(
            batch.good[index][0], DeadLetterReason.MODEL_REJECTED, f"model rejected: {exc}", exc
        )
        m.failed.labels(SERVICE, topic, "model_rejected").inc()
        m.inference_rejected.labels(SERVICE, deps.enricher.model).inc()
    _observe_entities(m, deps.enricher, [r for r in results if r is not None])
    m.processed.labels(SERVICE, topic).inc(len(records))
    m.handler_duration.labels(SERVICE, topic).observe(time.perf_counter() - started)


def _observe_entities(m: InferenceMetrics, enricher: Enricher, done: Sequence[EnrichedEvent]) -> None:
    """Latency and model health of a batch: the model's spans per type with their scores, rule matches apart."""
    labels: list[str] = []
    scores: list[float] = []
    rules: dict[str, int] = {}
    for result in done:
        m.e2e_latency.labels(SERVICE).observe(
            max(0.0, (result.enriched_time - result.event.ingest_time).total_seconds())
        )
        for entity in result.entities:
            if entity.origin == "model":
                labels.append(entity.type)
                scores.append(entity.score)
            else:
                rules[entity.type] = rules.get(entity.type, 0) + 1
    if done and labels:
        ref = done[0].ner_model
        head = enricher.backend.info(enricher.model).primary_head
        m.observe_predictions(ref.name, ref.version, head, "entity_type", labels, scores)
    for entity_type, n in rules.items():
        # cashtags: found by a rule, not the model; counted apart so they never weigh in the model's drift
        m.count_prediction("entity_type", entity_type, model="rules", version="1", head="cashtag", count=n)


async def guarded(records: Sequence[Any], deps: Deps) -> None:
    """``handle_records`` behind the dead letters' retry limit; failed tries counted in ``messages_failed``."""

    def count_failed(reason: str, n: int) -> None:
        deps.metrics.failed.labels(SERVICE, deps.settings.topic_in, reason).inc(n)

    await guard_counting_failures(
        deps.dead_letters.guard, records, lambda recs: handle_records(recs, deps), count_failed
    )


def subscribe(kit: Kit[NerSettings, InferenceMetrics]) -> None:
    """Subscribe on ``text.classified`` (the kit's delivery runner applies ``settings.delivery``)."""
    settings = kit.settings

    @kit.subscriber(
        settings.topic_in,
        title="ner.text_classified",
        description="Classified events; one poll is one inference batch.",
    )
    async def on_text_classified(msg: KafkaMessage, deps: Annotated[Deps, Context("deps")]) -> None:
        # guarded, not kit.run_batch: a batch that still fails counts its records in messages_failed
        await kit.runner.process(msg, lambda records: guarded(records, deps))

    kit.broker.publisher(
        settings.topic_out,
        title="ner.text_enriched",
        description="Fully enriched events; key: same as text.raw.",
        schema=EnrichedEvent,
    )
    kit.broker.publisher(
        settings.topic_mentions,
        title="ner.entity_mentions",
        description="One record per entity per event; key: normalised entity key.",
        schema=EntityMention,
    )
    kit.broker.publisher(
        settings.topic_dlq, title="ner.dlq", description="Poison records: original bytes, reason in x-dlq-*."
    )
