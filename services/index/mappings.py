"""Index families, their templates (explicit mappings) and monthly index names.

The local Elasticsearch has no ILM and no data-stream management API (see
deploy/elasticsearch/README.md), so each family is a series of monthly indices
``<prefix>-<family>-YYYY.MM`` created on first write from a composable index
template that also attaches the search alias ``<prefix>-<family>``. Retention
is done by :mod:`.retention`, which deletes whole monthly indices.

A document lands in the month of its own time (event time for events), never
of the indexing time, so a replay rewrites the same ``(index, _id)`` and never
duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .settings import IndexSettings

#: A keyword sub-field on text; longer values are not indexed as keywords.
_TEXT = {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 1024}}}
_LABEL = {"properties": {"label": {"type": "keyword"}, "score": {"type": "float"}}}

EVENTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "event_id": {"type": "keyword"},
        "source": {"type": "keyword"},
        "channel": {"type": "keyword"},
        "language": {"type": "keyword"},
        "text": _TEXT,
        "entity_key": {"type": "keyword"},
        "conversation_id": {"type": "keyword"},
        "user_id": {"type": "keyword"},
        # Producers' free metadata: typed by the first value seen per index; a later value of
        # another type is a mapping rejection (→ dlq.index), never a silent coercion.
        "metadata": {"type": "object", "dynamic": True},
        "entities": {
            "type": "nested",
            "properties": {
                "surface": {"type": "keyword", "ignore_above": 256},
                "type": {"type": "keyword"},
                "key": {"type": "keyword"},
                "start": {"type": "integer"},
                "end": {"type": "integer"},
                "score": {"type": "float"},
                "origin": {"type": "keyword"},
            },
        },
        "entity_keys": {"type": "keyword"},
        "sentiment": _LABEL,
        "topic": _LABEL,
        "intent": {**_LABEL, "properties": {**_LABEL["properties"], "out_of_scope": {"type": "boolean"}}},
        "models": {"type": "keyword"},
        "event_time": {"type": "date"},
        "ingest_time": {"type": "date"},
        "enriched_time": {"type": "date"},
        "indexed_time": {"type": "date"},
        "pii_redacted": {"type": "boolean"},
    },
}

ROUTES_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "doc_id": {"type": "keyword"},
        "event_id": {"type": "keyword"},
        "conversation_id": {"type": "keyword"},
        "queue": {"type": "keyword"},
        "priority": {"type": "keyword"},
        "urgent": {"type": "boolean"},
        "triaged": {"type": "boolean"},
        "intent": {"type": "keyword"},
        "intent_score": {"type": "float"},
        "sentiment": {"type": "keyword"},
        "sentiment_score": {"type": "float"},
        "rules": {"type": "keyword"},
        "rules_version": {"type": "keyword"},
        "time": {"type": "date"},
        "indexed_time": {"type": "date"},
        "record": {"type": "object", "enabled": False},
    },
}

ALERTS_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "doc_id": {"type": "keyword"},
        "alert_id": {"type": "keyword"},
        "key": {"type": "keyword"},
        "key_kind": {"type": "keyword"},
        "subject": {"type": "keyword"},
        "detector": {"type": "keyword"},
        "status": {"type": "keyword"},
        "severity": {"type": "keyword"},
        "sequence": {"type": "integer"},
        "summary": _TEXT,
        "score": {"type": "float"},
        "threshold": {"type": "float"},
        "negative_share": {"type": "float"},
        "mentions": {"type": "integer"},
        "started_at": {"type": "date"},
        "resolved_at": {"type": "date"},
        "notified_time": {"type": "date"},
        "time": {"type": "date"},
        "indexed_time": {"type": "date"},
        "record": {"type": "object", "enabled": False},
    },
}


@dataclass(frozen=True)
class Family:
    """One kind of document: its mapping and how its indices are named."""

    name: str
    mapping: dict[str, Any]

    def template_name(self, prefix: str) -> str:
        return f"{prefix}-{self.name}"

    def alias(self, prefix: str) -> str:
        """Search across all months of the family."""
        return f"{prefix}-{self.name}"

    def pattern(self, prefix: str) -> str:
        return f"{prefix}-{self.name}-*"

    def index_for(self, prefix: str, when: datetime) -> str:
        """The monthly index holding a document whose time is ``when`` (UTC month)."""
        return f"{prefix}-{self.name}-{when.year:04d}.{when.month:02d}"


EVENTS = Family("events", EVENTS_MAPPING)
ROUTES = Family("routes", ROUTES_MAPPING)
ALERTS = Family("alerts", ALERTS_MAPPING)
FAMILIES = (EVENTS, ROUTES, ALERTS)


def template_body(family: Family, settings: IndexSettings) -> dict[str, Any]:
    """Composable index template: settings, the explicit mapping and the search alias."""
    return {
        "index_patterns": [family.pattern(settings.index_prefix)],
        "priority": 200,
        "template": {
            "settings": {
                "number_of_shards": settings.shards,
                "number_of_replicas": settings.replicas,
                "refresh_interval": settings.refresh_interval,
            },
            "mappings": family.mapping,
            "aliases": {family.alias(settings.index_prefix): {}},
        },
        "_meta": {"owner": "textpulse-index", "family": family.name},
    }
