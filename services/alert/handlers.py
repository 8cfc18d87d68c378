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

from typing import Annotated, Any

from aiokafka import ConsumerRebalanceListener
from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.alerts import FinancialAlert
from textpulse.kit import Kit

from .engine import KeyState
from .processor import Processor
from .settings import AlertSettings

SERVICE = "alert"


def topics(settings: AlertSettings) -> list[str]:
    """The input topics (``text.enriched`` unless ``consume_enriched`` is off); their lag is measured."""
    return [settings.topic_mentions] + ([settings.topic_enriched] if settings.consume_enriched else [])


def subscribe(kit: Kit[AlertSettings, Any], listener: ConsumerRebalanceListener | None) -> None:
    """Subscribe the input topics and declare the outputs; ``listener`` hears the group's rebalances
    (None for in-memory brokers). The processor comes from FastStream's context (the app's ``resources``).
    """
    s = kit.settings

    @kit.subscriber(
        *topics(s),
        title="alert.inputs",
        description="Entity mentions (entity windows) and enriched events (topic windows, evidence texts).",
        listener=listener,
    )
    async def on_records(msg: KafkaMessage, processor: Annotated[Processor, Context("deps")]) -> None:
        # The timer evaluation asks it which assigned partitions are empty (processor.tick).
        processor.consumer = getattr(msg, "consumer", None)
        # A record that keeps failing is dead-lettered after dlq_max_attempts tries instead of jamming its partition.
        await kit.run_batch(msg, processor.handle)

    # Declared for the generated AsyncAPI document (writes go through RecordWriter).
    kit.broker.publisher(
        s.topic_out,
        title="alert.alerts_financial",
        description="One record per notification (firing, re-notified, resolved); key: alert key.",
        schema=FinancialAlert,
    )
    kit.broker.publisher(
        s.topic_state,
        title="alert.state",
        description="Compacted changelog of the per-key alert state (private to alert; versioned by its 'v').",
        schema=KeyState,
    )
    kit.broker.publisher(s.topic_dlq, title="alert.dlq", description="Unreadable input records.")
