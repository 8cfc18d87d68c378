"""Unit tests of the index service's pure logic: documents, index names, retention, queries, bulk reasons."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from textpulse.contracts import EnrichedEvent, encode

from .bulk import item_reason, retryable_status
from .documents import BuildOptions, InvalidRecord, alert_document, enriched_document, route_document
from .mappings import EVENTS, EVENTS_MAPPING, template_body
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
    ("value", "reason"),
    [(b"{not json", "malformed JSON"), (b'{"event": {}}', "contract violation"), (b"[]", "contract violation")],
)
def test_invalid_records(value: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        enriched_document(value, NOW, OPTS)


def test_contract_reason_does_not_echo_input() -> None:
    bad = orjson.loads(encode(enriched()))
    bad["event"]["channel"] = "phone call +44 20 7946 0958"
    with pytest.raises(InvalidRecord) as info:
        enriched_document(orjson.dumps(bad), NOW, OPTS)
    assert "7946" not in str(info.value)


def test_opaque_documents() -> None:
    route = {
        "event_id": "ev-1",
        "queue": "cards",
        "priority": "p2",
        "urgent": True,
        "routed_time": "2026-11-02T00:00:00Z",
        "event": {"text": "call 07700 900123"},
    }
    doc = route_document(orjson.dumps(route), NOW, OPTS)
    assert (doc.id, doc.index) == ("ev-1", "tp-routes-2026.11")
    assert doc.source["queue"] == "cards"
    assert "900123" not in orjson.dumps(doc.source).decode()
    alert = {
        "alert_id": "negative_surge:entity:acme:1",
        "sequence": 2,
        "updated_at": "2026-09-01T00:00:00Z",
        "summary": "ACME negative",
    }
    doc = alert_document(orjson.dumps(alert), NOW, OPTS)
    assert (doc.id, doc.index) == ("negative_surge:entity:acme:1#2", "tp-alerts-2026.09")
    anonymous = alert_document(b'{"x": 1}', NOW, OPTS)
    assert anonymous.id == alert_document(b'{"x": 1}', NOW, OPTS).id
    assert anonymous.id.startswith("sha1:")
    with pytest.raises(InvalidRecord, match="JSON object"):
        route_document(b"[1]", NOW, OPTS)


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
