"""Routing rules: the YAML file, its validation, and the routing decision — no I/O beyond reading the file.

Decision order (each step adds a reason, so a routed message explains itself):

1. no intent, intent out of scope (``oos`` or the model's own out-of-scope
   flag), an intent outside the vocabularies, or an intent score below
   ``min_intent_confidence`` → ``triage_queue``;
2. otherwise the route listing the intent → its queue (else ``default_queue``);
3. urgency: the route is ``urgent: true``, or sentiment is negative with at
   least ``negative.urgent_min_score``;
4. priority: p1 urgent and negative · p2 urgent · p3 negative · p4 neither
   (negative = a negative label with at least ``negative.min_score``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from textpulse.contracts.events import Classification, IntentResult
from textpulse.contracts.routing import Priority, RouteReason
from textpulse.contracts.topics import SUPPORT_QUEUES
from textpulse.settings import load_yaml_document

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")
VOCABULARIES = Path(__file__).with_name("vocabularies.json")
OOS_LABEL = "oos"
QUEUE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class RulesError(ValueError):
    """The rules file is missing or invalid; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NegativeRule(_Strict):
    labels: list[str] = Field(default_factory=lambda: ["negative", "Bearish"], min_length=1)
    min_score: float = Field(0.6, ge=0, le=1)
    urgent_min_score: float = Field(0.9, ge=0, le=1)


class Route(_Strict):
    name: str = Field(min_length=1, max_length=64)
    queue: str
    urgent: bool = False
    intents: list[str] = Field(min_length=1)


class RulesFile(_Strict):
    """The YAML document, validated structurally and against the vocabularies."""

    version: Literal[1] = 1
    vocabularies: list[str] = Field(min_length=1)
    queues: list[str] = Field(min_length=1)
    triage_queue: str
    default_queue: str
    min_intent_confidence: float = Field(0.5, ge=0, le=1)
    negative: NegativeRule = Field(default_factory=NegativeRule)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> RulesFile:
        problems: list[str] = []
        queues = set(self.queues)
        problems.extend(
            f"queue name {q!r} is not a valid topic suffix (lowercase letters, digits, '-')"
            for q in self.queues
            if not QUEUE_NAME.match(q)
        )
        if len(queues) != len(self.queues):
            problems.append("queues are listed twice")
        # A queue's topic is declared once, with every other topic (textpulse topics create makes it):
        # a queue named only here would be routed to a topic that never exists.
        problems.extend(
            f"queue {q!r} is not declared: add it to SUPPORT_QUEUES in textpulse/contracts/topics.py "
            f"(its topic support.queue.{q}) or remove it from the rules"
            for q in self.queues
            if q not in SUPPORT_QUEUES
        )
        problems.extend(
            f"{name} {value!r} is not one of the queues {sorted(queues)}"
            for name, value in (("triage_queue", self.triage_queue), ("default_queue", self.default_queue))
            if value not in queues
        )
        known = load_vocabulary(self.vocabularies)
        seen: dict[str, str] = {}
        for route in self.routes:
            if route.queue not in queues:
                problems.append(f"route {route.name!r}: unknown queue {route.queue!r} (queues: {sorted(queues)})")
            for intent in route.intents:
                if intent not in known:
                    problems.append(f"route {route.name!r}: unknown intent {intent!r} (not in {self.vocabularies})")
                elif intent in seen:
                    problems.append(f"route {route.name!r}: intent {intent!r} is already routed by {seen[intent]!r}")
                else:
                    seen[intent] = route.name
        if problems:
            raise ValueError("; ".join(problems))
        return self


