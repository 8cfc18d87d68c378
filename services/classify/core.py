"""Classification by channel: which model heads run on which events, and the output records.

``news`` / ``social`` → sentiment + topic; ``support`` → intent (with
out-of-scope) + sentiment; ``review`` → sentiment. Settings map each task of
each channel group to a (model, head): by default the multi-head ``finance``
model (heads ``sentiment`` + ``topic``) serves news/social/review and the
multi-head ``support`` model (heads ``clinc150`` = intent with out-of-scope +
``sentiment``) serves support, so every event costs ONE encoder pass.
Single-task models work too (a model name alone = its primary head). The
batch's events are grouped by model: each model runs once over exactly the
texts that need it and answers every head asked of it from that pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from textpulse.contracts import Channel, ClassifiedEvent, TextEvent, utcnow
from textpulse.inference import HeadSpec, InferenceBackend, ModelMismatch, Prediction

SENTIMENT, TOPIC, INTENT = "sentiment", "topic", "intent"

#: Tasks per channel (each mapped to a model head by settings).
TASKS: dict[Channel, tuple[str, ...]] = {
    Channel.NEWS: (SENTIMENT, TOPIC),
    Channel.SOCIAL: (SENTIMENT, TOPIC),
    Channel.SUPPORT: (INTENT, SENTIMENT),
    Channel.REVIEW: (SENTIMENT,),
}

#: channel -> task -> the model head that answers it
Routes = Mapping[Channel, Mapping[str, HeadSpec]]


def parse_head(value: str) -> HeadSpec:
    """``model`` (its primary head) or ``model:head`` → :class:`HeadSpec`."""
    model, _, head = value.strip().partition(":")
    if not model or (_ and not head):
        msg = f"expected MODEL or MODEL:HEAD, got {value!r}"
        raise ValueError(msg)
    return HeadSpec(model, head or None)


def routes_for(
    sentiment: str,
    topic: str,
    support_intent: str,
    support_sentiment: str,
    labels: Mapping[str, Sequence[str]] | None = None,
) -> dict[Channel, dict[str, HeadSpec]]:
    """Routes of the two channel groups: news/social/review and support; ``labels`` pins a task's labels."""
    labels = labels or {}

    def spec(task: str, value: str) -> HeadSpec:
        parsed = parse_head(value)
        pinned = labels.get(task)
        return HeadSpec(parsed.model, parsed.head, tuple(pinned) if pinned is not None else None)

    financial = {SENTIMENT: spec(SENTIMENT, sentiment), TOPIC: spec(TOPIC, topic)}
    support = {INTENT: spec(INTENT, support_intent), SENTIMENT: spec(SENTIMENT, support_sentiment)}
    return {
        channel: {task: (support if channel == Channel.SUPPORT else financial)[task] for task in tasks}
        for channel, tasks in TASKS.items()
    }


@dataclass(frozen=True)
class Classifier:
    """Runs the channel's model heads on a batch of events, one pass per model."""

    backend: InferenceBackend
    routes: Routes
    top_k: int = 5

    def needed_models(self) -> list[str]:
        return sorted({spec.model for tasks in self.routes.values() for spec in tasks.values()})

    def head_specs(self) -> list[HeadSpec]:
        """Every (model, head) the routes ask for, once (what ``backend.start`` checks)."""
        return list(dict.fromkeys(spec for tasks in self.routes.values() for spec in tasks.values()))

    def head_names(self) -> dict[tuple[str, str], str]:
        """After ``start``: (task, model) -> the name of the head that answers it (metric labels)."""
        return {
            (task, spec.model): self.backend.info(spec.model).head(spec.head).name
            for tasks in self.routes.values()
            for task, spec in tasks.items()
        }

    def check_labels(self) -> None:
        """After ``start``: a task answered by several heads (sentiment of both groups) has one label set.

        The output field (``sentiment``) must mean the same on every channel; ONE ModelMismatch line if not.
        """
        problems = []
        for task in (SENTIMENT, TOPIC, INTENT):
            seen: dict[tuple[str, ...], str] = {}
            for tasks in self.routes.values():
                spec = tasks.get(task)
                if spec is not None:
                    head = self.backend.info(spec.model).head(spec.head)
                    seen.setdefault(head.labels, str(spec))
            if len(seen) > 1:
                problems.append(f"{task} from {' and '.join(seen.values())} has different label sets")
        if problems:
            msg = "heads do not match the settings: " + "; ".join(problems)
            raise ModelMismatch(msg)

    async def classify(self, events: Sequence[TextEvent]) -> list[ClassifiedEvent]:
        """One ClassifiedEvent per event, in order. Raises the backend's errors unchanged."""
        # model -> (event indices in batch order, head names asked of it)
        plan: dict[str, tuple[list[int], dict[str, None]]] = {}
        chosen: list[dict[str, tuple[str, str]]] = []  # per event: task -> (model, head name)
        names: dict[HeadSpec, str] = {}  # resolved head names (None -> the model's primary), once per batch
        for index, event in enumerate(events):
            picks: dict[str, tuple[str, str]] = {}
            for task, spec in self.routes[event.channel].items():
                head = names.get(spec) or names.setdefault(spec, self.backend.info(spec.model).head(spec.head).name)
                indices, heads = plan.setdefault(spec.model, ([], {}))
                if not indices or indices[-1] != index:
                    indices.append(index)
                heads[head] = None
                picks[task] = (spec.model, head)
            chosen.append(picks)
        models = list(plan)
        answers = await asyncio.gather(
            *(self.backend.classify_heads(m, [events[i].text for i in plan[m][0]], list(plan[m][1])) for m in models)
        )
        position = {m: {index: p for p, index in enumerate(plan[m][0])} for m in models}
        by_model = dict(zip(models, answers, strict=True))
        now = utcnow()
        out = []
        for index, event in enumerate(events):
            found: dict[str, Prediction] = {
                task: by_model[model][head][position[model][index]] for task, (model, head) in chosen[index].items()
            }
            sentiment, topic, intent = found.get(SENTIMENT), found.get(TOPIC), found.get(INTENT)
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
