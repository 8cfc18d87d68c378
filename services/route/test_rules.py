"""Unit tests of the routing rules: validation and every decision path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from textpulse.contracts.events import Classification, IntentResult, ModelRef
from textpulse.contracts.routing import Priority

from tests.ci import require_dataset

from .rules import DEFAULT_RULES, VOCABULARIES, RulesError, load_rules

MODEL = ModelRef(name="intent", version="1")


def intent(label: str, score: float = 0.95, *, oos: bool = False) -> IntentResult:
    return IntentResult(label=label, score=score, scores={label: score}, model=MODEL, out_of_scope=oos)


def sentiment(label: str, score: float) -> Classification:
    return Classification(label=label, score=score, scores={label: score}, model=MODEL)


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    return load_rules()


@pytest.mark.parametrize(
    ("label", "queue"),
    [
        ("lost_or_stolen_card", "fraud-and-security"),
        ("report_fraud", "fraud-and-security"),
        ("card_arrival", "cards"),
        ("declined_card_payment", "payments"),
        ("pending_transfer", "transfers"),
        ("verify_my_identity", "account"),
        ("book_flight", "general"),
    ],
)
def test_intent_routes(rules, label: str, queue: str) -> None:  # type: ignore[no-untyped-def]
    d = rules.decide(intent(label), None)
    assert (d.queue, d.triaged) == (queue, False)
    assert d.reasons[0].rule.startswith("route:")
    assert d.reasons[0].scores == {label: 0.95}


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (None, "no_intent"),
        (intent("oos", 0.99), "out_of_scope"),
        (intent("card_arrival", 0.9, oos=True), "out_of_scope"),
        (intent("card_arrival", 0.3), "low_confidence"),
        (intent("launch_rocket", 0.99), "unknown_intent"),
    ],
)
def test_triage_paths(rules, result: IntentResult | None, reason: str) -> None:  # type: ignore[no-untyped-def]
    d = rules.decide(result, None)
    assert d.queue == "human-triage"
    assert d.triaged
    assert d.triage_reason == reason
    assert d.reasons[0].rule == f"triage:{reason}"


@pytest.mark.parametrize(
    ("label", "sent", "priority", "urgent"),
    [
        ("lost_or_stolen_card", sentiment("negative", 0.8), Priority.P1, True),
        ("lost_or_stolen_card", sentiment("neutral", 0.8), Priority.P2, True),
        ("card_arrival", sentiment("negative", 0.7), Priority.P3, False),
        ("card_arrival", sentiment("negative", 0.95), Priority.P1, True),
        ("card_arrival", sentiment("positive", 0.95), Priority.P4, False),
        ("card_arrival", None, Priority.P4, False),
    ],
)
def test_priority(rules, label: str, sent: Classification | None, priority: Priority, urgent: bool) -> None:  # type: ignore[no-untyped-def]
    d = rules.decide(intent(label), sent)
    assert (d.priority, d.urgent) == (priority, urgent)


def test_triaged_message_keeps_sentiment_priority(rules) -> None:  # type: ignore[no-untyped-def]
    d = rules.decide(intent("oos"), sentiment("negative", 0.7))
    assert (d.queue, d.priority) == ("human-triage", Priority.P3)


def _write(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    mutate(doc)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["routes"][0]["intents"].append("teleport_me"), "unknown intent 'teleport_me'"),
        (lambda d: d["routes"][1].update(queue="plastic"), "unknown queue 'plastic'"),
        (lambda d: d["routes"][1]["intents"].append("report_fraud"), "already routed by 'fraud'"),
        (lambda d: d.update(triage_queue="humans"), "triage_queue 'humans'"),
        (lambda d: d.update(vocabularies=["banking78"]), "unknown vocabularies"),
        (lambda d: d["queues"].append("Bad Queue"), "not a valid topic suffix"),
        # A queue added to the rules without its topic in contracts/topics.py.
        (lambda d: d["queues"].append("mortgages"), r"queue 'mortgages' is not declared: add it to SUPPORT_QUEUES"),
        (lambda d: d.update(min_intent_confidence=2), "min_intent_confidence"),
        (lambda d: d.update(extra_key=1), "extra_key"),
    ],
)
def test_bad_rules_are_clear_errors(tmp_path: Path, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, mutate)
    with pytest.raises(RulesError, match=fragment) as err:
        load_rules(path)
    assert str(path) in str(err.value)


def test_the_rules_name_only_declared_queues() -> None:
    from textpulse.contracts.topics import ALL_TOPICS, SUPPORT_QUEUES

    queues = set(load_rules().queues)
    assert queues <= set(SUPPORT_QUEUES), queues - set(SUPPORT_QUEUES)
    # Each one has its topic among the declared ones (what ``textpulse topics create`` makes).
    assert {f"support.queue.{q}" for q in queues} <= {t.name for t in ALL_TOPICS}


def test_route_refuses_to_start_on_an_undeclared_queue(tmp_path: Path) -> None:
    from services.route.app import create_app
    from services.route.settings import RouteSettings

    path = _write(tmp_path, lambda d: d["queues"].append("mortgages"))
    with pytest.raises(RulesError, match="'mortgages' is not declared"):
        create_app(RouteSettings(rules_path=path), real_kafka=False)


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [")
    with pytest.raises(RulesError, match="invalid YAML"):
        load_rules(bad)


def test_vocabularies_match_the_data_sets() -> None:
    from textpulse.datasets import label_names

    require_dataset("banking77")
    table = json.loads(VOCABULARIES.read_text())
    assert table == {"banking77": label_names("banking77"), "clinc150": label_names("clinc150")}


def test_every_banking77_intent_has_a_specific_route(rules) -> None:  # type: ignore[no-untyped-def]
    banking = json.loads(VOCABULARIES.read_text())["banking77"]
    assert [i for i in banking if i not in rules.by_intent] == []
