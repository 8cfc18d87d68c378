"""One error language: the same bad input gets the same code and field over HTTP and in the DLQ.

Each row is sent as the body of ``POST /v1/events`` (ASGI app) and as a ``text.in`` record
(FastStream's in-memory broker); the problem body's first error and the dead letter's
``x-dlq-code`` / ``x-dlq-field`` / reason must agree. Wrong shapes must get the same status on
``/v1/events`` and ``/v1/events/batch``, and every error answer (400/401/405/413/415/422/429)
must have the same RFC 9457 body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from textpulse.contracts import MAX_TEXT_CHARS
from textpulse.contracts.errors import PROBLEM_JSON, ErrorCode, error, reason
from textpulse.kafka.dlq import H_CODE, H_FIELD, H_REASON
from textpulse.observability.apikey import ApiSecuritySettings

from services.ingest.settings import IngestSettings
from tests.ingest_cases import JSON, ev, js
from tests.inmemory.test_ingest_inmemory import Harness, ingest_harness

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "error", "errors"}


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in ingest_harness(IngestSettings(max_event_bytes=64 * 1024)):
        yield h


# (name, body, status over HTTP, code, field) — the Kafka edge must dead-letter with the same code and field.
CASES: list[tuple[str, bytes, int, ErrorCode, str]] = [
    ("too_long", js(ev(text="b" * (MAX_TEXT_CHARS + 1))), 422, ErrorCode.TEXT_TOO_LONG, "text"),
    ("far_too_long", js(ev(text="b" * (4 * MAX_TEXT_CHARS + 1))), 422, ErrorCode.TEXT_TOO_LONG, "text"),
    ("empty", js(ev(text="")), 422, ErrorCode.TEXT_EMPTY, "text"),
    ("blank", js(ev(text=" \n\t ")), 422, ErrorCode.TEXT_EMPTY, "text"),
    ("null_text", js(ev(text=None)), 422, ErrorCode.NULL_VALUE, "text"),
    ("missing_field", js({k: v for k, v in ev().items() if k != "source"}), 422, ErrorCode.MISSING_FIELD, "source"),
    ("unknown_field", js(ev(colour="red")), 422, ErrorCode.UNKNOWN_FIELD, "colour"),
    ("wrong_type", js(ev(text=123)), 422, ErrorCode.WRONG_TYPE, "text"),
    ("nested_wrong_type", js(ev(metadata={"k": [1]})), 422, ErrorCode.WRONG_TYPE, "metadata.k"),
    ("bad_channel", js(ev(channel="fax")), 422, ErrorCode.NOT_ALLOWED_VALUE, "channel"),
    ("invalid_utf8", b'{"source":"x","channel":"news","text":"\xff\xfe"}', 400, ErrorCode.INVALID_UTF8, ""),
    ("not_json", b'{"source": "x", "channel": ', 400, ErrorCode.NOT_JSON, ""),
    ("json_null", b"null", 422, ErrorCode.NOT_AN_OBJECT, ""),
    ("json_array", js([ev()]), 422, ErrorCode.NOT_AN_OBJECT, ""),
    ("json_string", b'"hello"', 422, ErrorCode.NOT_AN_OBJECT, ""),
]


def _assert_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = resp.json()
    assert set(body) == PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["type"] == f"urn:textpulse:problem:{body['error']}"
    assert body["instance"] == resp.request.url.path
    assert isinstance(body["detail"], str)
    assert isinstance(body["title"], str)
    for item in body["errors"]:
        assert set(item) == {"code", "field", "message"}
        assert item["code"] in {c.value for c in ErrorCode}
    return body


@pytest.mark.parametrize(("name", "body", "status", "code", "path"), CASES, ids=[c[0] for c in CASES])
async def test_same_code_over_http_and_in_the_dlq(
    harness: Harness, name: str, body: bytes, status: int, code: ErrorCode, path: str
) -> None:
    resp = await harness.client.post("/v1/events", content=body, headers={"content-type": JSON})
    problem = _assert_problem(resp, status)
    first = problem["errors"][0]
    assert (first["code"], first["field"]) == (code.value, path), problem
    assert problem["detail"].startswith(f"{code.value} at {path}:" if path else f"{code.value}:")

    await harness.broker.publish(body, "text.in", headers={"content-type": "application/json"})
    (dead,) = harness.dlq
    headers = {k: v.decode() for k, v in dead.headers}
    assert (headers[H_CODE], headers[H_FIELD]) == (code.value, path)
    # The same sentence: the dead letter's reason is the HTTP detail.
    assert headers[H_REASON] == problem["detail"]
    assert "NoneType" not in headers[H_REASON]
    assert "surrogates" not in headers[H_REASON]
    assert "items" not in headers[H_REASON]


async def test_empty_value_has_a_code(harness: Harness) -> None:
    await harness.broker.publish(b"", "text.in")
    (dead,) = harness.dlq
    headers = {k: v.decode() for k, v in dead.headers}
    assert headers[H_CODE] == ErrorCode.EMPTY_VALUE.value
    assert headers[H_REASON] == reason([error(ErrorCode.EMPTY_VALUE)])
    resp = await harness.client.post("/v1/events", content=b" ", headers={"content-type": JSON})
    assert _assert_problem(resp, 400)["detail"] == headers[H_REASON]


async def test_too_large_body(harness: Harness) -> None:
    big = js(ev(text="x" * 9000, metadata={f"k{i}": "v" * 2000 for i in range(30)}))
    assert len(big) > 64 * 1024
    problem = _assert_problem(await harness.client.post("/v1/events", content=big, headers={"content-type": JSON}), 413)
    assert problem["errors"][0]["code"] == ErrorCode.BODY_TOO_LARGE.value
    assert problem["error"] == "too_large"


# Wrong shapes and bytes: the same status and code on /v1/events and /v1/events/batch.
SHAPES: list[tuple[str, bytes, bytes, int, ErrorCode]] = [
    # name, body for /v1/events, the same mistake as a batch, status, code
    ("not_json", b"{oops", b"[{oops", 400, ErrorCode.NOT_JSON),
    ("invalid_utf8", b'{"text":"\xff"}', b'[{"text":"\xff"}]', 400, ErrorCode.INVALID_UTF8),
    ("wrong_container", js([ev()]), js(ev()), 422, ErrorCode.NOT_AN_ARRAY),
    ("json_null", b"null", b"null", 422, ErrorCode.NOT_AN_ARRAY),
    ("item_not_object", b"null", b"[null]", 422, ErrorCode.NOT_AN_OBJECT),
    ("item_invalid", js(ev(text="")), js([ev(text="")]), 422, ErrorCode.TEXT_EMPTY),
]


@pytest.mark.parametrize(("name", "one", "batch", "status", "code"), SHAPES, ids=[s[0] for s in SHAPES])
async def test_same_status_on_both_endpoints(
    harness: Harness, name: str, one: bytes, batch: bytes, status: int, code: ErrorCode
) -> None:
    single = _assert_problem(
        await harness.client.post("/v1/events", content=one, headers={"content-type": JSON}), status
    )
    many = _assert_problem(
        await harness.client.post("/v1/events/batch", content=batch, headers={"content-type": JSON}), status
    )
    assert many["errors"][0]["code"] == code.value
    if code is not ErrorCode.NOT_AN_ARRAY:
        assert single["errors"][0]["code"] == code.value
        # Inside a batch the field path is prefixed with the item's position.
        field = single["errors"][0]["field"]
        assert many["errors"][0]["field"] in {field, f"[0].{field}" if field else "[0]"}
    nd = batch.strip(b"[]") if batch.startswith(b"[") else batch
    ndjson = await harness.client.post("/v1/events/batch", content=nd, headers={"content-type": "application/x-ndjson"})
    if code is not ErrorCode.NOT_AN_ARRAY:
        assert _assert_problem(ndjson, status)["errors"][0]["code"] == code.value


async def test_every_refusal_has_the_problem_shape(harness: Harness) -> None:
    c = harness.client
    _assert_problem(await c.post("/v1/events", content=js(ev()), headers={"content-type": "text/plain"}), 415)
    body = _assert_problem(await c.get("/v1/events"), 405)
    assert body["errors"][0]["code"] == ErrorCode.METHOD_NOT_ALLOWED.value
    _assert_problem(await c.post("/v1/nothing", content=b"{}", headers={"content-type": JSON}), 404)
    too_long_key = {"content-type": JSON, "idempotency-key": "k" * 200}
    body = _assert_problem(await c.post("/v1/events", content=js(ev()), headers=too_long_key), 422)
    assert body["errors"][0]["field"] == "header.idempotency-key"
    _assert_problem(await c.post("/v1/events/batch", content=b"[]", headers={"content-type": JSON}), 422)


async def test_guard_refusals_have_the_problem_shape() -> None:
    api = ApiSecuritySettings(keys=[SecretStr("s3cret")], rate_per_s=0.001, rate_burst=2, max_body_bytes=2048)
    async for h in ingest_harness(IngestSettings(), api):
        body = _assert_problem(await h.client.post("/v1/events", content=js(ev()), headers={"content-type": JSON}), 401)
        assert body["errors"][0]["code"] == ErrorCode.UNAUTHORIZED.value
        auth = {"content-type": JSON, "authorization": "Bearer s3cret"}
        # The guard's body cap (the over-8-MiB refusal of a default deployment) answers like the route's 413.
        body = _assert_problem(await h.client.post("/v1/events", content=b"x" * 4096, headers=auth), 413)
        assert body["errors"][0]["code"] == ErrorCode.BODY_TOO_LARGE.value
        for _ in range(3):
            resp = await h.client.post("/v1/events", content=orjson.dumps([1]), headers=auth)
        body = _assert_problem(resp, 429)
        assert body["errors"][0]["code"] == ErrorCode.RATE_LIMITED.value
