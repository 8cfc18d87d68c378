"""Enriched support events from labelled texts (tests and ``make bench-route``).

Builds ``text.enriched`` values as the classify service would write them for
channel ``support``: an intent (label, score, out-of-scope flag) and
optionally a sentiment, so the route service can be exercised on real
Banking77 / CLINC150 texts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from textpulse.contracts.events import (
    Channel,
    Classification,
    EnrichedEvent,
    IntentResult,
    ModelRef,
    TextEvent,
)

INTENT_MODEL = ModelRef(name="intent", version="synthetic")
SENTIMENT_MODEL = ModelRef(name="sentiment", version="synthetic")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def support_event(
    event_id: str,
    text: str,
    intent: str | None,
    score: float = 0.95,
    *,
    conversation: str | None = None,
    out_of_scope: bool = False,
    sentiment: tuple[str, float] | None = None,
    channel: Channel = Channel.SUPPORT,
    at: datetime = T0,
) -> EnrichedEvent:
    """One enriched event; ``intent=None`` means the event carries no intent result."""
    event = TextEvent(
        id=event_id,
        source="replay:support",
        channel=channel,
        text=text,
        event_time=at,
        ingest_time=at,
        conversation_id=conversation,
    )
    intent_result = (
        IntentResult(
            label=intent,
            score=score,
            scores={intent: score},
            model=INTENT_MODEL,
            out_of_scope=out_of_scope,
        )
        if intent is not None
        else None
    )
    sent = (
        Classification(
            label=sentiment[0], score=sentiment[1], scores={sentiment[0]: sentiment[1]}, model=SENTIMENT_MODEL
        )
        if sentiment
        else None
    )
    return EnrichedEvent(event=event, intent=intent_result, sentiment=sent, enriched_time=at)
