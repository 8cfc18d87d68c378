"""Kafka record → Elasticsearch document, one builder per index family.

A builder gets the record value (bytes) and returns a :class:`Doc`, or raises
:class:`InvalidRecord` (→ ``dlq.index``). Redaction happens here, before
anything reaches Elasticsearch. ``text.enriched`` records are validated against
the :class:`EnrichedEvent` contract; ``support.routed`` and ``alerts.financial``
are indexed as opaque JSON (a few fields lifted for filtering, the whole record
kept unindexed under ``record``) so they need no change when their contracts
evolve — a typed builder is one function each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError
from textpulse.contracts import EnrichedEvent

from .mappings import ALERTS, EVENTS, ROUTES, Family
from .pii import redact, redact_obj, redact_spans


class InvalidRecord(ValueError):
    """The record cannot become a document; the message is the dead-letter reason."""


@dataclass(frozen=True, slots=True)
class Doc:
    """One document to index."""

    id: str
    index: str
    source: dict[str, Any]
    ingest_time: datetime | None = None


Builder = Callable[[bytes, datetime, "BuildOptions"], Doc]


@dataclass(frozen=True, slots=True)
class BuildOptions:
    prefix: str
    redact: bool


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        msg = f"malformed JSON: {exc}"
        raise InvalidRecord(msg) from exc


def _validation_reason(exc: ValidationError) -> str:
    """Field locations and messages only: pydantic's default text echoes input values (PII)."""
    errors = exc.errors(include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"malformed JSON: {errors[0]['msg']}"
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:10]]
    return "contract violation: " + "; ".join(parts)


def enriched_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """A ``text.enriched`` record as an events document (id = event id)."""
    try:
        enriched = EnrichedEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidRecord(_validation_reason(exc)) from exc
    ev = enriched.event
    red = redact_spans(ev.text) if opts.redact else None
    text = red.text if red else ev.text
    entities = []
    for ent in enriched.entities:
        start, end, surface = ent.start, ent.end, ent.surface
        if red is not None and red.changed:
            start, end = red.map_offset(ent.start), red.map_offset(ent.end, end=True)
            surface = text[start:end] or redact(surface)
        entities.append(
            {
                "surface": surface,
                "type": ent.type,
                "key": redact(ent.key) if opts.redact else ent.key,
                "start": start,
                "end": end,
                "score": ent.score,
                "origin": ent.origin,
            }
        )
    models = [c.model.name + ":" + c.model.version for c in (enriched.sentiment, enriched.topic, enriched.intent) if c]
    if enriched.ner_model:
        models.append(f"{enriched.ner_model.name}:{enriched.ner_model.version}")
    source: dict[str, Any] = {
        "event_id": ev.id,
        "source": ev.source,
        "channel": ev.channel.value,
        "language": ev.language,
        "text": text,
        "entity_key": ev.entity_key,
        "conversation_id": ev.conversation_id,
        "user_id": ev.user_id,
        "metadata": redact_obj(dict(ev.metadata)) if opts.redact else dict(ev.metadata),
        "entities": entities,
        "entity_keys": sorted({e["key"] for e in entities}),
        "sentiment": _label(enriched.sentiment),
        "topic": _label(enriched.topic),
        "intent": _label(enriched.intent, out_of_scope=enriched.intent.out_of_scope if enriched.intent else None),
        "models": models,
        "event_time": _iso(ev.event_time),
        "ingest_time": _iso(ev.ingest_time),
        "enriched_time": _iso(enriched.enriched_time),
        "indexed_time": _iso(now),
        "pii_redacted": bool(red and red.changed),
    }
    return Doc(ev.id, EVENTS.index_for(opts.prefix, ev.event_time.astimezone(UTC)), source, ev.ingest_time)


def _label(result: Any, **extra: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    out = {"label": result.label, "score": result.score}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _time(record: dict[str, Any], fields: tuple[str, ...], fallback: datetime) -> datetime:
    for name in fields:
        raw = record.get(name)
        if isinstance(raw, str):
            try:
                parsed = datetime.fromisoformat(raw)
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def _object(value: bytes) -> dict[str, Any]:
    record = _loads(value)
    if not isinstance(record, dict):
        msg = f"expected a JSON object, got {type(record).__name__}"
        raise InvalidRecord(msg)
    return record


def _content_id(value: bytes) -> str:
    return "sha1:" + hashlib.sha1(value, usedforsecurity=False).hexdigest()


def _lift(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: record.get(n) for n in names if isinstance(record.get(n), str | bool | int | float)}


def route_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """A ``support.routed`` record (opaque JSON); id = the routed event's id, so a re-route overwrites."""
    record = _object(value)
    doc_id = record.get("event_id") if isinstance(record.get("event_id"), str) else None
    when = _time(record, ("routed_time",), now)
    source = {
        "doc_id": doc_id or _content_id(value),
        **_lift(record, ("event_id", "conversation_id", "queue", "priority", "urgent", "triaged", "intent")),
        "sentiment": record.get("sentiment") if isinstance(record.get("sentiment"), str) else None,
        "time": _iso(when),
        "indexed_time": _iso(now),
        "record": redact_obj(record) if opts.redact else record,
    }
    return Doc(source["doc_id"], ROUTES.index_for(opts.prefix, when.astimezone(UTC)), source)


def alert_document(value: bytes, now: datetime, opts: BuildOptions) -> Doc:
    """An ``alerts.financial`` record (opaque JSON); one document per notification of an alert."""
    record = _object(value)
    alert_id, seq = record.get("alert_id"), record.get("sequence")
    doc_id = f"{alert_id}#{seq}" if isinstance(alert_id, str) and isinstance(seq, int) else _content_id(value)
    when = _time(record, ("updated_at", "notified_time"), now)
    summary = record.get("summary") if isinstance(record.get("summary"), str) else None
    source = {
        "doc_id": doc_id,
        **_lift(record, ("alert_id", "key", "subject", "detector", "status", "severity")),
        "summary": redact(summary) if summary and opts.redact else summary,
        "time": _iso(when),
        "indexed_time": _iso(now),
        "record": redact_obj(record) if opts.redact else record,
    }
    return Doc(doc_id, ALERTS.index_for(opts.prefix, when.astimezone(UTC)), source)


BUILDERS: dict[str, tuple[Family, Builder]] = {
    EVENTS.name: (EVENTS, enriched_document),
    ROUTES.name: (ROUTES, route_document),
    ALERTS.name: (ALERTS, alert_document),
}
