"""Enrichment: model entities + cashtags → ``EnrichedEvent`` and one ``EntityMention`` per entity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textpulse.contracts import ClassifiedEvent, EnrichedEvent, EntityMention, utcnow
from textpulse.inference import InferenceBackend

from .entities import cashtags, merge


@dataclass(frozen=True)
class Enricher:
    """Runs the NER model on a batch and applies the entity rules."""

    backend: InferenceBackend
    model: str
    use_cashtags: bool = True

    async def enrich(self, events: Sequence[ClassifiedEvent]) -> list[EnrichedEvent]:
        """One EnrichedEvent per input, in order. Raises the backend's errors unchanged."""
        texts = [c.event.text for c in events]
        spans = await self.backend.tag(self.model, texts)
        ner_model = self.backend.info(self.model).ref
        now = utcnow()
        return [
            EnrichedEvent(
                event=c.event,
                sentiment=c.sentiment,
                topic=c.topic,
                intent=c.intent,
                entities=merge(text, found, cashtags(text) if self.use_cashtags else []),
                ner_model=ner_model,
                enriched_time=now,
            )
            for c, text, found in zip(events, texts, spans, strict=True)
        ]


def mentions(enriched: EnrichedEvent) -> list[EntityMention]:
    """One mention per distinct entity key of the event (repeats of a name in one text count once)."""
    seen: set[str] = set()
    out = []
    for entity in enriched.entities:
        if entity.key in seen:
            continue
        seen.add(entity.key)
        out.append(
            EntityMention(
                event_id=enriched.event.id,
                entity_key=entity.key,
                entity_type=entity.type,
                surface=entity.surface,
                channel=enriched.event.channel,
                source=enriched.event.source,
                sentiment=enriched.sentiment,
                topic=enriched.topic,
                event_time=enriched.event.event_time,
                ingest_time=enriched.event.ingest_time,
            )
        )
    return out
