"""The Kafka edge: one batch subscriber per indexed topic, all sharing one :class:`Indexer`.

Each subscriber is a thin adapter (topic → index family); a poll is one batch,
committed only when :meth:`Indexer.handle` returned (``AckPolicy.NACK_ON_ERROR``).
Values reach the handler as bytes (``raw_decoder``) so malformed JSON is
dead-lettered instead of failing inside FastStream.
"""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.services import consumer_group
from textpulse.kafka.broker import batch_records, batch_subscriber

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
    """Consumer group of a family: one group each, so an outage of one family never rebalances another."""
    return consumer_group(SERVICE, settings.group_id, "" if family == EVENTS.name else f"-{family}")


def _handler(family: str, deps_ref: dict[str, Indexer]) -> Any:
    async def on_batch(msg: KafkaMessage) -> None:
        indexer = deps_ref["indexer"]
        # A record failing every try is dead-lettered (dlq_max_attempts); Elasticsearch outages are not counted.
        await indexer.dead_letters.guard(
            batch_records(msg.raw_message), lambda records: indexer.handle(records, family)
        )

    on_batch.__name__ = f"on_{family}"
    return on_batch


def register(broker: KafkaBroker, settings: IndexSettings, deps_ref: dict[str, Indexer]) -> None:
    """Subscribe every indexed topic on ``broker``; ``deps_ref['indexer']`` is filled in the lifespan."""
    for topic, family in topics(settings).items():
        batch_subscriber(
            broker,
            topic,
            settings=settings,
            service=SERVICE,
            group_id=group_for(settings, family),
            title=f"index.{family}",
            description=f"{topic} → Elasticsearch '{family}' indices (id = record id; rejects → {settings.topic_dlq}).",
        )(_handler(family, deps_ref))
    broker.publisher(
        settings.topic_dlq,
        title="index.dlq",
        description="Records that are not valid or that Elasticsearch rejected: original bytes, reason in x-dlq-*.",
    )
