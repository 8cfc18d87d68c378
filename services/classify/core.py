"""Classification by channel: which models run on which events, and the output records.

``news`` / ``social`` → sentiment + topic; ``support`` → intent (with
out-of-scope) + sentiment; ``review`` → sentiment. Each model runs once per
batch over the texts that need it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from textpulse.contracts import Channel, ClassifiedEvent, TextEvent, utcnow
from textpulse.inference import InferenceBackend, Prediction

SENTIMENT, TOPIC, INTENT = "sentiment", "topic", "intent"

#: Tasks per channel (task names, mapped to model names by settings).
TASKS: dict[Channel, tuple[str, ...]] = {
    Channel.NEWS: (SENTIMENT, TOPIC),
    Channel.SOCIAL: (SENTIMENT, TOPIC),
    Channel.SUPPORT: (INTENT, SENTIMENT),
    Channel.REVIEW: (SENTIMENT,),
}


@dataclass(frozen=True)
class Classifier:
    """Runs the channel's models on a batch of events."""

    backend: InferenceBackend
    models: dict[str, str]  # task -> model name
    top_k: int = 5

    def needed_models(self) -> list[str]:
        return sorted({self.models[t] for tasks in TASKS.values() for t in tasks})

    async def classify(self, events: Sequence[TextEvent]) -> list[ClassifiedEvent]:
        """One ClassifiedEvent per event, in order. Raises the backend's errors unchanged."""
        wanted: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            for task in TASKS[event.channel]:
                wanted.setdefault(task, []).append(index)
        tasks = list(wanted)
        answers = await asyncio.gather(
            *(self.backend.classify(self.models[t], [events[i].text for i in wanted[t]]) for t in tasks)
        )
        by_task: dict[str, dict[int, Prediction]] = {
            task: dict(zip(wanted[task], preds, strict=True)) for task, preds in zip(tasks, answers, strict=True)
        }
        now = utcnow()
        out = []
        for index, event in enumerate(events):
            sentiment = by_task.get(SENTIMENT, {}).get(index)
            topic = by_task.get(TOPIC, {}).get(index)
            intent = by_task.get(INTENT, {}).get(index)
            out.append(
                ClassifiedEvent(
                    event=event,
                    sentiment=sentiment.to_classification(self.top_k) if sentiment else None,
                    topic=topic.to_classification(self.top_k) if topic else None,
                    intent=intent.to_intent(self.top_k) if intent else None,
                    classified_time=now,
                )
            )
        return out
