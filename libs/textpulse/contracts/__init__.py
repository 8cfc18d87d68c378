"""Event contracts and topic declarations shared by every service."""

from .events import (
    MAX_TEXT_CHARS,
    SCHEMA_VERSION,
    Channel,
    Classification,
    ClassifiedEvent,
    EnrichedEvent,
    Entity,
    EntityMention,
    IntentResult,
    ModelRef,
    TextEvent,
    TextEventIn,
    encode,
    normalise_text,
    utcnow,
)
from .topics import ALL_TOPICS, TopicSpec, by_name, dlq

__all__ = [
    "ALL_TOPICS",
    "MAX_TEXT_CHARS",
    "SCHEMA_VERSION",
    "Channel",
    "Classification",
    "ClassifiedEvent",
    "EnrichedEvent",
    "Entity",
    "EntityMention",
    "IntentResult",
    "ModelRef",
    "TextEvent",
    "TextEventIn",
    "TopicSpec",
    "by_name",
    "dlq",
    "encode",
    "normalise_text",
    "utcnow",
]
