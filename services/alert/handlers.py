"""Kafka subscribers of the alert service: thin, the protocol is in :mod:`processor`.

Both topics are consumed in batches by one consumer group; a batch is
committed only after the handler returned, i.e. after its state, alerts and
dead letters were acknowledged by the broker. The rebalance listener
(:class:`~.partitions.PartitionState`) moves the entity state with the
partitions of ``entity.mentions``. ``delivery=exactly_once``: each
input partition's share of a poll is one Kafka transaction holding the state
changelog, the alerts, the dead letters and the offsets
(:mod:`textpulse.kafka.transactions`); an abort rebuilds the engine from the
committed changelog.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRebalanceListener
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.alerts import FinancialAlert
from textpulse.kafka.broker import batch_subscriber
from textpulse.kafka.transactions import AtLeastOnce, BatchRunner

from .engine import KeyState
from .processor import Processor
from .settings import AlertSettings

SERVICE = "alert"


def register(
    broker: KafkaBroker,
    settings: AlertSettings,
    processor: Processor,
    runner: BatchRunner | None = None,
    listener: ConsumerRebalanceListener | None = None,
) -> None:
    """Subscribe ``entity.mentions`` (and ``text.enriched``) on ``broker``; ``runner`` applies ``settings.delivery``.

    ``listener`` hears the group's revocations and assignments (None for in-memory brokers).
    """
    run = runner or AtLeastOnce()
    topics = [settings.topic_mentions]
    if settings.consume_enriched:
        topics.append(settings.topic_enriched)

    @batch_subscriber(
        broker,
        *topics,
        settings=settings,
        service=SERVICE,
        title="alert.inputs",
        description="Entity mentions (entity windows) and enriched events (topic windows, evidence texts).",
        listener=listener,
    )
    async def on_records(msg: KafkaMessage) -> None:
        # The timer evaluation asks it which assigned partitions are empty (processor.tick).
        processor.consumer = getattr(msg, "consumer", None)
        await run.process(msg, guarded)

    async def guarded(records: Sequence[Any]) -> None:
        # A record that keeps failing is dead-lettered after dlq_max_attempts tries instead of jamming its partition.
        assert processor.outputs is not None, "outputs are set in the lifespan"
        await processor.outputs.dead_letters.guard(records, processor.handle)


def declare_outputs(broker: KafkaBroker, settings: AlertSettings) -> None:
    """Declare the output topics for the generated AsyncAPI document (writes go through RecordWriter)."""
    broker.publisher(
        settings.topic_out,
        title="alert.alerts_financial",
        description="One record per notification (firing, re-notified, resolved); key: alert key.",
        schema=FinancialAlert,
    )
    broker.publisher(
        settings.topic_state,
        title="alert.state",
        description="Compacted changelog of the per-key alert state (private to alert; versioned by its 'v').",
        schema=KeyState,
    )
    broker.publisher(settings.topic_dlq, title="alert.dlq", description="Unreadable input records.")
