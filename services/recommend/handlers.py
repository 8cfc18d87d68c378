"""Kafka subscriber of the recommend service: thin, the protocol is in :mod:`core`.

``items`` and ``user.interactions`` are consumed in batches by one consumer
group; a batch is committed only after the handler returned, i.e. after the
changed profiles, the new recommendations and any dead letters were
acknowledged by the broker.
"""

from __future__ import annotations

from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.recs import Recommendations, UserProfileState
from textpulse.kit import Kit

from .core import Processor
from .settings import RecommendSettings


def subscribe(kit: Kit[RecommendSettings, Any]) -> None:
    """Both input topics in the kit's group; the output topics are declared for the AsyncAPI document."""
    settings = kit.settings

    @kit.subscriber(
        settings.topic_items,
        settings.topic_interactions,
        title="recommend.inputs",
        description=(
            "Catalogue items (compacted, key: item id; Item) and user interactions (key: user id; Interaction)."
        ),
    )
    async def on_records(msg: KafkaMessage, deps: Annotated[Processor, Context("deps")]) -> None:
        # at-least-once (create_app refuses exactly_once); a record that keeps failing is dead-lettered after
        # dlq_max_attempts tries instead of jamming its partition.
        await kit.run_batch(msg, deps.handle)

    # Writes go through RecordWriter (kit.writer); these declarations only describe them.
    kit.broker.publisher(
        settings.topic_out,
        title="recommend.recs_scores",
        description="Top-k items for a user whenever their profile changes; key: user id.",
        schema=Recommendations,
    )
    kit.broker.publisher(
        settings.topic_profiles,
        title="recommend.profiles",
        description="Compacted changelog of user profiles (recent positives, seen items); key: user id.",
        schema=UserProfileState,
    )
    kit.broker.publisher(settings.topic_dlq, title="recommend.dlq", description="Unreadable input records.")
