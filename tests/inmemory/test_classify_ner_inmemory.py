"""classify and NER on FastStream's in-memory ``TestKafkaBroker`` with a deterministic fake backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import ClassifiedEvent, EnrichedEvent, EntityMention, TextEvent, encode
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_CODE, H_REASON

from services.classify.app import create_app as create_classify
from services.classify.settings import ClassifySettings
from services.ner.app import create_app as create_ner
from services.ner.settings import NerSettings
from tests.support.inference import FakeBackend

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def event(id: str, channel: str, text: str) -> TextEvent:  # noqa: A002
    return TextEvent(id=id, source="test", channel=channel, text=text, event_time=NOW, ingest_time=NOW)  # type: ignore[arg-type]


@dataclass
class Harness:
    broker: KafkaBroker
    backend: FakeBackend
    app: Any
    topics: dict[str, list[Any]] = field(default_factory=dict)

    def capture(self, topic: str) -> None:
        self.topics[topic] = []

        @self.broker.subscriber(topic, decoder=raw_decoder)
        async def _capture(msg: KafkaMessage) -> None:
            self.topics[topic].append(msg.raw_message)


def sample(h: Harness, name: str, **labels: str) -> float:
    """One sample of the service's own registry (0 when the series does not exist)."""
    metrics = h.app.state.metrics
    return float(metrics.registry.get_sample_value(name, {"service": metrics.service, **labels}) or 0.0)


async def _run(h: Harness) -> AsyncIterator[Harness]:
    async with TestKafkaBroker(h.broker), h.app.lifespan_context():
        yield h


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def classify(fake: FakeBackend) -> AsyncIterator[Harness]:
    settings = ClassifySettings(unavailable_backoff_s=0.01)
    broker = make_broker(settings.kafka, service="classify")
    h = Harness(broker, fake, create_classify(settings, broker=broker, backend=fake, real_kafka=False))
    h.capture(settings.topic_out)
    h.capture(settings.topic_dlq)
    async for value in _run(h):
        yield value


@pytest.fixture
async def ner(fake: FakeBackend) -> AsyncIterator[Harness]:
    settings = NerSettings(unavailable_backoff_s=0.01)
    broker = make_broker(settings.kafka, service="ner")
    h = Harness(broker, fake, create_ner(settings, broker=broker, backend=fake, real_kafka=False))
    for topic in (settings.topic_out, settings.topic_mentions, settings.topic_dlq):
        h.capture(topic)
    async for value in _run(h):
        yield value


async def test_classify_routes_by_channel_and_keeps_key(classify: Harness) -> None:
    cases = [
        event("n1", "news", "Stocks fall on rate fears"),
        event("s1", "support", "What is my balance?"),
        event("r1", "review", "Works fine"),
    ]
    for ev in cases:
        await classify.broker.publish(
            encode(ev), "text.raw", key=f"event:{ev.id}".encode(), headers={"event-id": ev.id}
        )
    out = {ClassifiedEvent.model_validate_json(r.value).event.id: r for r in classify.topics["text.classified"]}
    assert set(out) == {"n1", "s1", "r1"}
    news = ClassifiedEvent.model_validate_json(out["n1"].value)
    assert news.sentiment is not None
    assert news.sentiment.label == "Bearish"
    assert news.topic is not None
    assert news.intent is None
    assert news.sentiment.model.name == "finance"  # default settings: the multi-head finance model
    assert news.sentiment.model.version == "1"
    support = ClassifiedEvent.model_validate_json(out["s1"].value)
    assert support.intent is not None
    assert support.intent.label == "balance"
    assert not support.intent.out_of_scope
    assert support.intent.model.name == "support"
    assert support.sentiment is not None
    assert support.topic is None
    review = ClassifiedEvent.model_validate_json(out["r1"].value)
    assert (review.sentiment is not None, review.topic, review.intent) == (True, None, None)
    assert out["n1"].key == b"event:n1"
    assert dict(out["n1"].headers)["event-type"] == b"ClassifiedEvent"
    assert dict(out["n1"].headers)["event-id"] == b"n1"
    assert not classify.topics["dlq.classify"]


async def test_classify_out_of_scope(classify: Harness) -> None:
    await classify.broker.publish(encode(event("s2", "support", "sing me a song")), "text.raw")
    (rec,) = classify.topics["text.classified"]
    result = ClassifiedEvent.model_validate_json(rec.value)
    assert result.intent is not None
    assert result.intent.out_of_scope


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not_json: "),
        (b"[1, 2]", "not_an_object: the value must be a JSON object, not an array"),
        (
            orjson.dumps({**orjson.loads(encode(event("x", "news", "t"))), "schema_version": 2}),
            "unsupported_schema_version at schema_version: schema_version 2",
        ),
        (orjson.dumps({"schema_version": 1, "id": "x"}), "missing_field at source: the field is required"),
    ],
)
async def test_classify_poison_to_dlq(classify: Harness, value: bytes, reason: str) -> None:
    await classify.broker.publish(value, "text.raw", key=b"k")
    (dead,) = classify.topics["dlq.classify"]
    assert dead.value == value
    headers = {k: v.decode() for k, v in dead.headers}
    assert reason in headers[H_REASON]
    assert headers[H_CODE] == reason.split(" ", 1)[0].rstrip(":")
    assert not classify.topics["text.classified"]
    assert sample(classify, "textpulse_messages_failed_total", topic="text.raw", reason="poison") == 1


