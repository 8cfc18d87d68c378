"""Schema evolution (docs/contracts.md): additive optional fields within one ``schema_version``.

An older consumer reads a newer producer's record (the added field is ignored, at the top
level and in nested models); a newer consumer reads an older record (the added field takes its
default); a new major version is refused; the outside edge (``TextEventIn``) stays strict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError, create_model

from textpulse.inference.consume import Poison, decode

from .errors import ErrorCode, validation_errors
from .events import (
    Classification,
    ClassifiedEvent,
    EnrichedEvent,
    Entity,
    EntityMention,
    ModelRef,
    TextEvent,
    TextEventIn,
    encode,
)
from .recs import Interaction, Item
from .routing import Priority, RoutedMessage
from .topics import ALL_TOPICS

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
EVENT = TextEvent(id="e1", source="s", channel="news", text="$ACME beats estimates", event_time=T, ingest_time=T)
LABEL = Classification(label="Bullish", score=0.9, model=ModelRef(name="sentiment", version="3"))

#: One record of every value model a service reads, as the current build writes it.
RECORDS: dict[type[BaseModel], BaseModel] = {
    TextEvent: EVENT,
    ClassifiedEvent: ClassifiedEvent(event=EVENT, sentiment=LABEL, classified_time=T),
    EnrichedEvent: EnrichedEvent(
        event=EVENT,
        sentiment=LABEL,
        entities=[Entity(surface="$ACME", type="TICKER", start=0, end=5, key="acme", score=1.0, origin="rule")],
        enriched_time=T,
    ),
    EntityMention: EntityMention(
        event_id="e1",
        entity_key="acme",
        entity_type="TICKER",
        surface="$ACME",
        channel="news",
        source="s",
        event_time=T,
        ingest_time=T,
    ),
    RoutedMessage: RoutedMessage(
        event_id="e1",
        queue="cards",
        priority=Priority.P3,
        urgent=False,
        triaged=False,
        reasons=[],
        rules_version="abc",
        routed_time=T,
        event=EVENT,
    ),
    Item: Item(item_id="i1", title="Heat (1995)", genres=["Crime"]),
    Interaction: Interaction(user_id="u1", item_id="i1", action="like", time=T),
}


def _newer(model: type[BaseModel]) -> type[BaseModel]:
    """The same contract one additive release later: a new optional field, same schema_version."""
    newer: type[BaseModel] = create_model(f"{model.__name__}Next", __base__=model, added_later=(str | None, None))
    return newer


def _wire(record: BaseModel) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(encode(record))
    return value


def _nested(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """``model`` and every model its fields contain."""
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _nested(arg, seen)
    return seen


def _types(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", ())
    return [annotation, *(t for a in args for t in _types(a))]


def test_every_topic_value_is_a_tolerant_reader_except_the_client_edge() -> None:
    models: set[type[BaseModel]] = set()
    for spec in ALL_TOPICS:
        if spec.value is not None:
            _nested(spec.value, models)
    strict = {m.__name__ for m in models if m.model_config.get("extra") == "forbid"}
    assert strict == {"TextEventIn"}
    assert {"TextEvent", "Classification", "ModelRef", "Item", "Interaction", "FinancialAlert"} <= {
        m.__name__ for m in models
    }


@pytest.mark.parametrize("model", list(RECORDS), ids=lambda m: m.__name__)
def test_older_consumer_reads_a_newer_producers_record(model: type[BaseModel]) -> None:
    record = RECORDS[model]
    newer = _newer(model).model_validate({**_wire(record), "added_later": "x"})
    raw = encode(newer)
    assert b'"added_later":"x"' in raw
    assert model.model_validate_json(raw) == record  # the added field is ignored, nothing else changes


@pytest.mark.parametrize("model", list(RECORDS), ids=lambda m: m.__name__)
def test_newer_consumer_reads_an_older_record(model: type[BaseModel]) -> None:
    read = _newer(model).model_validate_json(encode(RECORDS[model]))
    assert read.added_later is None  # type: ignore[attr-defined]
    assert _wire(read) == {**_wire(RECORDS[model]), "added_later": None}


def test_fields_added_inside_nested_models_are_ignored_too() -> None:
    value = _wire(RECORDS[EnrichedEvent])
    value["event"]["added_later"] = 1
    value["sentiment"]["model"]["added_later"] = {"nested": True}
    value["entities"][0]["added_later"] = [1, 2]
    assert EnrichedEvent.model_validate_json(orjson.dumps(value)) == RECORDS[EnrichedEvent]


def test_the_enrichment_consumers_decode_tolerates_additive_fields() -> None:
    """classify and NER read through ``inference.consume.decode``: no dead letter for an added field."""
    value = {**_wire(EVENT), "added_later": "x"}
    assert decode(orjson.dumps(value), TextEvent) == EVENT


def test_a_new_major_version_is_refused() -> None:
    value = {**_wire(EVENT), "schema_version": 2}
    with pytest.raises(Poison) as caught:
        decode(orjson.dumps(value), TextEvent)
    assert [e.code for e in caught.value.errors] == [ErrorCode.UNSUPPORTED_SCHEMA_VERSION]
    # Consumers that validate the model directly (route, alert, index, recommend) refuse it too.
    with pytest.raises(ValidationError) as refused:
        TextEvent.model_validate(value)
    assert [(e.code, e.field) for e in validation_errors(refused.value)] == [
        (ErrorCode.NOT_ALLOWED_VALUE, "schema_version")
    ]


def test_the_client_edge_stays_strict() -> None:
    with pytest.raises(ValidationError) as caught:
        TextEventIn.model_validate({"source": "s", "channel": "news", "text": "hi", "conversationId": "c1"})
    assert [(e.code, e.field) for e in validation_errors(caught.value)] == [(ErrorCode.UNKNOWN_FIELD, "conversationId")]


def test_unknown_fields_are_not_written_back() -> None:
    """A consumer that re-publishes what it read (classify copies the event) drops unknown fields."""
    read = TextEvent.model_validate({**_wire(EVENT), "added_later": "x"})
    assert b"added_later" not in encode(ClassifiedEvent(event=read, classified_time=T))
