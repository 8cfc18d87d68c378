"""API keys, rate limit and body cap of the HTTP APIs (textpulse.observability.apikey)."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from starlette.routing import Route
from textpulse.observability import HttpMetricsMiddleware, ServiceMetrics
from textpulse.observability.apikey import (
    ApiGuard,
    ApiSecuritySettings,
    TokenBuckets,
    install_api_guard,
)
from textpulse.observability.http import health_app, metrics_app
from textpulse.observability.logging import JsonFormatter

KEY_A = "tp-key-alpha-0123456789"
KEY_B = "tp-key-bravo-9876543210"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_app(settings: ApiSecuritySettings, clock: FakeClock | None = None) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    @app.get("/v1/thing")
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    metrics = ServiceMetrics("unit")
    app.router.routes.append(Route("/health", health_app(), methods=["GET"]))
    app.router.routes.append(Route("/metrics", metrics_app(metrics), methods=["GET"]))
    install_api_guard(app, settings, clock=clock or FakeClock())
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)
    return app


def settings(**kw: object) -> ApiSecuritySettings:
    return ApiSecuritySettings.model_validate(kw)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(make_app(settings(keys=[KEY_A, KEY_B]))) as c:
        yield c


def test_no_keys_configured_means_open() -> None:
    with TestClient(make_app(settings())) as c:
        assert c.get("/v1/thing").status_code == 200


def test_missing_key_is_401_with_challenge(client: TestClient) -> None:
    r = client.get("/v1/thing")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="textpulse"'
    assert r.json()["error"] == "unauthorized"


def test_wrong_key_is_401_invalid_token(client: TestClient) -> None:
    for headers in ({"Authorization": "Bearer nope"}, {"X-API-Key": KEY_A + "x"}, {"Authorization": f"Basic {KEY_A}"}):
        r = client.get("/v1/thing", headers=headers)
        assert r.status_code == 401, headers
    assert "invalid_token" in client.get("/v1/thing", headers={"X-API-Key": "bad"}).headers["www-authenticate"]


def test_any_configured_key_works_by_either_header(client: TestClient) -> None:
    assert client.get("/v1/thing", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
    assert client.get("/v1/thing", headers={"authorization": f"bearer {KEY_B}"}).status_code == 200
    assert client.get("/v1/thing", headers={"X-API-Key": KEY_B}).status_code == 200


def test_ops_paths_stay_open(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200
    # Refusals are counted by the metrics middleware that wraps the guard.
    client.get("/v1/thing")
    assert 'status="401"' in client.get("/metrics").text


def test_keys_never_reach_logs_or_reprs() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("unit"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        cfg = settings(keys=f"{KEY_A},{KEY_B}", rate_per_s=1, rate_burst=1)
        with TestClient(make_app(cfg)) as c:
            c.get("/v1/thing", headers={"X-API-Key": KEY_A})
            c.get("/v1/thing", headers={"X-API-Key": KEY_A})  # rate-limited: logged with the key's position
            c.get("/v1/thing", headers={"Authorization": f"Bearer {KEY_B}-wrong"})
            c.get("/v1/thing")
        text = stream.getvalue() + repr(cfg) + str(cfg) + cfg.model_dump_json()
        text += repr(ApiGuard(cfg).__dict__)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert "request refused" in text
    assert "key#0" in text
    assert KEY_A not in text
    assert KEY_B not in text


def test_rate_limit_per_client_with_retry_after() -> None:
    clock = FakeClock()
    with TestClient(make_app(settings(keys=[KEY_A, KEY_B], rate_per_s=0.5, rate_burst=2), clock)) as c:
        a, b = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
        assert [c.get("/v1/thing", headers=a).status_code for _ in range(2)] == [200, 200]
        r = c.get("/v1/thing", headers=a)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "2"
        assert c.get("/v1/thing", headers=b).status_code == 200  # each key has its own bucket
        clock.now += 2.0
        assert c.get("/v1/thing", headers=a).status_code == 200
        assert c.get("/v1/thing", headers=a).status_code == 429


def test_rate_limit_by_address_without_keys() -> None:
    clock = FakeClock()
    with TestClient(make_app(settings(rate_per_s=1, rate_burst=1), clock)) as c:
        assert c.get("/v1/thing").status_code == 200
        assert c.get("/v1/thing").status_code == 429
        assert c.get("/health").status_code == 200


def test_token_buckets_are_bounded() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(1.0, 1, max_clients=100, clock=clock)
    for i in range(1000):
        assert buckets.take(f"c{i}") == 0.0
    assert len(buckets) == 100
    assert buckets.take("c999") == pytest.approx(1.0)


def test_body_cap_declared_and_streamed() -> None:
    with TestClient(make_app(settings(max_body_bytes=1024))) as c:
        assert c.post("/v1/echo", content=b"x" * 1024).json() == {"bytes": 1024}
        r = c.post("/v1/echo", content=b"x" * 1025)
        assert r.status_code == 413
        assert r.json()["error"] == "too_large"

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b"y" * 200

        r = c.post("/v1/echo", content=chunks())  # chunked: no Content-Length
        assert r.status_code == 413


def test_body_cap_off() -> None:
    with TestClient(make_app(settings(max_body_bytes=None))) as c:
        assert c.post("/v1/echo", content=b"x" * 100_000).json() == {"bytes": 100_000}


def test_settings_from_env_shared_and_per_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTPULSE_API_KEYS", f" {KEY_A} , {KEY_B} ,")
    monkeypatch.setenv("TEXTPULSE_API_RATE_PER_S", "3")
    monkeypatch.setenv("TEXTPULSE_INGEST_API_RATE_PER_S", "7")
    monkeypatch.setenv("TEXTPULSE_INDEX_API_KEYS", "index-only")
    ingest = ApiSecuritySettings.for_service("ingest")
    assert [k.get_secret_value() for k in ingest.keys] == [KEY_A, KEY_B]
    assert ingest.rate_per_s == 7
    index = ApiSecuritySettings.for_service("index")
    assert [k.get_secret_value() for k in index.keys] == ["index-only"]
    assert index.rate_per_s == 3
    assert isinstance(ingest, ApiSecuritySettings)

    keys_file = tmp_path / "keys"
    keys_file.write_text("from-file-1\n\n  from-file-2  \n")
    monkeypatch.setenv("TEXTPULSE_INDEX_API_KEYS_FILE", str(keys_file))
    guard = ApiGuard(ApiSecuritySettings.for_service("index"))
    assert guard.key_count == 3
    assert guard.match(b"from-file-2") == 2
    assert guard.match(b"from-file-") is None
