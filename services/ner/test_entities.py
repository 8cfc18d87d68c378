"""Unit tests of the NER rules: entity keys, cashtags, merging with exact offsets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from textpulse.inference import Span

from .entities import cashtags, entity_key, merge


@pytest.mark.parametrize(
    ("surface", "key"),
    [
        ("Apple Inc.", "apple"),
        ("APPLE INC", "apple"),
        ("Apple", "apple"),
        ("Apple's", "apple"),
        ("Microsoft Corp", "microsoft"),
        ("Microsoft Corporation", "microsoft"),
        ("HSBC Holdings plc", "hsbc holdings"),
        ("Foxconn Co., Ltd.", "foxconn"),
        ("The Goldman Sachs Group, Inc.", "goldman sachs group"),
        ("Goldman  Sachs", "goldman sachs"),
        ("U.S.", "us"),
        ("AT&T Inc.", "at&t"),
        ("Coca-Cola Co", "coca-cola"),
        ("Deutsche Bank AG", "deutsche bank"),
        ("Nestlé S.A.", "nestlé"),
        ("Inc.", "inc"),
        ("The", "the"),
    ],
)
def test_entity_key(surface: str, key: str) -> None:
    assert entity_key(surface) == key


def test_ticker_keys() -> None:
    assert entity_key("$aapl", "TICKER") == "$AAPL"
    assert entity_key("$BRK.B") == "$BRK.B"


def test_cashtags() -> None:
    text = "$AAPL up, $brk.b flat; paid $100 and US$5, $TOOLONGX no, ($NVDA)"
    assert [(s.surface, s.start) for s in cashtags(text)] == [("$AAPL", 0), ("$brk.b", 10), ("$NVDA", 58)]
    for span in cashtags(text):
        assert text[span.start : span.end] == span.surface


def test_merge_rule_wins_and_offsets_slice() -> None:
    text = "Shares of Apple Inc. ($AAPL) rose in New York."
    model = [Span("ORG", 10, 20, "Apple Inc.", 0.9), Span("ORG", 22, 27, "$AAPL", 0.6), Span("LOC", 37, 45, "New York")]
    entities = merge(text, model, cashtags(text))
    assert [(e.surface, e.type, e.origin, e.key) for e in entities] == [
        ("Apple Inc.", "ORG", "model", "apple"),
        ("$AAPL", "TICKER", "rule", "$AAPL"),
        ("New York", "LOC", "model", "new york"),
    ]
    assert all(text[e.start : e.end] == e.surface for e in entities)


def test_merge_drops_spans_that_do_not_slice() -> None:
    assert merge("abc", [Span("ORG", 0, 2, "xy")], []) == []


@given(st.text(max_size=80))
def test_cashtag_offsets_always_slice(text: str) -> None:
    for span in cashtags(text):
        assert text[span.start : span.end] == span.surface
        assert span.surface.startswith("$")


@given(st.text(min_size=1, max_size=40))
def test_key_is_never_empty_and_idempotent_on_case(text: str) -> None:
    key = entity_key(text)
    assert key
    assert entity_key(text.upper()) == entity_key(text.upper().lower().upper())
