"""Results of the inference client, independent of the backend that produced them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from textpulse.contracts import Classification, IntentResult, ModelRef

#: ``(model, seconds, texts)`` after each successful inference request.
Observer = Callable[[str, float, int], None]
#: ``(model, kind)`` after each failed request (kind: timeout, unavailable, circuit_open, rejected, internal).
ErrorObserver = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class Prediction:
    """One sequence-classification result (what a ``Classification`` is built from)."""

    label: str
    score: float
    scores: dict[str, float]
    model: ModelRef
    out_of_scope: bool = False

    def top_scores(self, k: int) -> dict[str, float]:
        """The ``k`` most probable labels (bounds the size of the wire record for 151 intents)."""
        best = sorted(self.scores.items(), key=lambda kv: kv[1], reverse=True)[:k]
        return {name: round(float(p), 6) for name, p in best}

    def to_classification(self, top_k: int = 5) -> Classification:
        return Classification(
            label=self.label, score=_unit(self.score), scores=self.top_scores(top_k), model=self.model
        )

    def to_intent(self, top_k: int = 5) -> IntentResult:
        return IntentResult(
            label=self.label,
            score=_unit(self.score),
            scores=self.top_scores(top_k),
            model=self.model,
            out_of_scope=self.out_of_scope,
        )


@dataclass(frozen=True, slots=True)
class Span:
    """An entity span found by a token model: ``text[start:end] == surface``."""

    type: str
    start: int
    end: int
    surface: str
    score: float = field(default=1.0)


def _unit(value: float) -> float:
    """Clamp float rounding (softmax can give 1.0000001) into the contract's [0, 1]."""
    return min(1.0, max(0.0, float(value)))
