"""Unit tests of classify's routing: which models run for which channel, once per batch."""

from __future__ import annotations

from datetime import UTC, datetime

from textpulse.contracts import TextEvent
from textpulse.inference.testing import FakeBackend

from .core import INTENT, SENTIMENT, TOPIC, Classifier

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(id: str, channel: str, text: str = "shares fall") -> TextEvent:  # noqa: A002
    return TextEvent.model_validate(
        {"id": id, "source": "s", "channel": channel, "text": text, "event_time": NOW, "ingest_time": NOW}
    )


async def test_each_model_runs_once_per_batch_on_the_texts_that_need_it() -> None:
    backend = FakeBackend()
    classifier = Classifier(backend, {SENTIMENT: "sentiment", TOPIC: "topic", INTENT: "intent"}, top_k=2)
    events = [event("n", "news"), event("s", "social"), event("h", "support", "balance please"), event("r", "review")]
    out = await classifier.classify(events)
    assert sorted(backend.calls) == [("intent", 1), ("sentiment", 4), ("topic", 2)]
    assert [o.event.id for o in out] == ["n", "s", "h", "r"]
    assert [(o.sentiment is not None, o.topic is not None, o.intent is not None) for o in out] == [
        (True, True, False),
        (True, True, False),
        (True, False, True),
        (True, False, False),
    ]
    support = out[2].intent
    assert support is not None
    assert support.label == "balance"
    assert len(support.scores) == 2  # top-k only
    assert classifier.needed_models() == ["intent", "sentiment", "topic"]


async def test_empty_batch() -> None:
    backend = FakeBackend()
    assert await Classifier(backend, {SENTIMENT: "a", TOPIC: "b", INTENT: "c"}).classify([]) == []
    assert backend.calls == []
