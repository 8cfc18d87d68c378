"""Kafka record → Elasticsearch document: one typed builder per index family.

A builder gets the record value (bytes), validates it against its wire contract
(:class:`EnrichedEvent`, :class:`RoutedMessage`, :class:`FinancialAlert`) and
returns a :class:`Doc`, or raises :class:`InvalidRecord` (→ ``dlq.index``) with
a reason that names fields but never echoes values. Redaction happens here,
before anything reaches Elasticsearch.

Builders run once per consumed record, so they read the validated model once
and leave datetimes as ``datetime`` objects (normalised to UTC): the bulk
writer's orjson writes them as RFC 3339 in C, the same text
``isoformat()`` gives, at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from textpulse.contracts import Classification, EnrichedEvent, FinancialAlert, RoutedMessage
from textpulse.contracts.errors import FieldError, reason, validation_errors

from .mappings import ALERTS, EVENTS, ROUTES, Family
from .pii import redact, redact_obj, redact_spans


class InvalidRecord(ValueError):
    """The record cannot become a document (→ ``dlq.index``).

    ``errors`` are the mistakes in the shared vocabulary (``textpulse.contracts.errors``, as
    every service dead-letters them: ``x-dlq-code`` / ``x-dlq-field``); the message is their
    one-line reason (``not_json: …``, ``missing_field at event.text: …``), which names fields
    and rules but never echoes values.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        self.reason = reason(self.errors)
        super().__init__(self.reason)


@dataclass(frozen=True, slots=True)
class Doc:
    """One document to index."""

    id: str
    index: str
    source: dict[str, Any]
    ingest_time: datetime | None = None


Builder = Callable[[bytes, datetime, "BuildOptions"], Doc]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class BuildOptions:
    prefix: str
    redact: bool


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _parse(model: type[M], value: bytes) -> M:
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        # json_invalid becomes empty_value / invalid_utf8 / not_json, a non-object not_an_object.
        raise InvalidRecord(validation_errors(exc)) from exc


def enriched_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """A ``text.enriched`` record as an events document (id = event id, index = month of event time)."""
    enriched = _parse(EnrichedEvent, value)
    ev = enriched.event
    red = redact_spans(ev.text) if opts.redact else None
    text = red.text if red else ev.text
    moved = red is not None and red.changed
    entities = []
    keys = set()
    for ent in enriched.entities:
        start, end, surface, key = ent.start, ent.end, ent.surface, ent.key
        if moved:
            start, end = red.map_offset(ent.start), red.map_offset(ent.end, end=True)  # type: ignore[union-attr]
            surface = text[start:end] or redact(surface)
        if opts.redact:
            key = redact(key)
        keys.add(key)
        entities.append(
            {
                "surface": surface,
                "type": ent.type,
                "key": key,
                "start": start,
                "end": end,
                "score": ent.score,
                "origin": ent.origin,
            }
        )
    sentiment, topic, intent = enriched.sentiment, enriched.topic, enriched.intent
    models = [f"{c.model.name}:{c.model.version}" for c in (sentiment, topic, intent) if c is not None]
    if enriched.ner_model:
        models.append(f"{enriched.ner_model.name}:{enriched.ner_model.version}")
    event_time = _utc(ev.event_time)
    ingest_time = _utc(ev.ingest_time)
    source: dict[str, Any] = {
        "event_id": ev.id,
        "source": ev.source,
        "channel": ev.channel.value,
        "language": ev.language,
        "text": text,
        "entity_key": ev.entity_key,
        "conversation_id": ev.conversation_id,
        "user_id": ev.user_id,
        "metadata": redact_obj(ev.metadata) if opts.redact else dict(ev.metadata),
        "entities": entities,
        "entity_keys": sorted(keys),
        "sentiment": _label(sentiment),
        "topic": _label(topic),
        "intent": None
        if intent is None
        else {"label": intent.label, "score": intent.score, "out_of_scope": intent.out_of_scope},
        "models": models,
        "event_time": event_time,
        "ingest_time": ingest_time,
        "enriched_time": _utc(enriched.enriched_time),
        "indexed_time": now,
        "pii_redacted": moved,
    }
    return Doc(ev.id, EVENTS.index_for(opts.prefix, event_time), source, ingest_time)


def _label(result: Classification | None) -> dict[str, Any] | None:
    return None if result is None else {"label": result.label, "score": result.score}


def route_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """A ``support.routed`` record (:class:`RoutedMessage`); id = the routed event's id, so a re-route overwrites.

    The decision's fields are lifted for filtering; the whole message (the event
    included, redacted) is kept unindexed under ``record``.
    """
    msg = _parse(RoutedMessage, value)
    when = _utc(msg.routed_time)
    record = msg.model_dump(mode="json")
    source: dict[str, Any] = {
        "doc_id": msg.event_id,
        "event_id": msg.event_id,
        "conversation_id": msg.conversation_id,
        "queue": msg.queue,
        "priority": msg.priority.value,
        "urgent": msg.urgent,
        "triaged": msg.triaged,
        "intent": msg.intent,
        "intent_score": msg.intent_score,
        "sentiment": msg.sentiment,
        "sentiment_score": msg.sentiment_score,
        "rules": [r.rule for r in msg.reasons],
        "rules_version": msg.rules_version,
        "time": when,
        "indexed_time": now,
        "record": redact_obj(record) if opts.redact else record,
    }
    return Doc(msg.event_id, ROUTES.index_for(opts.prefix, when), source)


def alert_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """An ``alerts.financial`` record (:class:`FinancialAlert`); one document per notification.

    Id ``<alert_id>#<sequence>``: a redelivered notification overwrites itself,
    the next notification of the same alert is a new document.
    """
    alert = _parse(FinancialAlert, value)
    doc_id = f"{alert.alert_id}#{alert.sequence}"
    when = _utc(alert.updated_at)
    record = alert.model_dump(mode="json")
    evidence = alert.evidence
    source: dict[str, Any] = {
        "doc_id": doc_id,
        "alert_id": alert.alert_id,
        "key": alert.key,
        "key_kind": alert.key_kind.value,
        "subject": alert.subject,
        "detector": alert.detector.value,
        "status": alert.status.value,
        "severity": alert.severity,
        "sequence": alert.sequence,
        "summary": redact(alert.summary) if opts.redact else alert.summary,
        "score": evidence.score,
        "threshold": evidence.threshold,
        "negative_share": evidence.current.negative_share,
        "mentions": evidence.current.counts.total,
        "started_at": _utc(alert.started_at),
        "resolved_at": _utc(alert.resolved_at) if alert.resolved_at else None,
        "notified_time": _utc(alert.notified_time),
        "time": when,
        "indexed_time": now,
        "record": redact_obj(record) if opts.redact else record,
    }
    return Doc(doc_id, ALERTS.index_for(opts.prefix, when), source)


BUILDERS: dict[str, tuple[Family, Builder]] = {
    EVENTS.name: (EVENTS, enriched_document),
    ROUTES.name: (ROUTES, route_document),
    ALERTS.name: (ALERTS, alert_document),
}
