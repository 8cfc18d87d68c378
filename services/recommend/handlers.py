"""Kafka subscriber of the recommend service: thin, the protocol is in :mod:`core`.

``items`` and ``user.interactions`` are consumed in batches by one consumer
group; a batch is committed only after the handler returned, i.e. after the
changed profiles, the new recommendations and any dead letters were
acknowledged by the broker.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.recs import Recommendations, UserProfileState
from textpulse.kafka.broker import batch_records, batch_subscriber

from .core import SERVICE, Processor
from .settings import RecommendSettings


def register(broker: KafkaBroker, settings: RecommendSettings, ref: dict[str, Processor]) -> None:
    """Subscribe both input topics; ``ref['processor']`` is set in the app's lifespan before consuming starts."""

    @batch_subscriber(
        broker,
        settings.topic_items,
        settings.topic_interactions,
        settings=settings,
        service=SERVICE,
        title="recommend.inputs",
        description=(
            "Catalogue items (compacted, key: item id; Item) and user interactions (key: user id; Interaction)."
        ),
    )
    async def on_records(msg: KafkaMessage) -> None:
        processor = ref["processor"]
        # A record that keeps failing is dead-lettered after dlq_max_attempts tries instead of jamming its partition.
        await processor.outputs.dead_letters.guard(batch_records(msg.raw_message), processor.handle)


def declare_outputs(broker: KafkaBroker, settings: RecommendSettings) -> None:
    """Declare the output topics for the generated AsyncAPI document (writes go through RecordWriter)."""
    broker.publisher(
        settings.topic_out,
        title="recommend.recs_scores",
        description="Top-k items for a user whenever their profile changes; key: user id.",
        schema=Recommendations,
    )
    broker.publisher(
        settings.topic_profiles,
        title="recommend.profiles",
        description="Compacted changelog of user profiles (recent positives, seen items); key: user id.",
        schema=UserProfileState,
    )
    broker.publisher(settings.topic_dlq, title="recommend.dlq", description="Unreadable input records.")
