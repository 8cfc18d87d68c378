"""Kafka subscriber of the route service: ``text.enriched`` → ``support.routed`` + ``support.queue.<name>``.

A batch is committed only after every output record (and every dead letter)
was acknowledged. Records keep their input order per conversation: one key
always maps to one partition of each output topic.

``delivery=exactly_once``: every output, dead letter and the offsets of each input
partition commit in one Kafka transaction (:mod:`textpulse.kafka.transactions`).
At-least-once skips events whose outputs this process already wrote
(:class:`~textpulse.kafka.dedup.RecentIds`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import Context
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import reason as reason_of
from textpulse.contracts.errors import validation_errors
from textpulse.contracts.events import EnrichedEvent, utcnow
from textpulse.contracts.routing import RoutedMessage
from textpulse.kafka import DeadLetters
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.kit import Kit

from .core import conversation_key, is_routable, routed, to_record
from .metrics import RouteMetrics
from .rules import Rules
from .settings import RouteSettings

SERVICE = "route"


@dataclass
class RouteDeps:
    """Built by the app's ``resources``, in FastStream's context as ``deps``."""

    rules: Rules
    routed: RecordWriter
    queues: dict[str, RecordWriter]
    dead_letters: DeadLetters
    metrics: RouteMetrics
    topic: str
    seen: RecentIds | None = None


async def handle_records(records: Sequence[Any], deps: RouteDeps) -> None:
    """Route a batch; dead-letter unreadable records."""
    m, svc, topic = deps.metrics, SERVICE, deps.topic
    started = time.perf_counter()
    m.received.labels(svc, topic).inc(len(records))
    m.batch_size.labels(svc, topic).observe(len(records))
    out: list[OutRecord] = []
    per_queue: dict[str, list[OutRecord]] = defaultdict(list)
    messages: list[RoutedMessage] = []
    now = utcnow()
    batch_ids: set[str] = set()
    for rec in records:
        try:
            event = EnrichedEvent.model_validate_json(rec.value or b"")
        except ValidationError as exc:
            # The shared vocabulary (x-dlq-code/-field); pydantic's own text would echo the input.
            errs = validation_errors(exc)
            await deps.dead_letters.send(
                rec, DeadLetterReason.INVALID_RECORD, f"not a valid EnrichedEvent: {reason_of(errs)}", exc, errors=errs
            )
            continue
        if deps.seen is not None:
            if event.event.id in deps.seen or event.event.id in batch_ids:
                deps.seen.skipped += 1
                continue
            batch_ids.add(event.event.id)
        if not is_routable(event):
            m.skipped.labels(svc, event.event.channel.value).inc()
            continue
        decision = deps.rules.decide(event.intent, event.sentiment)
        message = routed(event, decision, deps.rules, now)
        record = to_record(message, conversation_key(event))
        out.append(record)
        per_queue[message.queue].append(record)
        messages.append(message)
    await deps.routed.write(out)
    for queue, recs in per_queue.items():
        await deps.queues[queue].write(recs)
    if deps.seen is not None:
        deps.seen.add(batch_ids)
    for message in messages:
        m.routes.labels(svc, message.queue, message.priority.value).inc()
        if message.triaged:
            reason = next((r.rule for r in message.reasons if r.rule.startswith("triage:")), "triage:unknown")
            m.triage.labels(svc, reason.removeprefix("triage:")).inc()
        m.e2e_latency.labels(svc).observe(max(0.0, (utcnow() - message.event.ingest_time).total_seconds()))
    m.processed.labels(svc, topic).inc(len(records))
    m.handler_duration.labels(svc, topic).observe(time.perf_counter() - started)


def subscribe(kit: Kit[RouteSettings, RouteMetrics], rules: Rules) -> None:
    """Subscribe ``text.enriched`` (the kit's delivery runner applies ``settings.delivery``); declare the outputs."""

    @kit.subscriber(
        kit.settings.topic_in,
        title="route.text_enriched",
        description="Enriched events; channel 'support' is routed, others skipped.",
    )
    async def on_enriched(msg: KafkaMessage, deps: Annotated[RouteDeps, Context("deps")]) -> None:
        # a record failing every try ends in the DLQ
        await kit.run_batch(msg, lambda records: handle_records(records, deps))

    declare_outputs(kit.broker, kit.settings, rules)


def declare_outputs(broker: KafkaBroker, settings: RouteSettings, rules: Rules) -> None:
    """Declare the output topics for the generated AsyncAPI document."""
    broker.publisher(
        settings.topic_out,
        title="route.support_routed",
        description="Every routed support message; key: conv:/user:/event:.",
        schema=RoutedMessage,
    )
    for queue in rules.queues:
        broker.publisher(
            f"{settings.queue_topic_prefix}{queue}",
            title=f"route.queue.{queue}",
            description=f"Messages routed to the {queue} queue.",
            schema=RoutedMessage,
        )
    broker.publisher(settings.topic_dlq, title="route.dlq", description="Unreadable input records.")
