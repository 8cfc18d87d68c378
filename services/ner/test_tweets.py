"""The NER service on tweets: no link fragment is ever an entity, multi-word organisations stay whole.

No model: a stand-in backend tags words the way the quick news-wire model did on real tweets
(``t.co``, link slugs, handles as organisations; ``Credit`` and ``Suisse`` as two B's) through
the same word splitter and BIO decoder the real backends use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from textpulse.contracts import ClassifiedEvent, TextEvent
from textpulse.inference import Span
from textpulse.inference.backend import ModelInfo
from textpulse.ml.social import url_spans
from textpulse.ml.tokenization import spans_from_tags, split_words

from .core import Enricher, mentions
from .entities import cashtags, merge

NOW = datetime(2026, 12, 6, tzinfo=UTC)
LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG")

TWEETS = [
    "Credit Suisse shares fell after the report https://t.co/bd0xbFGjkT via @Reuters",
    "$BYND - JPMorgan reels in expectations on Beyond Meat https://t.co/bd0xbFGjkT",
    "Goldman Sachs and Deutsche Bank AG upgrade $AAPL www.reuters.com/business/credit-suisse-ubs t.co/XyZ",
    "RT @elonmusk: Tesla to buy back shares https://twitter.com/$TSLA/status/1234",
]


def news_wire_tag(word: str, previous: str) -> str:
    """What the quick model did: capitalised words and anything with a dot are organisations, each a B."""
    if word[:1].isupper() or "." in word or word.startswith("@"):
        return "B-ORG"
    if word in {"Sachs", "Bank"} and previous:
        return "I-ORG"
    return "O"


class TaggingBackend:
    """A token-model backend whose 'model' is :func:`news_wire_tag`, decoded like the real codec."""

    name = "fake"

    def info(self, model: str) -> ModelInfo:
        return ModelInfo(name=model, version="1", kind="token", labels=LABELS)

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        out = []
        for text in texts:
            words = split_words(text)
            tags = [news_wire_tag(w.text, words[i - 1].text if i else "") for i, w in enumerate(words)]
            spans = spans_from_tags(words, tags, [0.9] * len(words), text)
            out.append([Span(s["entity"], s["start"], s["end"], s["text"], s["score"]) for s in spans])
        return out


def classified(index: int, text: str) -> ClassifiedEvent:
    event = TextEvent(id=f"t{index}", source="test", channel="social", text=text, event_time=NOW, ingest_time=NOW)
    return ClassifiedEvent(event=event, classified_time=NOW)


def enrich(texts: Sequence[str]) -> list[list[tuple[str, str, str]]]:
    enricher = Enricher(TaggingBackend(), "ner")
    done = asyncio.run(enricher.enrich([classified(i, t) for i, t in enumerate(texts)]))
    for result in done:
        for entity in result.entities:
            assert result.event.text[entity.start : entity.end] == entity.surface
            assert not any(s < entity.end and entity.start < e for s, e in url_spans(result.event.text))
    return [[(e.surface, e.type, e.key) for e in result.entities] for result in done]


def test_tweets_through_the_enricher() -> None:
    assert enrich(TWEETS) == [
        [("Credit Suisse", "ORG", "credit suisse")],
        [("$BYND", "TICKER", "$BYND"), ("JPMorgan", "ORG", "jpmorgan"), ("Beyond Meat", "ORG", "beyond meat")],
        [
            ("Goldman Sachs", "ORG", "goldman sachs"),
            ("Deutsche Bank AG", "ORG", "deutsche bank"),
            ("$AAPL", "TICKER", "$AAPL"),
        ],
        # RT is capitalised: the stand-in tags it; the handle and the link's $TSLA are not entities
        [("RT", "ORG", "rt"), ("Tesla", "ORG", "tesla")],
    ]


def test_no_tco_mention() -> None:
    done = asyncio.run(Enricher(TaggingBackend(), "ner").enrich([classified(i, t) for i, t in enumerate(TWEETS)]))
    keys = {m.entity_key for result in done for m in mentions(result)}
    assert not keys & {"tco", "t.co", "bd0xbfgjkt", "xyz", "reuters", "elonmusk"}


def test_merge_drops_model_and_rule_spans_on_links() -> None:
    text = "see https://t.co/bd0xbFGjkT and https://x.com/$AAPL for Apple"
    model = [Span("ORG", text.index(s), text.index(s) + len(s), s, 0.5) for s in ("t.co", "bd0xbFGjkT", "Apple")]
    assert [s.surface for s in cashtags(text)] == ["$AAPL"]  # the rule alone would take the link's $AAPL
    assert [(e.surface, e.origin) for e in merge(text, model, cashtags(text))] == [("Apple", "model")]


@given(
    st.lists(
        st.sampled_from(["Credit", "Suisse", "$AAPL", "https://t.co/bd0xbFGjkT", "@Reuters", "t.co/x", "via", "."]),
        max_size=12,
    )
)
def test_no_entity_overlaps_a_link(parts: list[str]) -> None:
    (found,) = enrich([" ".join(parts) or "empty"])
    assert all(key != "tco" for _, _, key in found)
