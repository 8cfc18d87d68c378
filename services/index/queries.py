"""Elasticsearch query bodies of the search API (pure functions, unit-tested).

Entity filters use ``nested`` queries on ``entities`` so that key and type must
match on the *same* entity; label filters are ``term`` queries on the keyword
label fields; time ranges are on ``event_time`` (when the text was written).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Interval(StrEnum):
    """Bucket width of the sentiment-over-time aggregation (calendar intervals, UTC)."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class SearchFilters:
    """Filters shared by the endpoints; ``None`` means "any"."""

    entity: str | None = None
    entity_type: str | None = None
    sentiment: str | None = None
    topic: str | None = None
    intent: str | None = None
    channel: str | None = None
    source: str | None = None
    time_from: datetime | None = None
    time_to: datetime | None = None


def _entity_filter(key: str | None, etype: str | None) -> dict[str, Any] | None:
    terms = [{"term": {f"entities.{f}": v}} for f, v in (("key", key), ("type", etype)) if v]
    if not terms:
        return None
    return {"nested": {"path": "entities", "query": {"bool": {"filter": terms}}}}


def filter_clauses(f: SearchFilters) -> list[dict[str, Any]]:
    """The ``bool.filter`` clauses of ``f``."""
    out: list[dict[str, Any]] = []
    ent = _entity_filter(f.entity, f.entity_type)
    if ent:
        out.append(ent)
    for field, value in (
        ("sentiment.label", f.sentiment),
        ("topic.label", f.topic),
        ("intent.label", f.intent),
        ("channel", f.channel),
        ("source", f.source),
    ):
        if value is not None:
            out.append({"term": {field: value}})
    if f.time_from or f.time_to:
        rng: dict[str, str] = {}
        if f.time_from:
            rng["gte"] = f.time_from.isoformat()
        if f.time_to:
            rng["lt"] = f.time_to.isoformat()
        out.append({"range": {"event_time": rng}})
    return out


def search_body(q: str | None, f: SearchFilters, *, page: int, size: int) -> dict[str, Any]:
    """Full-text + filters, newest first when there is no text, highlighted."""
    must: list[dict[str, Any]] = [{"match": {"text": {"query": q, "operator": "and"}}}] if q else []
    body: dict[str, Any] = {
        "query": {"bool": {"must": must or [{"match_all": {}}], "filter": filter_clauses(f)}},
        "from": (page - 1) * size,
        "size": size,
        "track_total_hits": True,
        "sort": ["_score", {"event_time": "desc"}] if q else [{"event_time": "desc"}, {"event_id": "asc"}],
    }
    if q:
        body["highlight"] = {"fields": {"text": {"number_of_fragments": 3, "fragment_size": 150}}}
    return body


def sentiment_over_time_body(key: str, f: SearchFilters, interval: Interval) -> dict[str, Any]:
    """Documents mentioning entity ``key`` per interval, with counts per sentiment label."""
    histogram: dict[str, Any] = {"field": "event_time", "calendar_interval": interval.value, "min_doc_count": 1}
    if f.time_from and f.time_to:
        histogram["min_doc_count"] = 0
        histogram["extended_bounds"] = {"min": f.time_from.isoformat(), "max": f.time_to.isoformat()}
    filters = filter_clauses(SearchFilters(**{**f.__dict__, "entity": key}))
    return {
        "size": 0,
        "track_total_hits": True,
        "query": {"bool": {"filter": filters}},
        "aggs": {
            "over_time": {
                "date_histogram": histogram,
                "aggs": {
                    "sentiment": {"terms": {"field": "sentiment.label", "size": 20}},
                    "avg_score": {"avg": {"field": "sentiment.score"}},
                },
            }
        },
    }


def similar_body(text: str, *, size: int, channel: str = "support") -> dict[str, Any]:
    """``more_like_this`` on the text of past messages of ``channel`` (BM25 over the salient terms)."""
    return {
        "size": size,
        "query": {
            "bool": {
                "must": [
                    {
                        "more_like_this": {
                            "fields": ["text"],
                            "like": text,
                            "min_term_freq": 1,
                            "min_doc_freq": 1,
                            "max_query_terms": 25,
                            "minimum_should_match": "30%",
                        }
                    }
                ],
                "filter": [{"term": {"channel": channel}}],
            }
        },
        "_source": ["event_id", "text", "intent", "sentiment", "event_time", "conversation_id"],
    }


def routes_body(event_ids: list[str]) -> dict[str, Any]:
    """The routes of ``event_ids`` (newest first, so a re-route wins)."""
    return {
        "size": len(event_ids) * 2,
        "query": {"terms": {"event_id": event_ids}},
        "sort": [{"time": "desc"}],
        "_source": ["event_id", "queue", "priority", "urgent", "triaged", "intent", "time"],
    }
