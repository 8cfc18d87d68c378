"""Property: the ingest edges (HTTP API, ``text.in``) answer every input without crashing or losing it.

The real ingest app (API key required) on FastStream's in-memory broker. HTTP: any body,
content type, ``Idempotency-Key`` or credential gets a 2xx/4xx answer with a JSON error, a
202 means exactly the accepted events were written (each a valid ``TextEvent``), anything
else writes nothing. ``text.in``: each record ends on ``text.raw`` or ``dlq.ingest``, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from hypothesis import HealthCheck, currently_in_test_context, event, given, reject, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from textpulse.contracts import TextEvent, TextEventIn
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_REASON
from textpulse.observability.apikey import ApiSecuritySettings

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.helpers import running
from tests.ingest_cases import ev

from .loop import LoopThread
from .strategies import Case, bad_input, dumps, record_headers, record_keys, render

KEY = "property-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEED = ev(id="seed", conversation_id="conv-1")
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    # Nothing written into the working tree; every run draws new examples.
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
ANSWERS = {202, 400, 401, 413, 415, 422}
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/x-ndjson",
        "text/plain",
        "",
        "application/json\r\nX-Injected: 1",
        "multipart/form-data; boundary=x",
    ]
)


@dataclass
class Harness:
    broker: KafkaBroker
    client: httpx.AsyncClient
    settings: IngestSettings
    raw: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)


@asynccontextmanager
async def ingest_harness() -> AsyncIterator[Harness]:
    s = IngestSettings()
    broker = make_broker(s.kafka, service="ingest")
    security = ApiSecuritySettings(keys=[SecretStr(KEY)])
    app = create_app(s, broker=broker, real_kafka=False, api_security=security)
    raw: list[Any] = []
    dlq: list[Any] = []

    @broker.subscriber(s.topic_out, decoder=raw_decoder)
    async def capture_raw(msg: KafkaMessage) -> None:
        raw.append(msg.raw_message)

    @broker.subscriber(s.topic_dlq, decoder=raw_decoder)
    async def capture_dlq(msg: KafkaMessage) -> None:
        dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), running(app) as client:
        yield Harness(broker, client, s, raw, dlq)


@pytest.fixture(scope="module")
def ingest() -> Iterator[tuple[LoopThread[Harness], Harness]]:
    loop = LoopThread(ingest_harness)
    with loop as h:
        yield loop, h


def post(
    loop: LoopThread[Harness], h: Harness, path: str, body: bytes, headers: dict[str, Any]
) -> tuple[httpx.Response, list[Any]]:
    before = len(h.raw)
    try:
        resp = loop.run(h.client.post(path, content=body, headers=headers))
    except (httpx.LocalProtocolError, UnicodeEncodeError, ValueError):
        reject()  # the client refuses to send such a header at all: nothing reaches the service
    new = h.raw[before:]
    assert resp.status_code in ANSWERS, (resp.status_code, resp.text[:300])
    if resp.status_code == 202:
        answer = resp.json()
        assert len(new) == answer["accepted"], "202: exactly the accepted events are written"
        for rec in new:
            TextEvent.model_validate_json(rec.value)  # everything on text.raw keeps the contract
    else:
        assert new == [], "a refused request writes nothing"
        problem = resp.json()
        # One error shape for every refusal (RFC 9457 plus the shared codes of textpulse.contracts.errors).
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert set(problem) == {"type", "title", "status", "detail", "instance", "error", "errors"}, problem
        assert problem["instance"] == path
        assert problem["status"] == resp.status_code
        assert isinstance(problem["detail"], str)
        assert all(set(e) == {"code", "field", "message"} for e in problem["errors"])
    if currently_in_test_context():
        event(f"{path} -> {resp.status_code}")
    return resp, new


@PROPERTY
@given(
    case=bad_input(SEED, ("id",)),
    ctype=st.just("application/json") | CONTENT_TYPES,
    idem=st.none() | st.binary(max_size=200) | st.text(alphabet=st.characters(codec="ascii"), max_size=200),
)
def test_post_event(
    ingest: tuple[LoopThread[Harness], Harness], case: Case, ctype: str, idem: bytes | str | None
) -> None:
    loop, h = ingest
    headers = {**AUTH, "content-type": ctype}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = render(case)
    resp, new = post(loop, h, "/v1/events", body, headers)
    if resp.status_code == 202 and new:
        (rec,) = new
        sent_id = TextEvent.model_validate_json(rec.value).id
        assert dict(rec.headers)["event-id"].decode() == sent_id


@PROPERTY
@given(
    cases=st.lists(bad_input(SEED, ("id",)), max_size=5),
    ndjson=st.booleans(),
    ctype=st.sampled_from(["application/json", "application/x-ndjson"]) | CONTENT_TYPES,
)
def test_post_batch(ingest: tuple[LoopThread[Harness], Harness], cases: list[Case], ndjson: bool, ctype: str) -> None:
    loop, h = ingest
    parts = [render(c) for c in cases]
    body = b"\n".join(parts) if ndjson else b"[" + b",".join(parts) + b"]"
    resp, _ = post(loop, h, "/v1/events/batch", body, {**AUTH, "content-type": ctype})
    if resp.status_code == 202:
        answer = resp.json()
        # NDJSON skips blank lines (a case rendered as nothing or whitespace is no event).
        events = len([p for p in body.split(b"\n") if p.strip()]) if ndjson else len(cases)
        assert answer["accepted"] + answer["duplicates"] == len(answer["results"]) == events


@PROPERTY
@given(
    credential=st.one_of(
        st.binary(max_size=80).map(lambda v: {"X-API-Key": v}),
        st.binary(max_size=80).map(lambda v: {"Authorization": b"Bearer " + v}),
        st.binary(max_size=80).map(lambda v: {"Authorization": v}),
        st.just({}),
    )
)
def test_wrong_or_missing_key_is_refused(
    ingest: tuple[LoopThread[Harness], Harness], credential: dict[str, bytes]
) -> None:
    loop, h = ingest
    if KEY.encode() in b"".join(credential.values()):
        reject()
    resp, _ = post(loop, h, "/v1/events", dumps(SEED), {**credential, "content-type": "application/json"})
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
def test_ten_megabyte_bodies_are_refused_unread(ingest: tuple[LoopThread[Harness], Harness], path: str) -> None:
    loop, h = ingest
    ten_mb = b'{"text":"' + b"a" * (10 * 1024 * 1024) + b'"}'
    resp, _ = post(loop, h, path, ten_mb, {**AUTH, "content-type": "application/json"})
    assert resp.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"[" + b" " * (1024 * 1024)

    before = len(h.raw)
    streamed = loop.run(h.client.post(path, content=chunks(), headers={**AUTH, "content-type": "application/json"}))
    assert streamed.status_code == 413
    assert len(h.raw) == before


@PROPERTY
@given(case=bad_input(SEED, ("id",)), key=record_keys, headers=record_headers)
def test_text_in_records(
    ingest: tuple[LoopThread[Harness], Harness], case: Case, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    loop, h = ingest
    value = render(case)
    try:
        TextEventIn.model_validate_json(value)
        valid = True
    except (ValidationError, ValueError):
        valid = False
    raw_before, dlq_before = len(h.raw), len(h.dlq)
    loop.run(
        h.broker.publish(value, h.settings.topic_in, key=key, headers={k: v.decode("latin-1") for k, v in headers})
    )
    out, dead = len(h.raw) - raw_before, len(h.dlq) - dlq_before
    assert out + dead == 1, (out, dead)
    if not valid:
        assert dead == 1
        assert h.dlq[-1].value == value
        assert any(k == H_REASON for k, _ in h.dlq[-1].headers)
    event(f"text.in {case.label.split(':')[0]} -> {'raw' if out else 'dlq'}")
