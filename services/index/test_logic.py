"""Unit tests of the index service's pure logic: documents, index names, retention, queries, bulk reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from textpulse.contracts import (
    AlertEvidence,
    AlertStatus,
    BaselineFigures,
    Detector,
    EnrichedEvent,
    FinancialAlert,
    KeyKind,
    Priority,
    RoutedMessage,
    RouteReason,
    SentimentCounts,
    WindowFigures,
    encode,
)
from textpulse.contracts.errors import ErrorCode, reason

from .bulk import item_reason, ndjson, retryable_status
from .documents import Builder, BuildOptions, InvalidRecord, alert_document, enriched_document, route_document
from .mappings import ALERTS_MAPPING, EVENTS, EVENTS_MAPPING, ROUTES_MAPPING, template_body
from .pii import EMAIL
from .queries import Interval, SearchFilters, search_body, sentiment_over_time_body, similar_body
from .settings import IndexSettings
from .store import expired, month_of

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
OPTS = BuildOptions(prefix="tp", redact=True)


def enriched(text: str = "Write to a@b.io about ACME Corp", **kw: object) -> EnrichedEvent:
    start = text.find("ACME Corp")
    base: dict[str, object] = {
        "event": {
            "id": "ev-1",
            "source": "s",
            "channel": "support",
            "text": text,
            "event_time": "2026-10-31T23:30:00-02:00",
            "ingest_time": "2026-11-01T01:31:00Z",
            "metadata": {"tier": "gold", "mail": "x@y.org"},
        },
        "sentiment": {"label": "negative", "score": 0.9, "model": {"name": "sentiment", "version": "1"}},
        "intent": {"label": "card_arrival", "score": 0.8, "model": {"name": "intent", "version": "2"}},
        "entities": [
            {
                "surface": "ACME Corp",
                "type": "ORG",
                "start": start,
                "end": start + 9,
                "key": "acme",
                "score": 0.99,
                "origin": "model",
            }
        ]
        if start >= 0
        else [],
        "enriched_time": "2026-11-01T01:31:01Z",
    }
    base.update(kw)
    return EnrichedEvent.model_validate(base)


def test_enriched_document_is_redacted_and_offsets_follow() -> None:
    doc = enriched_document(encode(enriched()), NOW, OPTS)
    assert doc.id == "ev-1"
    # event time is 2026-11-01T01:30Z in UTC → November index
    assert doc.index == "tp-events-2026.11"
    src = doc.source
    assert src["text"] == f"Write to {EMAIL} about ACME Corp"
    ent = src["entities"][0]
    assert src["text"][ent["start"] : ent["end"]] == "ACME Corp"
    assert src["metadata"] == {"tier": "gold", "mail": EMAIL}
    assert src["sentiment"] == {"label": "negative", "score": 0.9}
    assert src["intent"] == {"label": "card_arrival", "score": 0.8, "out_of_scope": False}
    assert src["topic"] is None
    assert src["pii_redacted"] is True
    assert src["entity_keys"] == ["acme"]
    # every field is declared by the strict mapping
    assert set(src) <= set(EVENTS_MAPPING["properties"])


def test_redaction_can_be_disabled() -> None:
    doc = enriched_document(encode(enriched()), NOW, BuildOptions(prefix="tp", redact=False))
    assert "a@b.io" in doc.source["text"]
    assert doc.source["pii_redacted"] is False


@pytest.mark.parametrize(
    ("value", "code", "field"),
    [
        (b"{not json", ErrorCode.NOT_JSON, ""),
        (b"", ErrorCode.EMPTY_VALUE, ""),
        (b"\xff\xfe", ErrorCode.INVALID_UTF8, ""),
        (b"[]", ErrorCode.NOT_AN_OBJECT, ""),
        (b'{"event": {}}', ErrorCode.MISSING_FIELD, "event.id"),
    ],
)
def test_invalid_records(value: bytes, code: ErrorCode, field: str) -> None:
    """The shared error vocabulary (textpulse.contracts.errors), as every other service dead-letters."""
    with pytest.raises(InvalidRecord) as info:
        enriched_document(value, NOW, OPTS)
    first = info.value.errors[0]
    assert (first.code, first.field) == (code, field)
    assert str(info.value) == info.value.reason == reason(info.value.errors)
    assert info.value.reason.startswith(f"{code.value}")


def test_contract_reason_does_not_echo_input() -> None:
    bad = orjson.loads(encode(enriched()))
    bad["event"]["channel"] = "phone call +44 20 7946 0958"
    with pytest.raises(InvalidRecord) as info:
        enriched_document(orjson.dumps(bad), NOW, OPTS)
    assert "7946" not in str(info.value)


def routed_message(**kw: object) -> RoutedMessage:
    ev = enriched("call 07700 900123 about my card").event
    base: dict[str, object] = {
        "event_id": ev.id,
        "conversation_id": "c-1",
        "queue": "cards",
        "priority": Priority.P2,
        "urgent": True,
        "triaged": False,
        "intent": "card_arrival",
        "intent_score": 0.8,
        "sentiment": "negative",
        "sentiment_score": 0.9,
        "reasons": [RouteReason(rule="route:cards", detail="intent card_arrival", scores={"card_arrival": 0.8})],
        "rules_version": "abc123",
        "routed_time": datetime(2026, 11, 2, tzinfo=UTC),
        "event": ev,
    }
    base.update(kw)
    return RoutedMessage.model_validate(base)


def financial_alert(**kw: object) -> FinancialAlert:
    when = datetime(2026, 8, 31, 22, tzinfo=timezone(timedelta(hours=-3)))  # 2026-09-01T01:00Z
    window = WindowFigures(
        start=when - timedelta(minutes=5),
        end=when,
        counts=SentimentCounts(negative=9, positive=1, neutral=2),
        negative_share=0.75,
        positive_share=1 / 12,
    )
    baseline = BaselineFigures(
        windows=40, negative_share_mean=0.15, negative_share_std=0.05, volume_mean=10, volume_std=3
    )
    base: dict[str, object] = {
        "alert_id": "negative_surge:entity:acme:1",
        "key": "entity:acme",
        "key_kind": KeyKind.ENTITY,
        "subject": "acme",
        "detector": Detector.NEGATIVE_SURGE,
        "status": AlertStatus.FIRING,
        "severity": "critical",
        "sequence": 2,
        "started_at": when,
        "updated_at": when,
        "notified_time": when,
        "summary": "ACME negative; desk reachable at desk@bank.example",
        "evidence": AlertEvidence(current=window, baseline=baseline, score=5.1, threshold=3.0, method="zscore"),
    }
    base.update(kw)
    return FinancialAlert.model_validate(base)


def test_route_document_is_typed_and_redacted() -> None:
    doc = route_document(encode(routed_message()), NOW, OPTS)
    assert (doc.id, doc.index) == ("ev-1", "tp-routes-2026.11")
    src = doc.source
    assert (src["queue"], src["priority"], src["urgent"], src["triaged"]) == ("cards", "p2", True, False)
    assert (src["intent"], src["intent_score"], src["sentiment"], src["sentiment_score"]) == (
        "card_arrival",
        0.8,
        "negative",
        0.9,
    )
    assert (src["rules"], src["rules_version"]) == (["route:cards"], "abc123")
    assert src["time"] == datetime(2026, 11, 2, tzinfo=UTC)
    assert set(src) <= set(ROUTES_MAPPING["properties"])
    text = orjson.dumps(src).decode()
    assert "900123" not in text
    assert src["record"]["event"]["text"] == "call [PHONE] about my card"
    assert src["record"]["queue"] == "cards"


def test_alert_document_is_typed_and_redacted() -> None:
    doc = alert_document(encode(financial_alert()), NOW, OPTS)
    # one document per notification; its month is the UTC month of updated_at
    assert (doc.id, doc.index) == ("negative_surge:entity:acme:1#2", "tp-alerts-2026.09")
    src = doc.source
    assert (src["detector"], src["status"], src["severity"], src["key_kind"]) == (
        "negative_surge",
        "firing",
        "critical",
        "entity",
    )
    assert (src["sequence"], src["score"], src["threshold"], src["negative_share"], src["mentions"]) == (
        2,
        5.1,
        3.0,
        0.75,
        12,
    )
    assert src["time"] == datetime(2026, 9, 1, 1, tzinfo=UTC)
    assert src["resolved_at"] is None
    assert src["summary"] == f"ACME negative; desk reachable at {EMAIL}"
    assert set(src) <= set(ALERTS_MAPPING["properties"])
    assert "desk@bank.example" not in orjson.dumps(src).decode()
    resolved = alert_document(
        encode(financial_alert(status=AlertStatus.RESOLVED, sequence=3, resolved_at=NOW)), NOW, OPTS
    )
    assert resolved.id.endswith("#3")
    assert resolved.source["resolved_at"] == NOW


@pytest.mark.parametrize("builder", [route_document, alert_document])
def test_typed_builders_refuse_what_the_contract_refuses(builder: Builder) -> None:
    with pytest.raises(InvalidRecord, match=r"^not_json: "):
        builder(b"{not json", NOW, OPTS)
    with pytest.raises(InvalidRecord, match=r"^not_an_object: the value must be a JSON object, not an array"):
        builder(b"[1]", NOW, OPTS)
    # an old opaque record without the contract's fields is refused, naming fields, not values
    with pytest.raises(InvalidRecord) as info:
        builder(orjson.dumps({"event_id": "ev-1", "alert_id": "a", "summary": "mail a@b.io"}), NOW, OPTS)
    assert {e.code for e in info.value.errors} >= {ErrorCode.MISSING_FIELD}
    assert "a@b.io" not in str(info.value)


def test_documents_serialise_as_before() -> None:
    """Datetimes stay objects in the source; orjson writes them as isoformat() did (UTC, +00:00)."""
    doc = enriched_document(encode(enriched()), NOW, OPTS)
    body = orjson.loads(ndjson(doc).split(b"\n")[1])
    assert body["event_time"] == "2026-11-01T01:30:00+00:00"
    assert body["indexed_time"] == NOW.isoformat()
    assert body["ingest_time"] == "2026-11-01T01:31:00+00:00"


def test_template_body() -> None:
    body = template_body(EVENTS, IndexSettings(index_prefix="tp"))
    assert body["index_patterns"] == ["tp-events-*"]
    assert body["template"]["aliases"] == {"tp-events": {}}
    assert body["template"]["mappings"]["dynamic"] == "strict"


def test_retention() -> None:
    names = ["tp-events-2025.09", "tp-events-2025.10", "tp-events-2025.11", "tp-events-2026.11", "tp-events-x"]
    assert month_of("tp-events-2025.10") == (2025, 10)
    assert month_of("tp-events-x") is None
    assert expired(names, NOW, 13) == ["tp-events-2025.09"]
    assert expired(names, NOW, 0) == ["tp-events-2025.09", "tp-events-2025.10", "tp-events-2025.11"]


def test_bulk_item_classification() -> None:
    assert retryable_status(429)
    assert retryable_status(503)
    assert not retryable_status(400)
    item = {
        "status": 400,
        "error": {
            "type": "document_parsing_exception",
            "reason": "failed to parse [metadata.n]",
            "caused_by": {"type": "illegal_argument_exception", "reason": "For input: a@b.io"},
        },
    }
    reason = item_reason(item)
    assert reason.startswith("400 document_parsing_exception: failed to parse [metadata.n]")
    assert "a@b.io" not in reason


def test_queries() -> None:
    f = SearchFilters(entity="acme", sentiment="negative", channel="news", time_from=NOW)
    body = search_body("rates rise", f, page=3, size=10)
    assert body["from"] == 20
    filters = body["query"]["bool"]["filter"]
    assert filters[0]["nested"]["path"] == "entities"
    assert {"term": {"sentiment.label": "negative"}} in filters
    assert {"range": {"event_time": {"gte": NOW.isoformat()}}} in filters
    assert search_body(None, SearchFilters(), page=1, size=5)["sort"][0] == {"event_time": "desc"}
    agg = sentiment_over_time_body("acme", SearchFilters(), Interval.WEEK)
    assert agg["aggs"]["over_time"]["date_histogram"]["calendar_interval"] == "week"
    assert agg["query"]["bool"]["filter"][0]["nested"]["query"]["bool"]["filter"] == [
        {"term": {"entities.key": "acme"}}
    ]
    assert similar_body("card lost", size=3)["query"]["bool"]["filter"] == [{"term": {"channel": "support"}}]
