"""Event contracts: normalisation, validation, topics declared once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from textpulse.contracts import (
    ALL_TOPICS,
    MAX_TEXT_CHARS,
    ClassifiedEvent,
    EnrichedEvent,
    TextEvent,
    TextEventIn,
    by_name,
    dlq,
    encode,
    normalise_text,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  hello  ", "hello"),
        ("e\u0301", "\u00e9"),  # NFC
        ("a\x00b\x07c", "abc"),
        ("line1\r\nline2\rline3", "line1\nline2\nline3"),
        ("tab\tkept", "tab\tkept"),
        ("\u200dzwj kept", "\u200dzwj kept"),
        ("\x1b[31mred\x1b[0m", "[31mred[0m"),
    ],
)
def test_normalise_text(raw: str, clean: str) -> None:
    assert normalise_text(raw) == clean


def test_text_event_in_fills_id_and_times() -> None:
    event = TextEventIn(source="s", channel="news", text="x").to_event(ingest_time=NOW, fallback_id="gen-1")
    assert event.id == "gen-1"
    assert event.event_time == NOW
    assert event.schema_version == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"channel": "news", "text": "x"},
        {"source": "s", "channel": "news", "text": ""},
        {"source": "s", "channel": "radio", "text": "x"},
        {"source": "s", "channel": "news", "text": "x" * (MAX_TEXT_CHARS + 1)},
        {"source": "s", "channel": "news", "text": "x", "id": "white space"},
        {"source": "s", "channel": "news", "text": "x", "event_time": "2024-01-01T00:00:00"},
        {"source": "s", "channel": "news", "text": "x", "extra": 1},
        {"source": "s", "channel": "news", "text": 5},
        {"source": "s", "channel": "news", "text": "x", "metadata": {"nested": {"a": 1}}},
    ],
)
def test_text_event_in_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TextEventIn.model_validate(bad)


def test_round_trip_and_schema_descriptions() -> None:
    event = TextEvent(id="a", source="s", channel="social", text="t", event_time=NOW, ingest_time=NOW)
    assert TextEvent.model_validate_json(encode(event)) == event
    for model in (TextEvent, ClassifiedEvent, EnrichedEvent):
        props = model.model_json_schema()["properties"]
        assert all("description" in p for p in props.values()), model


def test_topics_declared_once() -> None:
    names = [t.name for t in ALL_TOPICS]
    assert len(names) == len(set(names))
    assert by_name("text.raw").value is TextEvent
    assert dlq("ingest").name in names
    assert by_name("items").topic_configs()["cleanup.policy"] == "compact"
