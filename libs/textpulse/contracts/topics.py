"""Topic names, partition counts, keys and value contracts — declared once.

``deploy/kafka/create-topics.sh`` and ``textpulse topics create`` create
exactly this list; services read their topic names from settings whose defaults
come from here, so tests can run on topics of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from .alerts import FinancialAlert
from .events import ClassifiedEvent, EnrichedEvent, EntityMention, TextEvent, TextEventIn
from .recs import Interaction, Item, Recommendations, UserProfileState
from .routing import RoutedMessage
from .services import SERVICES

#: Partitions of the main streams: bounds consumer parallelism per service.
STREAM_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic of the platform."""

    name: str
    partitions: int
    key: str
    description: str
    value: type[BaseModel] | None = None
    compacted: bool = False
    configs: dict[str, str] = field(default_factory=dict)

    def topic_configs(self) -> dict[str, str]:
        """Broker-side topic configuration."""
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        configs.update(self.configs)
        return configs


TEXT_IN = TopicSpec(
    "text.in",
    STREAM_PARTITIONS,
    key="any (ignored)",
    description="Raw JSON events from external producers; validated by ingest.",
    value=TextEventIn,
)
TEXT_RAW = TopicSpec(
    "text.raw",
    STREAM_PARTITIONS,
    key="conversation_id, else user_id, else entity_key, else none (see ingest README)",
    description="Validated, normalised events.",
    value=TextEvent,
)
TEXT_CLASSIFIED = TopicSpec(
    "text.classified",
    STREAM_PARTITIONS,
    key="same key as text.raw",
    description="Events with sentiment / topic / intent.",
    value=ClassifiedEvent,
)
TEXT_ENRICHED = TopicSpec(
    "text.enriched",
    STREAM_PARTITIONS,
    key="same key as text.raw",
    description="Fully enriched events (labels and entities).",
    value=EnrichedEvent,
)
ENTITY_MENTIONS = TopicSpec(
    "entity.mentions",
    STREAM_PARTITIONS,
    key="normalised entity key",
    description="One record per entity mention; partitions the alert state by entity.",
    value=EntityMention,
)
ALERTS_FINANCIAL = TopicSpec(
    "alerts.financial",
    3,
    key="alert key (entity or topic + detector)",
    description="Financial sentiment alerts (firing, re-notified, resolved).",
    value=FinancialAlert,
)
ALERTS_STATE = TopicSpec(
    "alerts.state",
    STREAM_PARTITIONS,
    key="alert state key",
    description="Changelog of the alert service's window and alert state (compacted).",
    compacted=True,
)
SUPPORT_ROUTED = TopicSpec(
    "support.routed",
    STREAM_PARTITIONS,
    key="conversation id",
    description="Routed support messages.",
    value=RoutedMessage,
)
#: The support queues, each with its topic ``support.queue.<name>``; route refuses rules naming any other.
SUPPORT_QUEUES = ("cards", "payments", "transfers", "fraud-and-security", "account", "general", "human-triage")


def support_queue(name: str) -> TopicSpec:
    """Per-queue topic for consumers that serve one queue."""
    return TopicSpec(
        f"support.queue.{name}",
        STREAM_PARTITIONS,
        key="conversation id",
        description=f"Support messages routed to the {name} queue.",
        value=RoutedMessage,
    )


ITEMS = TopicSpec("items", 3, key="item id", description="Item catalogue (compacted).", value=Item, compacted=True)
USER_INTERACTIONS = TopicSpec(
    "user.interactions", STREAM_PARTITIONS, key="user id", description="User-item interactions.", value=Interaction
)
RECS_SCORES = TopicSpec("recs.scores", 3, key="user id", description="Recommendations per user.", value=Recommendations)
RECS_PROFILES = TopicSpec(
    "recs.profiles",
    STREAM_PARTITIONS,
    key="user id",
    description="Changelog of the recommend service's user profiles (compacted).",
    value=UserProfileState,
    compacted=True,
)


def dlq(service: str) -> TopicSpec:
    """Dead-letter topic of a service: original bytes plus reason headers."""
    return TopicSpec(
        f"dlq.{service}",
        1,
        key="original key",
        description=f"Records {service} could not process, with the reason in headers.",
        configs={"retention.ms": str(14 * 24 * 3600 * 1000)},
    )


ALL_TOPICS: tuple[TopicSpec, ...] = (
    TEXT_IN,
    TEXT_RAW,
    TEXT_CLASSIFIED,
    TEXT_ENRICHED,
    ENTITY_MENTIONS,
    ALERTS_FINANCIAL,
    ALERTS_STATE,
    SUPPORT_ROUTED,
    *(support_queue(q) for q in SUPPORT_QUEUES),
    ITEMS,
    USER_INTERACTIONS,
    RECS_SCORES,
    RECS_PROFILES,
    *(dlq(s) for s in SERVICES),
)


def by_name(name: str) -> TopicSpec:
    """Look a declared topic up by name."""
    for spec in ALL_TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(name)
