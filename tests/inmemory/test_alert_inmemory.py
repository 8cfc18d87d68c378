"""The alert service on FastStream's in-memory ``TestKafkaBroker`` (no broker process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.events import encode
from textpulse.datasets import load_text_examples
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder

from services.alert.app import create_app
from services.alert.settings import AlertSettings
from tests.ci import require_dataset
from tests.support.alert_synth import surge_scenario

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Harness:
    broker: KafkaBroker
    settings: AlertSettings
    alerts: list[Any] = field(default_factory=list)
    state: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)


@asynccontextmanager
async def harness() -> AsyncIterator[Harness]:
    """Not a fixture: FastStream's lifespan must be entered and left in the same task."""
    settings = AlertSettings(alertmanager_url=None)
    broker = make_broker(settings.kafka, service="alert")
    app = create_app(settings, broker=broker, real_kafka=False)
    h = Harness(broker, settings)

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def alerts(msg: KafkaMessage) -> None:
        h.alerts.append(orjson.loads(msg.raw_message.value))  # type: ignore[union-attr]

    @broker.subscriber(settings.topic_state, decoder=raw_decoder)
    async def state(msg: KafkaMessage) -> None:
        h.state.append(msg.raw_message)

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def dlq(msg: KafkaMessage) -> None:
        h.dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), app.start_lifespan_context():
        yield h


@pytest.fixture(scope="module")
def tweets() -> list[Any]:
    require_dataset("twitter_fin_sentiment")
    return load_text_examples("twitter_fin_sentiment/sent_train.csv")


async def test_surge_fires_and_resolves_in_memory(tweets: list[Any]) -> None:
    plan = surge_scenario(tweets, entity="ACME", start=T0)
    async with harness() as h:
        for p in plan:
            await h.broker.publish(encode(p.mention), h.settings.topic_mentions, key=b"ACME")
        await h.broker.publish(b"\xff not json", h.settings.topic_mentions, key=b"ACME")
    surge = [a for a in h.alerts if a["detector"] == "negative_surge"]
    assert [a["status"] for a in surge] == ["firing", "resolved"]
    burst_ids = {p.mention.event_id for p in plan if p.burst}
    top = surge[0]["evidence"]["top_events"]
    assert {e["sentiment"] for e in top} == {"Bearish"}
    assert sum(e["event_id"] in burst_ids for e in top) >= 3  # a background Bearish tweet may rank too
    assert h.state
    assert len(h.dlq) == 1


async def test_topic_windows_and_evidence_texts_from_text_enriched(tweets: list[Any]) -> None:
    """text.enriched feeds topic windows (key topic:<label>) and the texts of entity evidence."""
    from textpulse.contracts.events import Channel, Classification, EnrichedEvent, ModelRef, TextEvent

    plan = surge_scenario(tweets, entity="ACME", start=T0)
    topic_model = ModelRef(name="topic", version="t")
    async with harness() as h:
        for p in plan:
            m = p.mention
            event = TextEvent(
                id=m.event_id,
                source=m.source,
                channel=Channel.SOCIAL,
                text=p.text,
                event_time=m.event_time,
                ingest_time=m.ingest_time,
            )
            topic = Classification(label="Earnings", score=0.9, scores={"Earnings": 0.9}, model=topic_model)
            enriched = EnrichedEvent(event=event, sentiment=m.sentiment, topic=topic, enriched_time=m.ingest_time)
            await h.broker.publish(encode(enriched), h.settings.topic_enriched, key=m.event_id.encode())
            await h.broker.publish(encode(m), h.settings.topic_mentions, key=b"ACME")
    surge = [a for a in h.alerts if a["detector"] == "negative_surge" and a["status"] == "firing"]
    assert sorted(a["key"] for a in surge) == ["entity:ACME", "topic:Earnings"]
    texts = {p.mention.event_id: p.text for p in plan}
    for alert in surge:
        assert all(e["text"] == texts[e["event_id"]][:500] for e in alert["evidence"]["top_events"])
