"""The Kafka edge of classify: ``text.raw`` → ``text.classified`` (or ``dlq.classify``).

One poll is one batch and one inference batch per model. The batch is
committed only after every output record and every dead letter was
acknowledged (``AckPolicy.NACK_ON_ERROR``: the handler returning is the
commit). While the backend is unavailable the handler waits and retries
(consumption is paused, nothing is committed); after
``unavailable_max_wait_s`` it raises so the batch is redelivered. At most one
batch is in flight per consumer.

``delivery=exactly_once`` runs each input partition's share of a poll in a Kafka
transaction (outputs, dead letters and offsets commit together,
:mod:`textpulse.kafka.transactions`). At-least-once skips events whose outputs
this process already wrote (:class:`~textpulse.kafka.dedup.RecentIds`), so a
redelivered batch does not write them twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import ClassifiedEvent, DeadLetterReason, TextEvent, encode
from textpulse.inference import BackendUnavailable
from textpulse.inference.consume import decode_batch, guard_counting_failures, record_headers
from textpulse.inference.metrics import InferenceMetrics
from textpulse.inference.resilience import isolate_rejects, until_available
from textpulse.kafka import DeadLetters
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.kit import Kit

from .core import Classifier
from .settings import ClassifySettings

log = logging.getLogger(__name__)

SERVICE = "classify"


@dataclass
class Deps:
    """What the handler needs; built in the lifespan, replaceable in tests."""

    classifier: Classifier
    writer: RecordWriter
    dead_letters: DeadLetters
    metrics: InferenceMetrics
    settings: ClassifySettings
    seen: RecentIds | None = None


async def handle_records(records: Sequence[Any], deps: Deps) -> None:
    """Classify a batch of ``text.raw`` records; write results, dead-letter poison."""
    m, s, topic = deps.metrics, deps.settings, deps.settings.topic_in
    started = time.perf_counter()
    m.received.labels(SERVICE, topic).inc(len(records))
    m.batch_size.labels(SERVICE, topic).observe(len(records))
    batch = decode_batch(records, TextEvent)
    if deps.seen is not None:
        fresh = deps.seen.fresh(event.id for _, event in batch.good)
        batch.good[:] = [item for item, new in zip(batch.good, fresh, strict=True) if new]
    events = [event for _, event in batch.good]

    def waiting(_exc: BackendUnavailable, _wait: float) -> None:
        m.inference_unavailable.labels(SERVICE).inc()

    results, rejected = await until_available(
        lambda: isolate_rejects(deps.classifier.classify, events),
        max_wait_s=s.unavailable_max_wait_s,
        initial_s=s.unavailable_backoff_s,
        max_backoff_s=s.unavailable_backoff_max_s,
        on_retry=waiting,
    )
    out: list[OutRecord] = []
    for (rec, _), result in zip(batch.good, results, strict=True):
        if result is not None:
            out.append(OutRecord(encode(result), rec.key, record_headers(rec, **{"event-type": "ClassifiedEvent"})))
    await deps.writer.write(out)
    if deps.seen is not None:
        deps.seen.add(event.id for event, result in zip(events, results, strict=True) if result is not None)
    for rec, poison in batch.poison:
        await deps.dead_letters.send(rec, DeadLetterReason.INVALID_RECORD, poison.reason, poison)
        m.failed.labels(SERVICE, topic, "poison").inc()
    for index, exc in rejected:
        await deps.dead_letters.send(
            batch.good[index][0], DeadLetterReason.MODEL_REJECTED, f"model rejected: {exc}", exc
        )
        m.failed.labels(SERVICE, topic, "model_rejected").inc()
        m.inference_rejected.labels(SERVICE, "classify").inc()
    _observe(m, results, started, topic, len(records), deps.classifier)


def _observe(
    m: InferenceMetrics,
    results: Sequence[ClassifiedEvent | None],
    started: float,
    topic: str,
    count: int,
    classifier: Classifier,
) -> None:
    done = [r for r in results if r is not None]
    # (task, model, version) -> labels and confidences of the batch: one health update per head
    groups: dict[tuple[str, str, str], tuple[list[str], list[float]]] = {}
    for result in done:
        m.e2e_latency.labels(SERVICE).observe(
            max(0.0, (result.classified_time - result.event.ingest_time).total_seconds())
        )
        for task, prediction in (("sentiment", result.sentiment), ("topic", result.topic), ("intent", result.intent)):
            if prediction is not None:
                key = (task, prediction.model.name, prediction.model.version)
                labels, scores = groups.setdefault(key, ([], []))
                labels.append(prediction.label)
                scores.append(prediction.score)
    if groups:
        heads = classifier.head_names()
        for (task, model, version), (labels, scores) in groups.items():
            m.observe_predictions(model, version, heads.get((task, model), task), task, labels, scores)
    m.processed.labels(SERVICE, topic).inc(count)
    m.handler_duration.labels(SERVICE, topic).observe(time.perf_counter() - started)


async def guarded(records: Sequence[Any], deps: Deps) -> None:
    """``handle_records`` behind the dead letters' retry limit; failed tries counted in ``messages_failed``."""

    def count_failed(reason: str, n: int) -> None:
        deps.metrics.failed.labels(SERVICE, deps.settings.topic_in, reason).inc(n)

    await guard_counting_failures(
        deps.dead_letters.guard, records, lambda recs: handle_records(recs, deps), count_failed
    )


def subscribe(kit: Kit[ClassifySettings, InferenceMetrics]) -> None:
    """Subscribe on ``text.raw`` (the kit's delivery runner applies ``settings.delivery``)."""
    settings = kit.settings

    @kit.subscriber(
        settings.topic_in, title="classify.text_raw", description="Validated events; one poll is one inference batch."
    )
    async def on_text_raw(msg: KafkaMessage, deps: Annotated[Deps, Context("deps")]) -> None:
        await kit.runner.process(msg, lambda records: guarded(records, deps))

    kit.broker.publisher(
        settings.topic_out,
        title="classify.text_classified",
        description="Events with sentiment / topic / intent; key: same as text.raw.",
        schema=ClassifiedEvent,
    )
    kit.broker.publisher(
        settings.topic_dlq, title="classify.dlq", description="Poison records: original bytes, reason in x-dlq-*."
    )
