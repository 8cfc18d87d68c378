"""From an enriched support event to its routed records (pure)."""

from __future__ import annotations

from datetime import datetime

from textpulse.contracts.events import Channel, EnrichedEvent, encode
from textpulse.contracts.routing import RoutedMessage
from textpulse.kafka.writer import OutRecord

from .rules import Decision, Rules


def conversation_key(event: EnrichedEvent) -> str:
    """Kafka key of the routing topics: conversation, else user, else event id (order per conversation)."""
    e = event.event
    if e.conversation_id:
        return f"conv:{e.conversation_id}"
    if e.user_id:
        return f"user:{e.user_id}"
    return f"event:{e.id}"


def is_routable(event: EnrichedEvent) -> bool:
    """Only support messages are routed; other channels share the topic and are skipped."""
    return event.event.channel is Channel.SUPPORT


def routed(event: EnrichedEvent, decision: Decision, rules: Rules, now: datetime) -> RoutedMessage:
    """The ``support.routed`` value of one decision."""
    return RoutedMessage(
        event_id=event.event.id,
        conversation_id=event.event.conversation_id,
        queue=decision.queue,
        priority=decision.priority,
        urgent=decision.urgent,
        triaged=decision.triaged,
        intent=event.intent.label if event.intent else None,
        intent_score=event.intent.score if event.intent else None,
        sentiment=event.sentiment.label if event.sentiment else None,
        sentiment_score=event.sentiment.score if event.sentiment else None,
        reasons=list(decision.reasons),
        rules_version=rules.version,
        routed_time=now,
        event=event.event,
    )


def to_record(message: RoutedMessage, key: str) -> OutRecord:
    """Record for ``support.routed`` and the queue topic (same bytes, same key)."""
    headers = {
        "content-type": "application/json",
        "event-id": message.event_id,
        "queue": message.queue,
        "priority": message.priority.value,
    }
    return OutRecord(encode(message), key.encode(), headers)
