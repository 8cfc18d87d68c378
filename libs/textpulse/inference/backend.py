"""The backend interface shared by the in-process and the Triton implementation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from textpulse.contracts import ModelRef

from .types import Prediction, Span

Kind = Literal["sequence", "token"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a service knows about one loaded model (from the model's own files)."""

    name: str
    version: str
    kind: Kind
    labels: tuple[str, ...]
    oos_label: str | None = None
    oos_threshold: float | None = None
    max_batch_size: int = 64
    max_length: int = 128

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)


@runtime_checkable
class InferenceBackend(Protocol):
    """Async inference over named models.

    ``classify`` answers one :class:`Prediction` per text (sequence models);
    ``tag`` answers the entity spans of each text with character offsets
    (token models). Both raise ``BackendUnavailable`` (retry later) or
    ``InputRejected`` (poison input); ``start`` raises ``ModelMismatch``.
    """

    name: str

    async def start(self, models: Sequence[str]) -> None:
        """Load or check ``models``; fail fast when one is missing or does not match."""

    async def close(self) -> None:
        """Release connections / threads."""

    async def ready(self) -> bool:
        """True when inference can be served now (readiness probe)."""

    def info(self, model: str) -> ModelInfo:
        """Name, version, labels of a started model."""

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        """Sequence classification of ``texts``."""

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        """Entity spans of each text (character offsets into that text)."""
