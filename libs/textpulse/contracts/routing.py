"""Wire contract of routed support messages (``support.routed`` and ``support.queue.<name>``).

Keyed by conversation id (else user id, else event id) so one conversation
stays in order on one partition of every routing topic.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .events import SCHEMA_VERSION, ShortLabel, TextEvent, WireModel


class Priority(StrEnum):
    """Handling priority, from intent urgency and negative sentiment."""

    P1 = "p1"
    P2 = "p2"
    P3 = "p3"
    P4 = "p4"


class RouteReason(WireModel):
    """One rule that contributed to the decision, with the scores it looked at."""

    rule: ShortLabel = Field(
        description="Rule name: 'route:<name>' of the rules file, 'urgent_intent', 'negative' or 'triage:<reason>'."
    )
    detail: str = Field(description="Human-readable explanation.")
    scores: dict[str, float] = Field(default_factory=dict, description="Model scores the rule used.")


class RoutedMessage(WireModel):
    """Value of ``support.routed`` (and of the per-queue topics)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    event_id: ShortLabel = Field(description="Id of the routed event.")
    conversation_id: str | None = Field(None, description="Support conversation (also the Kafka key when present).")
    queue: ShortLabel = Field(description="Queue chosen, e.g. cards, payments, fraud-and-security, human-triage.")
    priority: Priority = Field(description="p1 (urgent and negative) … p4 (neither).")
    urgent: bool = Field(description="The intent is urgent, or the sentiment is strongly negative.")
    triaged: bool = Field(description="Sent to the human-triage queue (out of scope, low confidence, no intent).")
    intent: str | None = Field(None, description="Intent label of the model (null when absent).")
    intent_score: float | None = Field(None, description="Probability of that intent.")
    sentiment: str | None = Field(None, description="Sentiment label, when classified.")
    sentiment_score: float | None = Field(None, description="Probability of that sentiment.")
    reasons: list[RouteReason] = Field(description="Rules that fired, in evaluation order.")
    rules_version: str = Field(description="Hash of the rules file that decided (traceability).")
    routed_time: AwareDatetime = Field(description="When the route was decided.")
    event: TextEvent = Field(description="The original event, so a queue consumer needs nothing else.")
