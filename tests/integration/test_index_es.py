"""The index service against the real Elasticsearch and the real Apache Kafka.

Shows what issue 7 asks: N enriched events → N documents with the declared
mappings, a replay leaves N; an Elasticsearch outage during indexing loses and
duplicates nothing and the consumer resumes; a document Elasticsearch rejects
goes to ``dlq.index`` with the reason without blocking its partition; the
search endpoints answer what the data says (counts and an aggregation
recomputed here); no e-mail, phone or card number of the PII corpus reaches
the index or the logs.

Elasticsearch: a node already on 127.0.0.1:9200 is reused, else this module
starts its own with ``deploy/elasticsearch/start.sh`` on free ports (the outage
test always uses its own node, never the shared one). With CI=true a missing
component fails the run.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from textpulse.contracts import (
    AlertEvidence,
    BaselineFigures,
    FinancialAlert,
    SentimentCounts,
    WindowFigures,
    encode,
)
from textpulse.kafka.admin import client_options
from textpulse.settings import KafkaSettings

from services.index.app import create_app
from services.index.settings import IndexSettings
from tests.conftest import REPO
from tests.es_node import EsNode, own_node
from tests.helpers import headers, read_all, running
from tests.support.pii_corpus import POSITIVE

pytestmark = [pytest.mark.es, pytest.mark.kafka]

DEPLOY = REPO / "deploy" / "elasticsearch"
BASE = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
ENTITIES = ("acme", "globex", "initech")
SENTIMENTS = ("positive", "negative", "neutral")
CHANNELS = ("news", "social", "support", "review")
SUPPORT_TEXTS = (
    "I lost my card yesterday and need a replacement card",
    "my transfer to a friend has not arrived after three days",
    "the exchange rate on my card payment looks wrong",
    "how do I top up my account with a bank transfer",
)


# -- Elasticsearch ------------------------------------------------------------


@pytest.fixture(scope="module")
def own_es(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EsNode]:
    """A throwaway node of this module (free ports, temp run dir), always stopped afterwards."""
    with own_node(tmp_path_factory.mktemp("es-index"), "tp-index-test") as node:
        yield node


@pytest.fixture(scope="module")
def es_url(shared_es_url: str) -> str:
    """The session's node (the developer's on 9200 when it runs)."""
    return shared_es_url


# -- data -----------------------------------------------------------------------


def enriched(
    i: int,
    *,
    prefix: str = "ev",
    text: str | None = None,
    channel: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Deterministic enriched event number ``i``; the tests recompute every expected figure from these."""
    ch = channel or CHANNELS[i % 4]
    entity = ENTITIES[(i // 2) % 3]
    name = entity.upper()
    body = text or (
        SUPPORT_TEXTS[(i // 4) % 4] if ch == "support" else f"{name} shares {('rise', 'fall')[i % 2]} on report {i}"
    )
    start = body.find(name)
    event_time = BASE + timedelta(hours=5 * i)
    model = {"name": "m", "version": "1"}
    out: dict[str, Any] = {
        "event": {
            "id": f"{prefix}-{i:05d}",
            "source": "test",
            "channel": ch,
            "text": body,
            "event_time": event_time.isoformat(),
            "ingest_time": (event_time + timedelta(seconds=2)).isoformat(),
            "conversation_id": f"c-{i}" if ch == "support" else None,
            "metadata": metadata or {"i": i},
        },
        "sentiment": {"label": SENTIMENTS[i % 3], "score": round(0.5 + (i % 5) / 10, 2), "model": model},
        "topic": {"label": "earnings", "score": 0.7, "model": model} if ch in ("news", "social") else None,
        "intent": {"label": ("lost_card", "transfer_not_received")[i % 2], "score": 0.9, "model": model}
        if ch == "support"
        else None,
        "entities": [
            {
                "surface": name,
                "type": "ORG",
                "start": start,
                "end": start + len(name),
                "key": entity,
                "score": 0.95,
                "origin": "model",
            }
        ]
        if start >= 0
        else [],
        "enriched_time": (event_time + timedelta(seconds=3)).isoformat(),
    }
    return out


def entity_of(ev: dict[str, Any]) -> str | None:
    return ev["entities"][0]["key"] if ev["entities"] else None


async def produce(kafka: KafkaSettings, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(**client_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=key) for v in values])
    finally:
        await producer.stop()


def index_settings(kafka: KafkaSettings, topics: dict[str, str], es_url: str, **kw: Any) -> IndexSettings:
    prefix = f"tpt-{uuid.uuid4().hex[:8]}"
    base: dict[str, Any] = {
        "kafka": kafka,
        "es_url": es_url,
        "index_prefix": prefix,
        "topic_enriched": topics["text.enriched"],
        "topic_routed": topics["support.routed"],
        "topic_alerts": topics["alerts.financial"],
        "topic_dlq": topics["dlq.index"],
        "group_id": f"g-{prefix}",
        "kafka_batch_timeout_ms": 50,
        "es_connect_timeout_s": 240,
    }
    base.update(kw)
    return IndexSettings(**base)


@asynccontextmanager
async def es_client(url: str) -> AsyncIterator[Any]:
    from elasticsearch import AsyncElasticsearch

    es = AsyncElasticsearch(url, request_timeout=30, max_retries=0)
    try:
        yield es
    finally:
        await es.close()


async def wait_count(url: str, index: str, expect: int, timeout_s: float = 120) -> int:
    """Refresh and count until ``expect`` documents are searchable (or the timeout); returns the last count."""
    deadline = time.monotonic() + timeout_s
    count = -1
    async with es_client(url) as es:
        while time.monotonic() < deadline:
            try:
                await es.indices.refresh(index=index, ignore_unavailable=True, allow_no_indices=True)
                count = (await es.count(index=index, ignore_unavailable=True, allow_no_indices=True)).body["count"]
            except Exception:
                count = -1
            if count >= expect:
                return count
            await asyncio.sleep(0.5)
    return count


def sample(app: Any, name: str, **labels: str) -> float:
    value = app.state.metrics.registry.get_sample_value(name, {"service": "index", **labels})
    return float(value or 0.0)


async def wait_metric(app: Any, name: str, expect: float, timeout_s: float = 60, **labels: str) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sample(app, name, **labels) < expect:
        await asyncio.sleep(0.2)
    return sample(app, name, **labels)


# -- tests ------------------------------------------------------------------------


def _check_mappings(mappings: dict[str, Any], prefix: str, everything: list[dict[str, Any]]) -> None:
    """One monthly index per event month, each with the declared (strict) mapping."""
    months = {e["event"]["event_time"][:7].replace("-", ".") for e in everything}
    assert sorted(mappings) == sorted(f"{prefix}-events-{m}" for m in months)
    for body in mappings.values():
        props = body["mappings"]["properties"]
        assert body["mappings"]["dynamic"] == "strict"
        assert props["text"]["type"] == "text"
        assert props["text"]["fields"]["raw"]["type"] == "keyword"
        assert props["entities"]["type"] == "nested"
        types = {k: v["type"] for k, v in props["entities"]["properties"].items()}
        assert types.items() >= {"type": "keyword", "key": "keyword", "start": "integer", "end": "integer"}.items()
        for label in ("sentiment", "topic", "intent"):
            assert props[label]["properties"]["label"]["type"] == "keyword"
            assert props[label]["properties"]["score"]["type"] == "float"
        assert props["event_time"]["type"] == props["ingest_time"]["type"] == "date"


def _assert_no_pii(text: str) -> None:
    for _, items in POSITIVE:
        for item in items:
            assert item not in text, item


async def _check_search(client: Any, events: list[dict[str, Any]]) -> None:
    """Full text + filters and paging, counted by hand from the generated events."""
    resp = await client.get("/v1/search", params={"q": "shares rise", "channel": "news", "sentiment": "negative"})
    assert resp.status_code == 200, resp.text
    expect = [
        e
        for e in events
        if e["event"]["channel"] == "news" and "rise" in e["event"]["text"] and e["sentiment"]["label"] == "negative"
    ]
    assert resp.json()["total"] == len(expect) > 0
    assert all("<em>rise</em>" in " ".join(h["highlight"]) for h in resp.json()["hits"])

    lo, hi = BASE + timedelta(days=10), BASE + timedelta(days=30)
    params = {"entity": "globex", "from": lo.isoformat(), "to": hi.isoformat(), "size": 7, "page": 2}
    resp = await client.get("/v1/search", params=params)
    assert resp.status_code == 200, resp.text
    in_range = sorted(
        (e for e in events if entity_of(e) == "globex" and lo <= datetime.fromisoformat(e["event"]["event_time"]) < hi),
        key=lambda e: e["event"]["event_time"],
        reverse=True,
    )
    assert resp.json()["total"] == len(in_range) > 14
    assert [h["id"] for h in resp.json()["hits"]] == [e["event"]["id"] for e in in_range[7:14]]

    resp = await client.get("/v1/search", params={"intent": "lost_card", "entity_type": "ORG"})
    assert resp.json()["total"] == sum(
        1 for e in events if e["intent"] and e["intent"]["label"] == "lost_card" and e["entities"]
    )


async def _check_entity_sentiment(client: Any, events: list[dict[str, Any]]) -> None:
    """The date_histogram per day with counts per sentiment label, recomputed by hand."""
    resp = await client.get("/v1/entities/acme/sentiment", params={"interval": "day"})
    assert resp.status_code == 200, resp.text
    by_day: dict[str, Counter[str]] = {}
    for e in events:
        if entity_of(e) == "acme":
            by_day.setdefault(e["event"]["event_time"][:10], Counter())[e["sentiment"]["label"]] += 1
    got = {b["start"][:10]: (b["count"], b["sentiment"]) for b in resp.json()["buckets"]}
    assert got == {day: (sum(c.values()), dict(c)) for day, c in by_day.items()}
    assert resp.json()["total"] == sum(sum(c.values()) for c in by_day.values())


async def _check_similar(client: Any, routes: list[dict[str, Any]]) -> None:
    ask = {"text": "I lost my card, I need a replacement", "size": 3}
    resp = await client.post("/v1/support/similar", json=ask)
    assert resp.status_code == 200, resp.text
    # The deprecated GET (text in the query string) still gives the same answer.
    assert (await client.get("/v1/support/similar", params=ask)).json() == resp.json()
    hits = resp.json()["hits"]
    assert hits
    assert hits[0]["text"] == SUPPORT_TEXTS[0]
    routes_by_id = {r["event_id"]: r["queue"] for r in routes}
    assert hits[0]["route"]["queue"] == routes_by_id[hits[0]["id"]]
    for h in hits:
        assert (h["route"] or {}).get("queue") == routes_by_id.get(h["id"])


async def _check_bad_params(client: Any) -> None:
    lo, hi = BASE, BASE + timedelta(days=1)
    for bad in (
        {"channel": "fax"},
        {"size": 0},
        {"from": "yesterday"},
        {"page": 5000, "size": 100},
        {"from": hi.isoformat(), "to": lo.isoformat()},
    ):
        resp = await client.get("/v1/search", params=bad)
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"] == "validation_failed"
    assert (await client.get("/v1/entities/acme/sentiment", params={"interval": "fortnight"})).status_code == 422
    assert (await client.get("/v1/support/similar")).status_code == 422
    short = await client.post("/v1/support/similar", json={"text": "hi"})
    assert short.status_code == 422
    assert short.json()["errors"][0]["field"] == "text"
    # more buckets than the cluster allows (search.max_buckets): refused by Elasticsearch → 422, not 500
    huge = {"interval": "hour", "from": "1900-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    resp = await client.get("/v1/entities/acme/sentiment", params=huge)
    assert resp.status_code == 422, resp.text
    schema = (await client.get("/openapi.json")).json()
    assert {"/v1/search", "/v1/entities/{key}/sentiment", "/v1/support/similar"} <= set(schema["paths"])


def _routes_for(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    support = [e for e in events if e["event"]["channel"] == "support"]
    return [
        {
            "event_id": e["event"]["id"],
            "queue": ("cards", "transfers")[k % 2],
            "priority": "p3",
            "urgent": False,
            "triaged": False,
            "intent": e["intent"]["label"],
            "intent_score": e["intent"]["score"],
            "reasons": [{"rule": f"route:{('cards', 'transfers')[k % 2]}", "detail": "intent"}],
            "rules_version": "test",
            "routed_time": e["enriched_time"],
            "event": e["event"],
        }
        for k, e in enumerate(support)
    ]


def _alerts() -> list[bytes]:
    """Two notifications of one alert (firing, resolved), the second one delivered twice."""
    window = WindowFigures(
        start=BASE,
        end=BASE + timedelta(minutes=5),
        counts=SentimentCounts(negative=9, positive=1, neutral=2),
        negative_share=0.75,
        positive_share=1 / 12,
    )
    baseline = BaselineFigures(
        windows=40, negative_share_mean=0.15, negative_share_std=0.05, volume_mean=10, volume_std=3
    )
    evidence = AlertEvidence(current=window, baseline=baseline, score=5.1, threshold=3.0, method="zscore")
    common: dict[str, Any] = {
        "alert_id": "negative_surge:entity:acme:1",
        "key": "entity:acme",
        "key_kind": "entity",
        "subject": "acme",
        "detector": "negative_surge",
        "severity": "critical",
        "started_at": BASE,
        "notified_time": BASE,
        "summary": "acme negative surge; contact ops@bank.example",
        "evidence": evidence,
    }
    firing = FinancialAlert.model_validate({**common, "status": "firing", "sequence": 1, "updated_at": BASE})
    resolved = FinancialAlert.model_validate(
        {**common, "status": "resolved", "sequence": 2, "updated_at": BASE + timedelta(hours=1), "resolved_at": BASE}
    )
    return [encode(firing), encode(resolved), encode(resolved)]


@pytest.mark.timeout(420)
async def test_index_replay_search_and_pii(
    es_url: str, kafka_settings: KafkaSettings, kafka_topics: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """N in → N docs (mappings as declared); replay → N; search/aggregation/similar agree with the data; no PII."""
    caplog.set_level(logging.INFO)
    events = [enriched(i) for i in range(240)]
    pii_events = [
        enriched(1000 + k, prefix="pii", text=text, channel="support") for k, (text, _) in enumerate(POSITIVE)
    ]
    everything = events + pii_events
    values = [orjson.dumps(e) for e in everything]
    routes = _routes_for(events)
    settings = index_settings(kafka_settings, kafka_topics, es_url)
    alias = f"{settings.index_prefix}-events"
    app = create_app(settings, lag_probe=False)
    async with running(app) as client:
        await produce(kafka_settings, settings.topic_enriched, values)
        await produce(kafka_settings, settings.topic_routed, [orjson.dumps(r) for r in routes])
        await produce(kafka_settings, settings.topic_alerts, _alerts())
        assert await wait_count(es_url, alias, len(everything)) == len(everything)
        assert await wait_count(es_url, f"{settings.index_prefix}-routes", len(routes)) == len(routes)
        # typed alert documents: one per notification, a redelivered one overwrites itself
        assert await wait_count(es_url, f"{settings.index_prefix}-alerts", 2) == 2

        # replay: the same records again → indexed again by the consumer, the count does not move
        await produce(kafka_settings, settings.topic_enriched, values)
        indexed = await wait_metric(
            app, "textpulse_index_documents_total", 2 * len(everything), family="events", outcome="indexed"
        )
        assert indexed == 2 * len(everything)
        assert await wait_count(es_url, alias, len(everything), timeout_s=10) == len(everything)
        # anything that logs PII while the service runs is redacted too
        logging.getLogger("tests.index.probe").warning("probe: customer wrote %s", POSITIVE[-1][0])

        async with es_client(es_url) as es:
            _check_mappings((await es.indices.get_mapping(index=alias)).body, settings.index_prefix, everything)
            found = await es.search(index=f"{settings.index_prefix}-*", size=2000, query={"match_all": {}})
            sources = [h["_source"] for h in found.body["hits"]["hits"]]
        _assert_no_pii(orjson.dumps(sources).decode())
        assert sum(1 for s in sources if s.get("pii_redacted")) == len(pii_events)

        await _check_search(client, events)
        await _check_entity_sentiment(client, events)
        await _check_similar(client, routes)
        await _check_bad_params(client)

    logs = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "probe: customer wrote" in logs
    _assert_no_pii(logs)


@pytest.mark.timeout(300)
async def test_rejected_document_goes_to_dlq_and_does_not_block(
    es_url: str, kafka_settings: KafkaSettings, kafka_topics: dict[str, str]
) -> None:
    """A mapping conflict and a malformed record land in dlq.index with reasons; later records still index."""
    settings = index_settings(kafka_settings, kafka_topics, es_url)
    alias = f"{settings.index_prefix}-events"
    key = b"one-partition"
    first = [orjson.dumps(enriched(i, metadata={"amount": 10 + i})) for i in range(5)]
    conflicting = orjson.dumps(enriched(5, metadata={"amount": "ten euros"}))
    after = [orjson.dumps(enriched(i)) for i in range(6, 26)]
    app = create_app(settings, lag_probe=False)
    async with running(app):
        await produce(kafka_settings, settings.topic_enriched, first, key=key)
        assert await wait_count(es_url, alias, 5) == 5
        await produce(kafka_settings, settings.topic_enriched, [conflicting, b"{not json", *after], key=key)
        assert await wait_count(es_url, alias, 25) == 25
        dead = await read_all(kafka_settings, settings.topic_dlq, expect=2, timeout_s=60)
        await asyncio.sleep(1)
        assert await wait_count(es_url, alias, 25, timeout_s=5) == 25
    assert len(dead) == 2
    by_value = {r.value: headers(r) for r in dead}
    assert by_value[conflicting]["x-dlq-reason"].startswith("rejected by Elasticsearch: 400 document_parsing_exception")
    assert "metadata.amount" in by_value[conflicting]["x-dlq-reason"]
    assert by_value[b"{not json"]["x-dlq-reason"].startswith("not_json: ")
    assert by_value[b"{not json"]["x-dlq-code"] == "not_json"
    assert all(h["x-dlq-service"] == "index" for h in by_value.values())
    assert sample(app, "textpulse_dlq_messages_total", topic=settings.topic_enriched, reason="store_rejected") == 1


@pytest.mark.timeout(600)
async def test_es_outage_loses_and_duplicates_nothing(
    own_es: EsNode, kafka_settings: KafkaSettings, kafka_topics: dict[str, str]
) -> None:
    """Stop Elasticsearch during indexing, start it again: every event indexed once, the consumer resumes."""
    settings = index_settings(
        kafka_settings, kafka_topics, own_es.url, retry_initial_s=0.2, retry_max_s=2.0, retry_deadline_s=20.0
    )
    alias = f"{settings.index_prefix}-events"
    batches = [[orjson.dumps(enriched(i, prefix=f"out{b}")) for i in range(150)] for b in range(3)]
    app = create_app(settings, lag_probe=False, retention=False)
    async with running(app):
        await produce(kafka_settings, settings.topic_enriched, batches[0])
        assert await wait_count(own_es.url, alias, 150) == 150
        await asyncio.to_thread(own_es.stop)
        await produce(kafka_settings, settings.topic_enriched, batches[1])
        # the handler is retrying (not committing) while the node is down
        assert (
            await wait_metric(app, "textpulse_index_bulk_retries_total", 1, timeout_s=60, reason="ConnectionError") >= 1
        )
        # past retry_deadline_s: the handler gives up on this delivery, the batch is nacked (not committed)
        nacked = await wait_metric(
            app,
            "textpulse_messages_failed_total",
            1,
            timeout_s=60,
            topic=settings.topic_enriched,
            reason="es_unavailable",
        )
        assert nacked >= 1
        await asyncio.to_thread(own_es.start)
        assert await wait_count(own_es.url, alias, 300, timeout_s=240) == 300
        await produce(kafka_settings, settings.topic_enriched, batches[2])
        assert await wait_count(own_es.url, alias, 450, timeout_s=120) == 450
        async with es_client(own_es.url) as es:
            await es.indices.refresh(index=alias)
            ids = [h["_id"] for h in (await es.search(index=alias, size=1000, source=False)).body["hits"]["hits"]]
    expected = {orjson.loads(v)["event"]["id"] for batch in batches for v in batch}
    assert len(ids) == len(set(ids)) == 450
    assert set(ids) == expected
    assert await read_all(kafka_settings, settings.topic_dlq, timeout_s=3) == []
