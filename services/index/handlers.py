"""The Kafka edge: one batch subscriber per indexed topic, all sharing one :class:`Indexer` (the kit's ``deps``).

Each subscriber is a thin adapter (topic → index family); a poll is one batch,
committed only when :meth:`Indexer.handle` returned (``AckPolicy.NACK_ON_ERROR``).
Values reach the handler as bytes (``raw_decoder``) so malformed JSON is
dead-lettered instead of failing inside FastStream.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.services import consumer_group
from textpulse.kafka.broker import batch_records
from textpulse.kit import Kit

from .indexer import SERVICE, Indexer
from .mappings import ALERTS, EVENTS, ROUTES
from .settings import IndexSettings


def topics(settings: IndexSettings) -> dict[str, str]:
    """Consumed topic → index family."""
    out = {settings.topic_enriched: EVENTS.name}
    if settings.consume_routed:
        out[settings.topic_routed] = ROUTES.name
    if settings.consume_alerts:
        out[settings.topic_alerts] = ALERTS.name
    return out


def group_for(settings: IndexSettings, family: str) -> str:
    """Consumer group of a family: one group each, so an outage of one family never rebalances another.

    The events family's is the kit's own group (``textpulse-index``), whose lag the kit measures.
    """
    return consumer_group(SERVICE, settings.group_id, "" if family == EVENTS.name else f"-{family}")


def _handler(family: str) -> Any:
    async def on_batch(msg: KafkaMessage, deps: Annotated[Indexer, Context("deps")]) -> None:
        # Not kit.run_batch: index only writes Elasticsearch (idempotent by document id) and the DLQ, so it
        # stays at-least-once whatever ``delivery`` says. A record failing every try is dead-lettered
        # (dlq_max_attempts); Elasticsearch outages are not counted.
        await deps.dead_letters.guard(batch_records(msg.raw_message), lambda records: deps.handle(records, family))

    on_batch.__name__ = f"on_{family}"
    return on_batch


def subscribe(kit: Kit[IndexSettings, Any]) -> None:
    """Subscribe every indexed topic, each family in its own consumer group."""
    settings = kit.settings
    for topic, family in topics(settings).items():
        kit.subscriber(
            topic,
            group_id=group_for(settings, family),
            title=f"index.{family}",
            description=f"{topic} → Elasticsearch '{family}' indices (id = record id; rejects → {settings.topic_dlq}).",
        )(_handler(family))
    kit.broker.publisher(
        settings.topic_dlq,
        title="index.dlq",
        description="Records that are not valid or that Elasticsearch rejected: original bytes, reason in x-dlq-*.",
    )
