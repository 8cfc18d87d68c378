"""Unit tests of classify's routing: which model heads run for which channel, one pass per model and batch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from textpulse.contracts import Channel, TextEvent
from textpulse.inference import HeadSpec, ModelMismatch

from tests.support.inference import FakeBackend

from .core import INTENT, SENTIMENT, TOPIC, Classifier, parse_head, routes_for
from .settings import ClassifySettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SINGLE = routes_for("sentiment", "topic", "intent", "sentiment")


def event(id: str, channel: str, text: str = "shares fall") -> TextEvent:  # noqa: A002
    return TextEvent.model_validate(
        {"id": id, "source": "s", "channel": channel, "text": text, "event_time": NOW, "ingest_time": NOW}
    )


def batch() -> list[TextEvent]:
    return [event("n", "news"), event("s", "social"), event("h", "support", "balance please"), event("r", "review")]


async def started(routes: dict[Channel, dict[str, HeadSpec]], backend: FakeBackend | None = None) -> Classifier:
    classifier = Classifier(backend or FakeBackend(), routes, top_k=2)
    await classifier.backend.start(classifier.needed_models(), classifier.head_specs())
    classifier.check_labels()
    return classifier


async def test_default_settings_run_one_multi_head_pass_per_event() -> None:
    backend = FakeBackend()
    classifier = await started(ClassifySettings().routes(), backend)
    assert classifier.needed_models() == ["finance", "support"]
    out = await classifier.classify(batch())
    # finance once over news + social + review, support once over the support ticket
    assert sorted(backend.calls) == [("finance", 3), ("support", 1)]
    assert [o.event.id for o in out] == ["n", "s", "h", "r"]
    assert [(o.sentiment is not None, o.topic is not None, o.intent is not None) for o in out] == [
        (True, True, False),
        (True, True, False),
        (True, False, True),
        (True, False, False),
    ]
    support = out[2]
    assert support.intent is not None
    assert support.intent.label == "balance"
    assert not support.intent.out_of_scope
    assert support.intent.model.name == "support"
    assert support.sentiment is not None
    assert support.sentiment.model.name == "support"
    assert len(support.intent.scores) == 2  # top-k only
    assert out[0].sentiment is not None
    assert out[0].sentiment.label == "Bearish"
    assert out[0].topic is not None
    assert out[0].topic.model.name == "finance"
    assert out[0].topic.label == "Markets"


async def test_out_of_scope_comes_from_the_intent_head_only() -> None:
    classifier = await started(ClassifySettings().routes())
    out = await classifier.classify([event("h", "support", "what is the weather")])
    assert out[0].intent is not None
    assert out[0].intent.out_of_scope
    assert out[0].intent.label == "oos"


async def test_single_task_models_keep_working_by_configuration() -> None:
    backend = FakeBackend()
    classifier = await started(SINGLE, backend)
    out = await classifier.classify(batch())
    assert sorted(backend.calls) == [("intent", 1), ("sentiment", 4), ("topic", 2)]
    assert classifier.needed_models() == ["intent", "sentiment", "topic"]
    assert out[2].intent is not None
    assert out[2].intent.label == "balance"
    assert out[2].intent.model.name == "intent"


def test_settings_from_env_single_task(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SENTIMENT": "sentiment", "TOPIC": "topic", "SUPPORT_INTENT": "intent"}.items():
        monkeypatch.setenv(f"TEXTPULSE_CLASSIFY_{name}_HEAD", value)
    monkeypatch.setenv("TEXTPULSE_CLASSIFY_SUPPORT_SENTIMENT_HEAD", "sentiment")
    assert ClassifySettings().routes() == SINGLE


async def test_a_missing_head_fails_start_with_one_line() -> None:
    routes = routes_for("finance:sentiment", "finance:topics", "support:clinc150", "support:sentiment")
    classifier = Classifier(FakeBackend(), routes)
    with pytest.raises(ModelMismatch, match=r"finance:topics.*no head 'topics' \(heads: sentiment, topic\)") as err:
        await classifier.backend.start(classifier.needed_models(), classifier.head_specs())
    assert "\n" not in str(err.value)


async def test_pinned_labels_that_differ_fail_start() -> None:
    routes = ClassifySettings(expected_labels={SENTIMENT: ["negative", "neutral", "positive"]}).routes()
    classifier = Classifier(FakeBackend(), routes)
    with pytest.raises(ModelMismatch, match=r"finance:sentiment: labels \[Bearish, Bullish, Neutral\].*differ"):
        await classifier.backend.start(classifier.needed_models(), classifier.head_specs())


async def test_one_task_with_two_label_sets_fails() -> None:
    # support's "sentiment" wired to the topic head by mistake: the output field would mean two things
    with pytest.raises(ModelMismatch, match="sentiment from finance:sentiment and finance:topic"):
        await started(routes_for("finance:sentiment", "finance:topic", "support:clinc150", "finance:topic"))


def test_malformed_heads_are_refused() -> None:
    assert parse_head("finance:topic") == HeadSpec("finance", "topic")
    assert parse_head("sentiment") == HeadSpec("sentiment")
    for bad in ("", ":topic", "finance:"):
        with pytest.raises(ValueError, match="MODEL or MODEL:HEAD"):
            parse_head(bad)
    with pytest.raises(ValueError, match="unknown task"):
        ClassifySettings(expected_labels={"mood": ["a"]})


async def test_empty_batch() -> None:
    backend = FakeBackend()
    assert await Classifier(backend, SINGLE).classify([]) == []
    assert backend.calls == []
    assert {TOPIC, INTENT} <= {t for tasks in SINGLE.values() for t in tasks}
