"""Every error of every HTTP API is one RFC 9457 problem body (issue #23, "HTTP edges").

In memory (no broker, no Elasticsearch): the ingest app runs on FastStream's in-memory broker,
index and recommend are built without their lifespans (stubs on ``app.state``), and the consumer
services' FastStream ASGI apps answer their ops routes. Each app is asked for 401, 404, 405, 413,
422, 429 and 500 (a route that raises); each answer must be ``application/problem+json`` with
``type``/``title``/``status``/``detail``/``instance`` and ``errors`` of the shared vocabulary.
Also: the OpenAPI documents (security schemes, problem responses), ``POST /v1/support/similar``
and the client identity behind trusted proxies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from elastic_transport import ConnectionError as EsConnectionError
from faststream.kafka import TestKafkaBroker
from pydantic import SecretStr
from textpulse.contracts.errors import PROBLEM_JSON, PROBLEM_TYPE_PREFIX, ErrorCode
from textpulse.kafka import make_broker
from textpulse.observability.apikey import ApiGuard, ApiSecuritySettings, client_address
from textpulse.observability.http import OpsAsgiFastStream, metrics_app

from services.alert.app import create_app as create_alert
from services.alert.settings import AlertSettings
from services.index.app import create_app as create_index
from services.index.metrics import IndexMetrics
from services.index.settings import IndexSettings
from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.recommend.app import create_app as create_recommend
from services.recommend.settings import RecommendSettings
from services.route.app import create_app as create_route
from services.route.settings import RouteSettings
from tests.ingest_cases import JSON, ev, js

KEY = "problem-test-key"
AUTH = {"X-API-Key": KEY}
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "error", "errors"}
CODES = {c.value for c in ErrorCode}


def assert_problem(resp: httpx.Response, status: int, code: ErrorCode | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = resp.json()
    assert set(body) == PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"] == f"{PROBLEM_TYPE_PREFIX}{body['error']}"
    assert body["instance"] == resp.request.url.path
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert body["errors"], body
    for item in body["errors"]:
        assert set(item) == {"code", "field", "message"}
        assert item["code"] in CODES
    if code is not None:
        assert body["errors"][0]["code"] == code.value, body
    return body


def _security(**extra: Any) -> ApiSecuritySettings:
    return ApiSecuritySettings.model_validate(
        {"keys": KEY, "rate_per_s": 0.001, "rate_burst": 100, "max_body_bytes": 4096, **extra}
    )


def _boom_route(app: Any) -> None:
    async def boom() -> None:
        msg = "a bug"
        raise RuntimeError(msg)

    app.add_api_route("/v1/boom", boom, methods=["GET"], include_in_schema=False)


@asynccontextmanager
async def _client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: Starlette re-raises an unhandled error after answering (for the server's log).
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as client:
        yield client


async def _common_refusals(client: httpx.AsyncClient, protected: str, post_path: str, *, reads_body: bool) -> None:
    """401 (no key, wrong key), 404, 405, 413, 500 of one FastAPI app (``post_path`` reads a body if ``reads_body``)."""
    body = assert_problem(await client.get(protected), 401, ErrorCode.UNAUTHORIZED)
    assert body["error"] == "unauthorized"
    wrong = await client.get(protected, headers={"Authorization": "Bearer nope"})
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert_problem(wrong, 401, ErrorCode.UNAUTHORIZED)
    assert_problem(await client.get("/v1/nothing", headers=AUTH), 404, ErrorCode.NOT_FOUND)
    resp = await client.delete(protected, headers=AUTH)
    assert_problem(resp, 405, ErrorCode.METHOD_NOT_ALLOWED)
    assert "allow" in resp.headers
    # The guard's body cap: declared and chunked bodies alike.
    big = b"{" + b" " * 5000 + b"}"
    assert_problem(
        await client.post(post_path, content=big, headers={**AUTH, "content-type": JSON}), 413, ErrorCode.BODY_TOO_LARGE
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * 1000

    if reads_body:
        # Chunked: cut at the cap while the route reads it (FastAPI's own body parsing included).
        body = assert_problem(
            await client.post(post_path, content=chunks(), headers={**AUTH, "content-type": JSON}),
            413,
            ErrorCode.BODY_TOO_LARGE,
        )
        assert body["errors"][0]["message"] == "the body exceeds 4096 bytes"
    assert_problem(await client.get("/v1/boom", headers=AUTH), 500, ErrorCode.INTERNAL_ERROR)
    # The ops routes stay open; a wrong method there is a problem too.
    assert (await client.get("/health")).status_code == 200
    assert_problem(await client.post("/health"), 405, ErrorCode.METHOD_NOT_ALLOWED)


async def _rate_limited(client: httpx.AsyncClient, path: str, burst: int) -> None:
    for _ in range(burst):
        await client.get(path, headers=AUTH)
    resp = await client.get(path, headers=AUTH)
    assert_problem(resp, 429, ErrorCode.RATE_LIMITED)
    assert int(resp.headers["retry-after"]) >= 1


async def test_ingest_every_status_is_a_problem() -> None:
    settings = IngestSettings()
    broker = make_broker(settings.kafka, service="ingest")
    app = create_ingest(settings, broker=broker, real_kafka=False, api_security=_security(rate_burst=20))
    _boom_route(app)
    async with TestKafkaBroker(broker), app.router.lifespan_context(app), _client(app) as client:
        await _common_refusals(client, "/v1/events", "/v1/events", reads_body=True)
        headers = {**AUTH, "content-type": JSON}
        body = assert_problem(
            await client.post("/v1/events", content=js(ev(text="")), headers=headers), 422, ErrorCode.TEXT_EMPTY
        )
        assert body["errors"][0]["field"] == "text"
        assert_problem(await client.post("/v1/events", content=b"{", headers=headers), 400, ErrorCode.NOT_JSON)
        assert_problem(
            await client.post("/v1/events", content=js(ev()), headers={**AUTH, "content-type": "text/plain"}),
            415,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
        )
        await _rate_limited(client, "/v1/nothing", 20)


# The same mistake sent to /v1/events and (as the only item) to /v1/events/batch.
MISTAKES = [
    ("text_empty", ev(text="")),
    ("text_too_long", ev(text="x" * 10_001)),
    ("unknown_field", ev(colour="red")),
    ("missing_field", {k: v for k, v in ev().items() if k != "source"}),
    ("null_value", ev(text=None)),
    ("wrong_type", ev(text=12)),
    ("not_allowed_value", ev(channel="fax")),
]


@pytest.mark.parametrize(("name", "event"), MISTAKES, ids=[m[0] for m in MISTAKES])
async def test_same_mistake_same_status_and_body_on_both_endpoints(name: str, event: dict[str, Any]) -> None:
    settings = IngestSettings()
    broker = make_broker(settings.kafka, service="ingest")
    app = create_ingest(settings, broker=broker, real_kafka=False, api_security=ApiSecuritySettings())
    async with TestKafkaBroker(broker), app.router.lifespan_context(app), _client(app) as client:
        one = assert_problem(await client.post("/v1/events", content=js(event), headers={"content-type": JSON}), 422)
        many = assert_problem(
            await client.post("/v1/events/batch", content=js([event]), headers={"content-type": JSON}), 422
        )
    assert one["errors"][0]["code"] == name
    # Only the batch position in the field paths (and so in the detail) and the instance differ.
    for item in one["errors"]:
        item["field"] = f"[0].{item['field']}" if item["field"] else "[0]"
    assert many["errors"] == one["errors"]
    assert {k: v for k, v in many.items() if k not in {"detail", "instance", "errors"}} == {
        k: v for k, v in one.items() if k not in {"detail", "instance", "errors"}
    }


class _StubES:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[dict[str, Any]] = []

    async def search(self, **kw: Any) -> SimpleNamespace:
        self.calls.append(kw)
        if self.fail:
            msg = "connection refused"
            raise EsConnectionError(msg)
        return SimpleNamespace(body={"hits": {"total": {"value": 0}, "hits": []}})


def _index_app(security: ApiSecuritySettings, es: _StubES) -> Any:
    settings = IndexSettings()
    app = create_index(
        settings,
        broker=make_broker(settings.kafka, service="index"),
        lag_probe=False,
        retention=False,
        api_security=security,
    )
    # The lifespan (Elasticsearch, Kafka) is not run: the routes only need these three.
    app.state.es, app.state.settings, app.state.metrics = es, settings, IndexMetrics()
    return app


async def test_index_every_status_is_a_problem() -> None:
    es = _StubES()
    app = _index_app(_security(rate_burst=20), es)
    _boom_route(app)
    async with _client(app) as client:
        await _common_refusals(client, "/v1/search", "/v1/support/similar", reads_body=True)
        body = assert_problem(await client.get("/v1/search", params={"size": 0}, headers=AUTH), 422)
        assert body["errors"][0] == {
            "code": "out_of_range",
            "field": "query.size",
            "message": body["errors"][0]["message"],
        }
        body = assert_problem(
            await client.post("/v1/support/similar", json={"text": "hi", "extra": 1}, headers=AUTH), 422
        )
        assert [(e["code"], e["field"]) for e in body["errors"]] == [("too_short", "text"), ("unknown_field", "extra")]
        assert_problem(
            await client.post("/v1/support/similar", content=b"{", headers={**AUTH, "content-type": JSON}),
            422,
            ErrorCode.NOT_JSON,
        )
        cross = await client.get(
            "/v1/search", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01"}, headers=AUTH
        )
        assert assert_problem(cross, 422, ErrorCode.INVALID_VALUE)["errors"][0]["field"] == "query.to"
        await _rate_limited(client, "/v1/nothing", 20)
    down = _index_app(ApiSecuritySettings(), _StubES(fail=True))
    async with _client(down) as client:
        resp = await client.get("/v1/search", params={"q": "acme"})
        body = assert_problem(resp, 503, ErrorCode.UNAVAILABLE)
        assert resp.headers["retry-after"] == "5"
        assert "search backend unavailable" in body["detail"]


async def test_support_similar_post_and_deprecated_get() -> None:
    es = _StubES()
    app = _index_app(ApiSecuritySettings(), es)
    text = "my card was stolen, call me on +44 20 7946 0958"
    async with _client(app) as client:
        posted = await client.post("/v1/support/similar", json={"text": text, "size": 3})
        assert posted.status_code == 200, posted.text
        got = await client.get("/v1/support/similar", params={"text": text, "size": 3})
        assert got.status_code == 200, got.text
        assert posted.json() == got.json() == {"hits": []}
        spec = (await client.get("/openapi.json")).json()
    # Both ask Elasticsearch the same (PII redacted before the query).
    assert es.calls[0] == es.calls[1]
    assert "7946" not in str(es.calls[0])
    similar = spec["paths"]["/v1/support/similar"]
    assert similar["get"]["deprecated"] is True
    assert "deprecated" not in similar["post"]
    assert similar["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("SimilarRequest")


async def test_recommend_every_status_is_a_problem() -> None:
    settings = RecommendSettings()
    app = create_recommend(
        settings,
        broker=make_broker(settings.kafka, service="recommend"),
        lag_probe=False,
        restore_state=False,
        api_security=_security(rate_burst=20),
    )
    _boom_route(app)
    path = "/v1/users/u1/recommendations"
    async with _client(app) as client:
        await _common_refusals(client, path, path, reads_body=False)
        body = assert_problem(await client.get(path, params={"k": 0}, headers=AUTH), 422, ErrorCode.OUT_OF_RANGE)
        assert body["errors"][0]["field"] == "query.k"
        # The catalogue is not loaded (no lifespan): 503 with Retry-After, in the same shape.
        resp = await client.get(path, headers=AUTH)
        assert_problem(resp, 503, ErrorCode.UNAVAILABLE)
        assert resp.headers["retry-after"] == "5"
        await _rate_limited(client, "/v1/nothing", 20)


async def test_consumer_services_ops_routes_answer_problems() -> None:
    """classify, ner, route and alert serve only /health, /ready and /metrics, through FastStream's ASGI app."""
    settings = RouteSettings()
    app = create_route(settings, broker=make_broker(settings.kafka, service="route"), real_kafka=False)
    assert isinstance(app, OpsAsgiFastStream)
    async with _client(app) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.head("/metrics")).status_code == 200
        assert_problem(await client.get("/nothing"), 404, ErrorCode.NOT_FOUND)
        resp = await client.post("/metrics", content=b"x")
        assert_problem(resp, 405, ErrorCode.METHOD_NOT_ALLOWED)
        assert resp.headers["allow"] == "GET, HEAD"
    alert_settings = AlertSettings()
    alert = create_alert(alert_settings, broker=make_broker(alert_settings.kafka, service="alert"), real_kafka=False)
    assert isinstance(alert, OpsAsgiFastStream)
    # Every worker is built by the kit (textpulse.kit), which always answers with OpsAsgiFastStream.
    from services.classify.app import create_app as create_classify
    from services.ner.app import create_app as create_ner

    for create in (create_classify, create_ner):
        assert isinstance(
            create(broker=make_broker(alert_settings.kafka, service="x"), real_kafka=False), OpsAsgiFastStream
        )


