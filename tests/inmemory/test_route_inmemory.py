"""The route service on FastStream's in-memory ``TestKafkaBroker`` (no broker process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.events import encode
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_REASON

from services.route.app import create_app
from services.route.settings import RouteSettings
from tests.support.route_synth import support_event


@dataclass
class Harness:
    broker: KafkaBroker
    app: Any
    routed: list[Any] = field(default_factory=list)
    fraud: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)


@asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    """Not a fixture: FastStream's lifespan must be entered and left in the same task."""
    settings = RouteSettings()
    broker = make_broker(settings.kafka, service="route")
    app = create_app(settings, broker=broker, real_kafka=False)
    h = Harness(broker, app)

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def routed(msg: KafkaMessage) -> None:
        h.routed.append(msg.raw_message)

    @broker.subscriber(f"{settings.queue_topic_prefix}fraud-and-security", decoder=raw_decoder)
    async def fraud(msg: KafkaMessage) -> None:
        h.fraud.append(msg.raw_message)

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def dlq(msg: KafkaMessage) -> None:
        h.dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), app.start_lifespan_context():
        yield h


async def test_routes_and_dead_letters() -> None:
    async with harness() as h:
        await _routes_and_dead_letters(h)


async def _routes_and_dead_letters(harness: Harness) -> None:
    ok = support_event("m1", "I lost my card, someone is using it!", "lost_or_stolen_card", 0.97, conversation="c1")
    await harness.broker.publish(encode(ok), "text.enriched", key=b"conv:c1")
    await harness.broker.publish(b"{not json", "text.enriched", key=b"x")
    assert len(harness.routed) == 1
    body = orjson.loads(harness.routed[0].value)
    assert (body["queue"], body["priority"], body["conversation_id"]) == ("fraud-and-security", "p2", "c1")
    assert harness.routed[0].key == b"conv:c1"
    assert len(harness.fraud) == 1
    assert len(harness.dlq) == 1
    assert "EnrichedEvent" in dict(harness.dlq[0].headers)[H_REASON].decode()


async def test_ops_routes() -> None:
    async with (
        harness() as h,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://route") as client,
    ):
        assert (await client.get("/health")).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert "textpulse_build_info" in metrics
