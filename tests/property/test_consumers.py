"""Property: whatever a consumer reads, nothing raises out of its handler and the record ends in one place.

classify, ner, route and alert run as their real apps on FastStream's in-memory broker
(raw_decoder → contract validation → handler); index runs its :class:`Indexer` with a
writer that records documents instead of calling Elasticsearch. Each example publishes one
record (bad bytes, wrong JSON, a mutated contract value, deep or huge JSON, invalid UTF-8,
odd keys and headers) and checks where it went:

- a value the contract rejects goes to the service's DLQ (original bytes, reason header) and
  nowhere else;
- a value the contract accepts goes to the output (or, where the service skips it by design —
  route's non-support events, alert's mentions that raise no alert — nowhere), never to the DLQ.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from hypothesis import HealthCheck, event, given, settings
from pydantic import BaseModel, ValidationError
from textpulse.contracts import ClassifiedEvent, EnrichedEvent, EntityMention, TextEvent
from textpulse.contracts.events import Channel, Classification, ModelRef
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_REASON

from services.alert.app import create_app as create_alert
from services.alert.settings import AlertSettings
from services.classify.app import create_app as create_classify
from services.classify.settings import ClassifySettings
from services.index.bulk import BulkOutcome, BulkWriter
from services.index.documents import BuildOptions, Doc
from services.index.indexer import Indexer
from services.index.metrics import IndexMetrics
from services.ner.app import create_app as create_ner
from services.ner.settings import NerSettings
from services.route.app import create_app as create_route
from services.route.settings import RouteSettings
from tests.support.alert_synth import mention
from tests.support.inference import FakeBackend
from tests.support.route_synth import support_event

from .loop import LoopThread
from .strategies import Case, bad_input, record_headers, record_keys, render

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    # Nothing written into the working tree; every run draws new examples.
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

TEXT_EVENT = TextEvent(
    id="seed",
    source="test",
    channel=Channel.NEWS,
    text="Shares of ACME rose 3% today.",
    event_time=NOW,
    ingest_time=NOW,
)
SENTIMENT = Classification(label="Bullish", score=0.9, model=ModelRef(name="sentiment", version="1"))
CLASSIFIED = ClassifiedEvent(event=TEXT_EVENT, sentiment=SENTIMENT, classified_time=NOW)
ENRICHED = support_event("seed", "I lost my card, someone is using it!", "lost_or_stolen_card", 0.97, conversation="c1")
MENTION = mention(event_id="seed", entity="ACME", label="Bullish", confidence=0.9, event_time=NOW, ingest_time=NOW)


def seed(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


@dataclass
class Harness:
    broker: KafkaBroker
    topic_in: str
    output: str
    dlq: str
    seen: dict[str, list[Any]] = field(default_factory=dict)

    def capture(self, *topics: str) -> None:
        for topic in topics:
            self.seen[topic] = []

            def make(name: str) -> Callable[[KafkaMessage], Any]:
                async def _capture(msg: KafkaMessage) -> None:
                    self.seen[name].append(msg.raw_message)

                return _capture

            self.broker.subscriber(topic, decoder=raw_decoder)(make(topic))


@asynccontextmanager
async def app_harness(app: Any, broker: KafkaBroker, topic_in: str, output: str, dlq: str) -> AsyncIterator[Harness]:
    h = Harness(broker, topic_in, output, dlq)
    h.capture(output, dlq)
    lifespan = getattr(app, "start_lifespan_context", None) or app.lifespan_context
    async with TestKafkaBroker(broker), lifespan():
        yield h


def classify_harness() -> Any:
    s = ClassifySettings(unavailable_backoff_s=0.01)
    broker = make_broker(s.kafka, service="classify")
    app = create_classify(s, broker=broker, backend=FakeBackend(), real_kafka=False)
    return app_harness(app, broker, s.topic_in, s.topic_out, s.topic_dlq)


def ner_harness() -> Any:
    s = NerSettings(unavailable_backoff_s=0.01)
    broker = make_broker(s.kafka, service="ner")
    app = create_ner(s, broker=broker, backend=FakeBackend(), real_kafka=False)
    return app_harness(app, broker, s.topic_in, s.topic_out, s.topic_dlq)


def route_harness() -> Any:
    s = RouteSettings()
    broker = make_broker(s.kafka, service="route")
    return app_harness(create_route(s, broker=broker, real_kafka=False), broker, s.topic_in, s.topic_out, s.topic_dlq)


def alert_harness() -> Any:
    s = AlertSettings(alertmanager_url=None)
    broker = make_broker(s.kafka, service="alert")
    app = create_alert(s, broker=broker, real_kafka=False)
    return app_harness(app, broker, s.topic_mentions, s.topic_out, s.topic_dlq)


@dataclass
class Sent:
    case: Case
    value: bytes
    valid: bool
    channel: str | None


def classify_value(case: Case, model: type[BaseModel]) -> Sent:
    value = render(case)
    try:
        parsed: Any = model.model_validate_json(value)
    except (ValidationError, ValueError):
        return Sent(case, value, False, None)
    event = getattr(parsed, "event", None)
    return Sent(case, value, True, getattr(getattr(event, "channel", None), "value", None))


def destination(before: dict[str, int], h: Harness) -> str:
    out = len(h.seen[h.output]) - before[h.output]
    dlq = len(h.seen[h.dlq]) - before[h.dlq]
    assert out + dlq <= 1, f"record written {out} times and dead-lettered {dlq} times"
    return "out" if out else "dlq" if dlq else "none"


def publish_one(
    loop: LoopThread[Harness], h: Harness, sent: Sent, key: bytes | None, headers: list[tuple[str, bytes]]
) -> str:
    before = {topic: len(records) for topic, records in h.seen.items()}
    str_headers = {name: value.decode("latin-1") for name, value in headers}
    # Raises if the handler let anything escape (TestKafkaBroker re-raises handler errors).
    loop.run(h.broker.publish(sent.value, h.topic_in, key=key, headers=str_headers))
    where = destination(before, h)
    event(f"{sent.case.label.split(':')[0]} -> {where}")
    if where == "dlq":
        rec = h.seen[h.dlq][-1]
        assert rec.value == sent.value, "the DLQ keeps the original bytes"
        assert any(k == H_REASON for k, _ in rec.headers), "the DLQ record says why"
    return where


@pytest.fixture(scope="module")
def classify() -> Iterator[tuple[LoopThread[Harness], Harness]]:
    loop = LoopThread(classify_harness)
    with loop as h:
        yield loop, h


@pytest.fixture(scope="module")
def ner() -> Iterator[tuple[LoopThread[Harness], Harness]]:
    loop = LoopThread(ner_harness)
    with loop as h:
        yield loop, h


@pytest.fixture(scope="module")
def route() -> Iterator[tuple[LoopThread[Harness], Harness]]:
    loop = LoopThread(route_harness)
    with loop as h:
        yield loop, h


@pytest.fixture(scope="module")
def alert() -> Iterator[tuple[LoopThread[Harness], Harness]]:
    loop = LoopThread(alert_harness)
    with loop as h:
        yield loop, h


@PROPERTY
@given(case=bad_input(seed(TEXT_EVENT), ("id",)), key=record_keys, headers=record_headers)
def test_classify_decoding(
    classify: tuple[LoopThread[Harness], Harness], case: Case, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    loop, h = classify
    sent = classify_value(case, TextEvent)
    assert publish_one(loop, h, sent, key, headers) == ("out" if sent.valid else "dlq")


@PROPERTY
@given(case=bad_input(seed(CLASSIFIED), ("event", "id")), key=record_keys, headers=record_headers)
def test_ner_decoding(
    ner: tuple[LoopThread[Harness], Harness], case: Case, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    loop, h = ner
    sent = classify_value(case, ClassifiedEvent)
    assert publish_one(loop, h, sent, key, headers) == ("out" if sent.valid else "dlq")


@PROPERTY
@given(case=bad_input(seed(ENRICHED), ("event", "id")), key=record_keys, headers=record_headers)
def test_route_decoding(
    route: tuple[LoopThread[Harness], Harness], case: Case, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    loop, h = route
    sent = classify_value(case, EnrichedEvent)
    expected = ("out" if sent.channel == "support" else "none") if sent.valid else "dlq"
    assert publish_one(loop, h, sent, key, headers) == expected


@PROPERTY
@given(case=bad_input(seed(MENTION), ("event_id",)), key=record_keys, headers=record_headers)
def test_alert_decoding(
    alert: tuple[LoopThread[Harness], Harness], case: Case, key: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    loop, h = alert
    sent = classify_value(case, EntityMention)
    where = publish_one(loop, h, sent, key, headers)
    if sent.valid:
        assert where in {"out", "none"}  # one mention rarely raises an alert; it is never dead-lettered
    else:
        assert where == "dlq"


@dataclass
class _Record:
    value: bytes | None
    key: bytes | None
    headers: Any
    topic: str = "text.enriched"
    partition: int = 0
    offset: int = 0


class RecordingWriter(BulkWriter):
    """Accepts every document without Elasticsearch."""

    def __init__(self) -> None:
        super().__init__(es=None, chunk_docs=100)  # type: ignore[arg-type]
        self.docs: list[Doc] = []

    async def write(self, docs: Any) -> BulkOutcome:
        self.docs.extend(docs)
        return BulkOutcome(indexed=len(docs))


@PROPERTY
@given(case=bad_input(seed(ENRICHED), ("event", "id")), key=record_keys, headers=record_headers)
async def test_index_decoding(case: Case, key: bytes | None, headers: list[tuple[str, bytes]]) -> None:
    dead: list[Any] = []

    async def publish(*args: Any, **kwargs: Any) -> None:
        dead.append((args, kwargs))

    writer = RecordingWriter()
    indexer = Indexer(
        writer,
        DeadLetters(publish, service="index", topic="dlq.index"),
        IndexMetrics(),
        BuildOptions(prefix="tp", redact=True),
        clock=lambda: NOW,
    )
    sent = classify_value(case, EnrichedEvent)
    await indexer.handle([_Record(sent.value, key, headers)], "events")
    assert len(writer.docs) + len(dead) == 1, (len(writer.docs), len(dead))
    if not sent.valid:
        assert dead, "an invalid record is dead-lettered"


def test_strategies_reach_every_kind() -> None:
    """Guard against a strategy that silently stopped producing some kind of input."""
    labels: set[str] = set()

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(bad_input(seed(TEXT_EVENT), ("id",)))
    def collect(case: Case) -> None:
        labels.add(case.label.split(":")[0])

    collect()
    assert {"valid", "bytes", "json", "odd", "deep-array", "deep-object", "invalid-utf8", "huge-text"} <= labels
    assert labels & {"replace", "remove", "extra"}