def load_vocabulary(names: list[str]) -> frozenset[str]:
    """Intent names of the named vocabularies (``vocabularies.json``, generated from the data sets' labels)."""
    table: dict[str, list[str]] = json.loads(VOCABULARIES.read_text("utf-8"))
    unknown = [n for n in names if n not in table]
    if unknown:
        msg = f"unknown vocabularies {unknown} (known: {sorted(table)})"
        raise ValueError(msg)
    return frozenset(i for n in names for i in table[n] if i != OOS_LABEL)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one message goes, and why."""

    queue: str
    priority: Priority
    urgent: bool
    triaged: bool
    reasons: tuple[RouteReason, ...]
    triage_reason: str | None = None


class Rules:
    """Compiled rules: an intent → route table and the thresholds."""

    def __init__(self, spec: RulesFile, version: str) -> None:
        self.spec = spec
        self.version = version
        self.vocabulary = load_vocabulary(spec.vocabularies)
        self.by_intent: dict[str, Route] = {i: r for r in spec.routes for i in r.intents}
        self.queues = tuple(spec.queues)

    def queue_for_intent(self, intent: str) -> str:
        """Queue of an in-vocabulary intent (true-label mapping, used by the bench)."""
        if intent == OOS_LABEL or intent not in self.vocabulary:
            return self.spec.triage_queue
        route = self.by_intent.get(intent)
        return route.queue if route else self.spec.default_queue

    def _negative(self, sentiment: Classification | None) -> float:
        if sentiment is None:
            return 0.0
        neg = self.spec.negative
        best = max((sentiment.scores.get(label, 0.0) for label in neg.labels), default=0.0)
        return max(best, sentiment.score) if sentiment.label in neg.labels else best

    def decide(self, intent: IntentResult | None, sentiment: Classification | None) -> Decision:
        """Apply the rules to one message's model outputs."""
        spec = self.spec
        reasons: list[RouteReason] = []
        triage: str | None = None
        route: Route | None = None
        if intent is None:
            triage, detail, scores = "no_intent", "no intent classification on the event", {}
        else:
            scores = {intent.label: round(intent.score, 4)}
            if intent.out_of_scope or intent.label == OOS_LABEL:
                triage, detail = "out_of_scope", f"intent {intent.label!r} is out of scope"
            elif intent.label not in self.vocabulary:
                triage, detail = "unknown_intent", f"intent {intent.label!r} is not in {spec.vocabularies}"
            elif intent.score < spec.min_intent_confidence:
                triage = "low_confidence"
                detail = f"intent {intent.label!r} score {intent.score:.3f} < {spec.min_intent_confidence}"
            else:
                route = self.by_intent.get(intent.label)
                name = route.name if route else "default"
                detail = f"intent {intent.label!r} → {route.queue if route else spec.default_queue}"
                reasons.append(RouteReason(rule=f"route:{name}", detail=detail, scores=scores))
        if triage is not None:
            reasons.append(RouteReason(rule=f"triage:{triage}", detail=detail, scores=scores))
            queue = spec.triage_queue
        else:
            queue = route.queue if route else spec.default_queue
        neg = self._negative(sentiment)
        negative = neg >= spec.negative.min_score
        urgent_intent = bool(route and route.urgent)
        strongly_negative = neg >= spec.negative.urgent_min_score
        urgent = urgent_intent or strongly_negative
        if urgent_intent:
            reasons.append(
                RouteReason(rule="urgent_intent", detail=f"route {route.name!r} is urgent", scores=scores)  # type: ignore[union-attr]
            )
        if negative:
            level = "strongly negative (urgent)" if strongly_negative else "negative"
            reasons.append(
                RouteReason(rule="negative", detail=f"sentiment {level}: {neg:.3f}", scores={"negative": round(neg, 4)})
            )
        priority = (
            Priority.P1 if urgent and negative else Priority.P2 if urgent else Priority.P3 if negative else Priority.P4
        )
        return Decision(queue, priority, urgent, triage is not None, tuple(reasons), triage)


def load_rules(path: Path | str | None = None) -> Rules:
    """Read, validate and compile a rules file; raise :class:`RulesError` with a clear message."""
    spec, text = load_yaml_document(
        Path(path) if path else DEFAULT_RULES, RulesFile, what="routing rules", error=RulesError
    )
    return Rules(spec, hashlib.sha256(text.encode()).hexdigest()[:12])
