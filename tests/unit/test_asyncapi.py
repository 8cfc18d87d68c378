"""The committed AsyncAPI documents are generated from the contracts, complete, and kept in sync."""

from __future__ import annotations

import json
from typing import Any

import pytest
from textpulse.cli import app
from textpulse.contracts import TextEventIn
from textpulse.contracts.asyncapi import DEAD_LETTER_HEADERS, REQUIRED_DEAD_LETTER_HEADERS, complete
from textpulse.contracts.recs import Interaction, Item
from textpulse.contracts.topics import SERVICES
from textpulse.kafka import dlq
from typer.testing import CliRunner

from tests.conftest import REPO

REF = "#/components/schemas/"


def _generate(service: str, tmp_path: Any) -> dict[str, Any]:
    out = tmp_path / f"{service}.json"
    result = CliRunner().invoke(app, ["asyncapi", service, "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("asyncapi")
    return {service: _generate(service, tmp) for service in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_committed_document_is_fresh(documents: dict[str, dict[str, Any]], service: str) -> None:
    fresh = documents[service]
    committed = json.loads((REPO / f"docs/asyncapi/{service}.json").read_text())
    hint = f"stale: run  textpulse asyncapi {service} --out docs/asyncapi/{service}.json"
    # Servers come from the environment's bootstrap setting; everything else is the contract.
    for part in ("info", "channels", "operations", "components"):
        assert fresh[part] == committed[part], f"{part}: {hint}"


def _payload(doc: dict[str, Any], message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    ref = message["payload"]["$ref"]
    assert ref.startswith(REF), ref
    name = ref.removeprefix(REF)
    return name, doc["components"]["schemas"][name]


@pytest.mark.parametrize("service", SERVICES)
def test_every_message_has_a_real_payload(documents: dict[str, dict[str, Any]], service: str) -> None:
    doc = documents[service]
    messages = doc["components"]["messages"]
    received = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert received, "every service consumes something"
    for channel in doc["channels"].values():
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].rsplit("/", 1)[-1]]
            name, schema = _payload(doc, message)
            assert schema.get("type") != "null", (channel["address"], name)
            if channel["address"].startswith("dlq."):
                assert name == "DeadLetterValue"
                assert message["headers"] == {"$ref": REF + "DeadLetterHeaders"}
            else:
                assert schema["type"] == "object", (channel["address"], name)
                assert schema["properties"], (channel["address"], name)
                assert message["bindings"]["kafka"]["key"]["description"]
    assert "EmptyPayload" not in doc["components"]["schemas"]


def _received(doc: dict[str, Any], topic: str) -> str:
    for channel in doc["channels"].values():
        if channel["address"] == topic:
            (ref,) = channel["messages"].values()
            return _payload(doc, doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]])[0]
    raise AssertionError(topic)


def test_topics_other_teams_write_are_documented(documents: dict[str, dict[str, Any]]) -> None:
    ingest, recommend = documents["ingest"], documents["recommend"]
    assert _received(ingest, "text.in") == "TextEventIn"
    assert ingest["components"]["schemas"]["TextEventIn"]["additionalProperties"] is False  # strict edge
    assert set(ingest["components"]["schemas"]["TextEventIn"]["properties"]) == set(TextEventIn.model_fields)
    assert _received(recommend, "items") == "Item"
    assert set(recommend["components"]["schemas"]["Item"]["properties"]) == set(Item.model_fields)
    assert _received(recommend, "user.interactions") == "Interaction"
    assert set(recommend["components"]["schemas"]["Interaction"]["properties"]) == set(Interaction.model_fields)
    assert _received(documents["classify"], "text.raw") == "TextEvent"
    assert _received(documents["ner"], "text.classified") == "ClassifiedEvent"
    assert _received(documents["route"], "text.enriched") == "EnrichedEvent"
    assert _received(documents["alert"], "entity.mentions") == "EntityMention"
    assert _received(documents["index"], "alerts.financial") == "FinancialAlert"


def test_dead_letter_headers_are_all_documented(documents: dict[str, dict[str, Any]]) -> None:
    declared = {v for k, v in vars(dlq).items() if k.startswith("H_") and isinstance(v, str)}
    assert declared == set(DEAD_LETTER_HEADERS), "document every x-dlq-* header of textpulse.kafka.dlq"
    schema = documents["classify"]["components"]["schemas"]["DeadLetterHeaders"]
    assert set(schema["properties"]) == declared
    assert set(schema["required"]) == set(REQUIRED_DEAD_LETTER_HEADERS)
    assert "unknown_field" in schema["properties"][dlq.H_CODE]["enum"]
    # What dlq_headers writes on every dead letter is what the document calls required.
    rec = type("Rec", (), {"topic": "t", "partition": 0, "offset": 1, "key": None, "value": b"x", "headers": ()})
    assert set(REQUIRED_DEAD_LETTER_HEADERS) == set(dlq.dlq_headers(rec(), service="s", reason="r"))


def test_a_channel_without_a_payload_is_refused() -> None:
    doc = {
        "channels": {
            "x.out": {"address": "not.declared", "messages": {"Message": {"$ref": "#/components/messages/m"}}}
        },
        "components": {
            "messages": {"m": {"payload": {"$ref": REF + "EmptyPayload"}}},
            "schemas": {"EmptyPayload": {"title": "EmptyPayload", "type": "null"}},
        },
    }
    with pytest.raises(ValueError, match=r"no payload for topic 'not\.declared'"):
        complete(doc)


def test_cli_help_and_topics() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    listed = runner.invoke(app, ["topics", "list"])
    names = [json.loads(line)["name"] for line in listed.output.splitlines()]
    assert "text.raw" in names
    assert "dlq.ingest" in names