async def test_a_failing_ops_endpoint_is_a_500_problem() -> None:
    class Broken:
        def collect(self) -> Any:
            msg = "collector bug"
            raise RuntimeError(msg)

    endpoint = metrics_app(SimpleNamespace(registry=Broken()))  # type: ignore[arg-type]
    app = OpsAsgiFastStream(make_broker(IngestSettings().kafka, service="ingest"), asgi_routes=[("/metrics", endpoint)])  # type: ignore[list-item]
    async with _client(app) as client:
        assert_problem(await client.get("/metrics"), 500, ErrorCode.INTERNAL_ERROR)


@pytest.mark.parametrize(
    "factory",
    [
        lambda: create_ingest(
            IngestSettings(),
            broker=make_broker(IngestSettings().kafka, service="ingest"),
            real_kafka=False,
            api_security=_security(),
        ),
        lambda: _index_app(_security(), _StubES()),
        lambda: create_recommend(
            RecommendSettings(),
            broker=make_broker(RecommendSettings().kafka, service="recommend"),
            lag_probe=False,
            restore_state=False,
            api_security=_security(),
        ),
    ],
    ids=["ingest", "index", "recommend"],
)
def test_openapi_documents_security_and_problems(factory: Callable[[], Any]) -> None:
    spec = factory().openapi()
    components = spec["components"]
    assert components["securitySchemes"]["ApiKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": components["securitySchemes"]["ApiKeyHeader"]["description"],
    }
    assert components["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"
    assert "instance" in components["schemas"]["Problem"]["required"]
    assert "HTTPValidationError" not in components["schemas"]
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    operations = [
        (path, method, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method != "parameters"
    ]
    assert operations
    for path, method, op in operations:
        where = f"{method.upper()} {path}"
        assert op["security"] == [{"ApiKeyHeader": []}, {"BearerAuth": []}], where
        wanted = {"401", "422", "429", "500"} | ({"413"} if "requestBody" in op else set())
        assert wanted <= set(op["responses"]), where
        for status, answer in op["responses"].items():
            if status[0] in "45":
                assert answer["content"] == {PROBLEM_JSON: {"schema": problem_ref}}, (where, status)
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_client_address_from_trusted_hops() -> None:
    def scope(*xff: bytes, peer: str = "10.0.0.9") -> dict[str, Any]:
        return {"client": (peer, 5000), "headers": [(b"x-forwarded-for", v) for v in xff]}

    # 0 hops: the header is ignored (a client could send anything).
    assert client_address(scope(b"1.2.3.4"), 0) == "10.0.0.9"
    # One proxy (an ingress) appended the real peer; the left part came from the client.
    assert client_address(scope(b"6.6.6.6, 203.0.113.7"), 1) == "203.0.113.7"
    # Two proxies (a load balancer, then the ingress); several headers are one list.
    assert client_address(scope(b"6.6.6.6, 203.0.113.7", b"172.16.0.2"), 2) == "203.0.113.7"
    # Fewer entries than trusted hops: not through the proxies, the socket peer is used.
    assert client_address(scope(b"203.0.113.7"), 2) == "10.0.0.9"
    assert client_address(scope(), 1) == "10.0.0.9"


async def test_rate_limit_per_forwarded_client() -> None:
    """Behind one ingress every request has the ingress's address; each client still gets its own bucket."""
    settings = ApiSecuritySettings.model_validate({"rate_per_s": 0.001, "rate_burst": 2, "trusted_proxy_hops": 1})
    guard = ApiGuard(settings)

    def request(client: str, spoof: str = "") -> dict[str, Any]:
        xff = f"{spoof}, {client}" if spoof else client
        return {"client": ("10.1.1.1", 40000), "path": "/v1/search", "headers": [(b"x-forwarded-for", xff.encode())]}

    assert guard.check(request("198.51.100.1")) is None
    assert guard.check(request("198.51.100.1", spoof="1.1.1.1")) is None  # a forged entry does not make a new client
    limited = guard.check(request("198.51.100.1", spoof="2.2.2.2"))
    assert limited is not None
    assert limited.status == 429
    assert guard.check(request("198.51.100.2")) is None  # another client behind the same ingress
    # Without trusted hops the ingress address is the only client.
    shared = ApiGuard(settings.model_copy(update={"trusted_proxy_hops": 0}))
    assert shared.check(request("198.51.100.1")) is None
    assert shared.check(request("198.51.100.2")) is None
    assert shared.check(request("198.51.100.3")) is not None


def test_trusted_hops_setting_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEXTPULSE_API_TRUSTED_PROXY_HOPS", "1")
    monkeypatch.setenv("TEXTPULSE_INDEX_API_TRUSTED_PROXY_HOPS", "2")
    assert ApiSecuritySettings.for_service("ingest").trusted_proxy_hops == 1
    assert ApiSecuritySettings.for_service("index").trusted_proxy_hops == 2
    assert ApiSecuritySettings(keys=[SecretStr("k")]).trusted_proxy_hops == 1
