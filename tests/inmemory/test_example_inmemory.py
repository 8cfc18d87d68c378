"""The example service (services/_example) on FastStream's in-memory ``TestKafkaBroker``: the pattern to copy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import Channel, TextEvent, encode
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_CATEGORY

from services._example.app import create_app
from services._example.settings import ExampleSettings

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(event_id: str, channel: Channel) -> TextEvent:
    return TextEvent(id=event_id, source="test", channel=channel, text="hello", event_time=T0, ingest_time=T0)


@dataclass
class Harness:
    broker: KafkaBroker
    app: Any
    settings: ExampleSettings
    kept: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)


@asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    """Not a fixture: FastStream's lifespan must be entered and left in the same task."""
    settings = ExampleSettings()
    broker = make_broker(settings.kafka, service="example")
    h = Harness(broker, create_app(settings, broker=broker), settings)

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def kept(msg: KafkaMessage) -> None:
        h.kept.append(msg.raw_message)

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def dlq(msg: KafkaMessage) -> None:
        h.dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), h.app.start_lifespan_context():
        yield h


async def test_keeps_the_configured_channels_and_dead_letters_the_rest() -> None:
    async with harness() as h:
        await h.broker.publish(encode(event("s1", Channel.SUPPORT)), h.settings.topic_in, key=b"k1")
        await h.broker.publish(encode(event("n1", Channel.NEWS)), h.settings.topic_in, key=b"k2")
        await h.broker.publish(b"{not json", h.settings.topic_in, key=b"k3")
    assert [orjson.loads(r.value)["id"] for r in h.kept] == ["s1"]
    assert h.kept[0].key == b"k1"
    assert len(h.dlq) == 1
    assert dict(h.dlq[0].headers)[H_CATEGORY] == b"invalid_record"


async def test_ops_routes() -> None:
    async with (
        harness() as h,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://example") as client,
    ):
        assert (await client.get("/health")).status_code == 200
        assert "textpulse_" in (await client.get("/metrics")).text