async def test_classify_model_reject_isolated_in_batch(classify: Harness, fake: FakeBackend) -> None:
    fake.reject = "POISON"
    batch = [encode(event(f"b{i}", "news", "POISON here" if i == 3 else f"text {i}")) for i in range(6)]
    await classify.broker.publish_batch(*batch, topic="text.raw")
    ids = sorted(ClassifiedEvent.model_validate_json(r.value).event.id for r in classify.topics["text.classified"])
    assert ids == ["b0", "b1", "b2", "b4", "b5"]
    (dead,) = classify.topics["dlq.classify"]
    assert b"model rejected" in dict(dead.headers)[H_REASON]
    assert sample(classify, "textpulse_messages_failed_total", topic="text.raw", reason="model_rejected") == 1
    # model health: the five predictions of each head of the served finance model, by version and head name
    head = {"model": "finance", "version": "1"}
    for name in ("sentiment", "topic"):
        assert sample(classify, "textpulse_model_confidence_count", head=name, **head) == 5
        counted = [
            sample(classify, "textpulse_model_predictions_total", head=name, task=name, label=label, **head)
            for label in classify.backend.infos["finance"].head(name).labels
        ]
        assert sum(counted) == 5


async def test_classify_waits_for_backend(classify: Harness, fake: FakeBackend) -> None:
    fake.fail_times = 3
    await classify.broker.publish(encode(event("w1", "news", "up we go")), "text.raw")
    (rec,) = classify.topics["text.classified"]
    assert ClassifiedEvent.model_validate_json(rec.value).event.id == "w1"
    assert fake.fail_times == 0


def classified(id: str, text: str) -> ClassifiedEvent:  # noqa: A002
    return ClassifiedEvent(event=event(id, "news", text), classified_time=NOW)


async def test_ner_enriches_and_publishes_mentions(ner: Harness) -> None:
    text = "Shares of Apple Inc and $AAPL beat Microsoft, Apple said"
    await ner.broker.publish(encode(classified("e1", text)), "text.classified", key=b"entity:AAPL")
    (rec,) = ner.topics["text.enriched"]
    assert rec.key == b"entity:AAPL"
    enriched = EnrichedEvent.model_validate_json(rec.value)
    assert enriched.event.id == "e1"
    assert enriched.ner_model is not None
    assert enriched.ner_model.name == "ner"
    for e in enriched.entities:
        assert text[e.start : e.end] == e.surface
    assert [(e.surface, e.type, e.key, e.origin) for e in enriched.entities] == [
        ("Apple", "ORG", "apple", "model"),
        ("Inc", "ORG", "inc", "model"),
        ("$AAPL", "TICKER", "$AAPL", "rule"),  # the model's overlapping "AAPL" gives way to the rule
        ("Microsoft", "ORG", "microsoft", "model"),
        ("Apple", "ORG", "apple", "model"),
    ]
    mentions = [EntityMention.model_validate_json(r.value) for r in ner.topics["entity.mentions"]]
    assert [m.entity_key for m in mentions] == ["apple", "inc", "$AAPL", "microsoft"]  # one per key
    for record, mention in zip(ner.topics["entity.mentions"], mentions, strict=True):
        assert record.key == mention.entity_key.encode()
        assert mention.event_id == "e1"
        assert dict(record.headers)["event-id"] == b"e1"
    # model health: the model's four ORG spans under the ner model (head: its primary), the cashtag apart
    model = {"model": "ner", "version": "1", "head": "ner", "task": "entity_type"}
    assert sample(ner, "textpulse_model_predictions_total", label="ORG", **model) == 4
    assert sample(ner, "textpulse_model_confidence_count", model="ner", version="1", head="ner") == 4
    rules = {"model": "rules", "version": "1", "head": "cashtag", "task": "entity_type"}
    assert sample(ner, "textpulse_model_predictions_total", label="TICKER", **rules) == 1


async def test_ner_poison_and_reject(ner: Harness, fake: FakeBackend) -> None:
    fake.reject = "POISON"
    await ner.broker.publish(b"\xff\xfe", "text.classified")
    await ner.broker.publish(encode(classified("p1", "POISON Text")), "text.classified")
    await ner.broker.publish(encode(classified("ok", "Fine Text")), "text.classified")
    reasons = sorted(dict(r.headers)[H_REASON].decode()[:14] for r in ner.topics["dlq.ner"])
    assert reasons == ["invalid_utf8: ", "model rejected"]
    for reason in ("poison", "model_rejected"):
        assert sample(ner, "textpulse_messages_failed_total", topic="text.classified", reason=reason) == 1
    assert [EnrichedEvent.model_validate_json(r.value).event.id for r in ner.topics["text.enriched"]] == ["ok"]
