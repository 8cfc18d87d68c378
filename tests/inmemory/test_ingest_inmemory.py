"""The ingest suite on FastStream's in-memory ``TestKafkaBroker`` (no broker process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_REASON, H_SOURCE_TOPIC
from textpulse.observability.apikey import ApiSecuritySettings

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.helpers import running
from tests.ingest_cases import HTTP_CASES, JSON, KAFKA_CASES, ev, js


@dataclass
class Harness:
    broker: KafkaBroker
    client: Any
    raw: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)


async def ingest_harness(
    settings: IngestSettings, api_security: ApiSecuritySettings | None = None
) -> AsyncIterator[Harness]:
    """The ingest app on the in-memory broker, capturing ``text.raw`` and the DLQ (shared by the ingest test files)."""
    broker = make_broker(settings.kafka, service="ingest")
    app = create_app(settings, broker=broker, real_kafka=False, api_security=api_security)
    h = Harness(broker=broker, client=None)

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def capture_raw(msg: KafkaMessage) -> None:
        h.raw.append(msg.raw_message)

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def capture_dlq(msg: KafkaMessage) -> None:
        h.dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), running(app) as client:
        h.client = client
        yield h


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async for h in ingest_harness(IngestSettings()):
        yield h


@pytest.mark.parametrize(("name", "body", "ctype", "status"), HTTP_CASES, ids=[c[0] for c in HTTP_CASES])
async def test_http_bad_input(harness: Harness, name: str, body: bytes, ctype: str, status: int) -> None:
    headers = {"content-type": ctype} if ctype else {}
    resp = await harness.client.post("/v1/events", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert len(harness.raw) == (1 if status == 202 else 0)
    if status == 422:
        assert resp.json()["error"] == "validation_failed"
        assert resp.json()["detail"]
    # the service keeps answering after every bad input
    assert (await harness.client.get("/health")).status_code == 200


async def test_http_round_trip_key_headers_schema(harness: Harness) -> None:
    resp = await harness.client.post(
        "/v1/events",
        content=js(ev(id="e-1", conversation_id="c-9", text="Caf\u0065\u0301 \x07 ok")),
        headers={"content-type": JSON},
    )
    assert resp.status_code == 202
    assert resp.json()["results"] == [{"id": "e-1", "status": "accepted"}]
    (rec,) = harness.raw
    assert rec.key == b"conv:c-9"
    body = orjson.loads(rec.value)
    assert body["schema_version"] == 1
    assert body["text"] == "Café  ok"  # NFC composed, BEL removed
    hdrs = dict(rec.headers)
    assert hdrs["event-id"] == b"e-1"
    assert hdrs["event-type"] == b"TextEvent"


async def test_duplicate_ids_written_once(harness: Harness) -> None:
    for _ in range(3):
        resp = await harness.client.post("/v1/events", content=js(ev(id="dup-1")), headers={"content-type": JSON})
        assert resp.status_code == 202
    key_resp = await harness.client.post(
        "/v1/events", content=js(ev()), headers={"content-type": JSON, "idempotency-key": "idem-7"}
    )
    again = await harness.client.post(
        "/v1/events", content=js(ev()), headers={"content-type": JSON, "idempotency-key": "idem-7"}
    )
    assert key_resp.json()["accepted"] == 1
    assert again.json()["duplicates"] == 1
    assert [orjson.loads(r.value)["id"] for r in harness.raw] == ["dup-1", "idem-7"]


async def test_batch_json_and_ndjson(harness: Harness) -> None:
    arr = [ev(id=f"b-{i}") for i in range(5)]
    resp = await harness.client.post("/v1/events/batch", content=js(arr), headers={"content-type": JSON})
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 5
    nd = b"\n".join(js(ev(id=f"n-{i}")) for i in range(3)) + b"\n"
    resp = await harness.client.post("/v1/events/batch", content=nd, headers={"content-type": "application/x-ndjson"})
    assert resp.json()["accepted"] == 3
    assert len(harness.raw) == 8


async def test_batch_validation_is_all_or_nothing(harness: Harness) -> None:
    arr = [ev(id="ok-a"), ev(id="bad", channel="pager"), ev(id="ok-b", text="")]
    resp = await harness.client.post("/v1/events/batch", content=js(arr), headers={"content-type": JSON})
    assert resp.status_code == 422
    found = {(e["field"], e["code"]) for e in resp.json()["errors"]}
    assert found == {("[1].channel", "not_allowed_value"), ("[2].text", "text_empty")}
    assert harness.raw == []


async def test_batch_limits(harness: Harness) -> None:
    too_many = [ev(id=f"x-{i}") for i in range(IngestSettings().max_batch_events + 1)]
    resp = await harness.client.post("/v1/events/batch", content=js(too_many), headers={"content-type": JSON})
    assert resp.status_code == 413
    resp = await harness.client.post("/v1/events/batch", content=js([]), headers={"content-type": JSON})
    assert resp.status_code == 422
    # An object where the batch wants an array: a wrong shape, 422 like an array sent to /v1/events.
    resp = await harness.client.post("/v1/events/batch", content=js(ev()), headers={"content-type": JSON})
    assert resp.status_code == 422
    assert resp.json()["errors"][0]["code"] == "not_an_array"


async def test_kafka_edge_counts_add_up(harness: Harness) -> None:
    for _name, value, _dest in KAFKA_CASES:
        await harness.broker.publish(value, "text.in", headers={"content-type": "application/json"})
    want_raw = sum(1 for c in KAFKA_CASES if c[2] == "raw")
    want_dlq = sum(1 for c in KAFKA_CASES if c[2] == "dlq")
    assert len(harness.raw) == want_raw
    assert len(harness.dlq) == want_dlq
    assert len(harness.raw) + len(harness.dlq) == len(KAFKA_CASES)
    for rec in harness.dlq:
        hdrs = {k: v.decode() for k, v in rec.headers}
        assert hdrs[H_REASON]
        assert hdrs[H_SOURCE_TOPIC] == "text.in"
    # DLQ keeps the original bytes
    assert {bytes(r.value) for r in harness.dlq} == {c[1] for c in KAFKA_CASES if c[2] == "dlq"}


async def test_ops_endpoints(harness: Harness) -> None:
    await harness.client.post("/v1/events", content=js(ev(id="m-1")), headers={"content-type": JSON})
    metrics = (await harness.client.get("/metrics")).text
    assert 'textpulse_ingest_events_total{channel="news",outcome="accepted",service="ingest"} 1.0' in metrics
    assert "textpulse_http_requests_total" in metrics
    assert (await harness.client.get("/ready")).status_code == 200
    spec = (await harness.client.get("/openapi.json")).json()
    assert "/v1/events/batch" in spec["paths"]
    assert "TextEventIn" in spec["components"]["schemas"]
