"""The API guard wired into the ingest and index HTTP APIs (in memory: no broker, no Elasticsearch)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.observability.apikey import ApiSecuritySettings

from services.index.app import create_app as create_index
from services.index.metrics import IndexMetrics
from services.index.settings import IndexSettings
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from tests.helpers import running
from tests.ingest_cases import JSON, ev, js

KEY = "ingest-secret-key-42"


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[httpx.AsyncClient, list[Any]]]:
    settings = IngestSettings()
    broker = make_broker(settings.kafka, service="ingest")
    security = ApiSecuritySettings.model_validate({"keys": KEY, "rate_per_s": 0.001, "rate_burst": 3})
    app = create_ingest(settings, broker=broker, real_kafka=False, api_security=security)
    raw: list[Any] = []

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def capture(msg: KafkaMessage) -> None:
        raw.append(msg.raw_message)

    async with TestKafkaBroker(broker), running(app) as client:
        yield client, raw


async def test_ingest_requires_key_and_limits_rate(ingest: tuple[httpx.AsyncClient, list[Any]]) -> None:
    client, raw = ingest
    body, headers = js(ev()), {"content-type": JSON}
    resp = await client.post("/v1/events", content=body, headers=headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")
    resp = await client.post("/v1/events", content=body, headers={**headers, "X-API-Key": "wrong"})
    assert resp.status_code == 401
    assert raw == []  # refused before anything is written
    ok = {**headers, "Authorization": f"Bearer {KEY}"}
    assert (await client.post("/v1/events", content=body, headers=ok)).status_code == 202
    assert (await client.post("/v1/events/batch", content=js([ev(), ev()]), headers=ok)).status_code == 202
    assert len(raw) == 3
    assert (await client.post("/v1/events", content=body, headers=ok)).status_code == 202
    limited = await client.post("/v1/events", content=body, headers=ok)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    for path in ("/health", "/ready", "/metrics"):
        assert (await client.get(path)).status_code == 200, path
    assert 'status="401"' in (await client.get("/metrics")).text


async def test_ingest_keeps_its_own_body_limits() -> None:
    """Without an explicit cap the guard lets the routes answer their own 413 (same error shape)."""
    settings = IngestSettings()
    broker = make_broker(settings.kafka, service="ingest")
    app = create_ingest(settings, broker=broker, real_kafka=False, api_security=ApiSecuritySettings.model_validate({}))
    async with TestKafkaBroker(broker), running(app) as client:
        big = js(ev(text="a" * (settings.max_event_bytes + 10)))
        resp = await client.post("/v1/events", content=big, headers={"content-type": JSON})
        assert resp.status_code == 413
        assert resp.json()["error"] == "too_large"
        assert app.state.api_guard.settings.max_body_bytes == settings.max_batch_bytes


class _StubES:
    async def search(self, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(body={"hits": {"total": {"value": 0}, "hits": []}})


async def test_index_search_requires_key() -> None:
    settings = IndexSettings()
    security = ApiSecuritySettings.model_validate({"keys": ["k1", "search-key"]})
    app = create_index(
        settings,
        broker=make_broker(settings.kafka, service="index"),
        lag_probe=False,
        retention=False,
        api_security=security,
    )
    # The lifespan (Elasticsearch, Kafka) is not run: the search route only needs these three.
    app.state.es, app.state.settings, app.state.metrics = _StubES(), settings, IndexMetrics()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://index.test") as client:
        assert (await client.get("/v1/search", params={"q": "acme"})).status_code == 401
        assert (await client.get("/openapi.json")).status_code == 401
        resp = await client.get("/v1/search", params={"q": "acme"}, headers={"X-API-Key": "search-key"})
        assert resp.status_code == 200, resp.text
        assert resp.json()["total"] == 0
        assert (await client.get("/health")).status_code == 200
