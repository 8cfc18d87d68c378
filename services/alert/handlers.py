"""Kafka subscribers of the alert service: thin, the protocol is in :mod:`processor`.

Both topics are consumed in batches by one consumer group; a batch is
committed only after the handler returned, i.e. after its state, alerts and
dead letters were acknowledged by the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.alerts import FinancialAlert
from textpulse.kafka import consumer_options
from textpulse.kafka.broker import raw_decoder

from .processor import Processor
from .settings import AlertSettings

SERVICE = "alert"


def _records(raw: Any) -> Sequence[Any]:
    return tuple(raw) if isinstance(raw, list | tuple) else (raw,)


def register(broker: KafkaBroker, settings: AlertSettings, processor: Processor) -> None:
    """Subscribe ``entity.mentions`` (and ``text.enriched``) on ``broker``."""
    topics = [settings.topic_mentions]
    if settings.consume_enriched:
        topics.append(settings.topic_enriched)

    @broker.subscriber(
        *topics,
        batch=True,
        max_records=settings.kafka_batch_records,
        batch_timeout_ms=settings.kafka_batch_timeout_ms,
        decoder=raw_decoder,
        title="alert.inputs",
        description="Entity mentions (entity windows) and enriched events (topic windows, evidence texts).",
        **consumer_options(settings.kafka, group_id=settings.group_id or f"textpulse-{SERVICE}"),
    )
    async def on_records(msg: KafkaMessage) -> None:
        await processor.handle(_records(msg.raw_message))


def declare_outputs(broker: KafkaBroker, settings: AlertSettings) -> None:
    """Declare the output topics for the generated AsyncAPI document (writes go through RecordWriter)."""
    broker.publisher(
        settings.topic_out,
        title="alert.alerts_financial",
        description="One record per notification (firing, re-notified, resolved); key: alert key.",
        schema=FinancialAlert,
    )
    broker.publisher(
        settings.topic_state, title="alert.state", description="Compacted changelog of the per-key alert state."
    )
    broker.publisher(settings.topic_dlq, title="alert.dlq", description="Unreadable input records.")
