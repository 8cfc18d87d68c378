"""The backend interface shared by the in-process and the Triton implementation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from textpulse.contracts import ModelRef

from .errors import ModelMismatch
from .types import Prediction, Span

Kind = Literal["sequence", "token"]


@dataclass(frozen=True, slots=True)
class HeadInfo:
    """One classification head of a model: its labels and the output that holds its logits.

    The primary head is named by the task the model was trained for (``sentiment``,
    ``clinc150`` ...) and reads output ``logits``; an extra head of a multi-head model
    is named by its task and reads ``logits_<name>``. Only the primary head carries the
    calibrated out-of-scope threshold (training calibrates the primary task only).
    """

    name: str
    labels: tuple[str, ...]
    output: str = "logits"
    oos_label: str | None = None
    oos_threshold: float | None = None


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """A head a service will ask for: ``model`` / ``head`` (None: the primary) and, optionally, its labels."""

    model: str
    head: str | None = None
    labels: tuple[str, ...] | None = None

    def __str__(self) -> str:
        return f"{self.model}:{self.head}" if self.head else self.model


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
    #: the task the primary head was trained for (its head name); None: unknown, the model's name
    task: str | None = None
    #: extra heads of a multi-head model: (name, labels), in the model's order
    extra_heads: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def ref(self) -> ModelRef:
        return ModelRef(name=self.name, version=self.version)

    @property
    def primary_head(self) -> str:
        return self.task or self.name

    def heads(self) -> dict[str, HeadInfo]:
        """Every head by name, the primary first."""
        primary = HeadInfo(self.primary_head, self.labels, "logits", self.oos_label, self.oos_threshold)
        out = {primary.name: primary}
        for name, labels in self.extra_heads:
            out.setdefault(name, HeadInfo(name, labels, f"logits_{name}"))
        return out

    def head(self, name: str | None) -> HeadInfo:
        """The head called ``name`` (None: the primary); ModelMismatch names the heads there are."""
        heads = self.heads()
        if name is None:
            return heads[self.primary_head]
        try:
            return heads[name]
        except KeyError:
            msg = f"model {self.name!r} (version {self.version}) has no head {name!r}; its heads: {', '.join(heads)}"
            raise ModelMismatch(msg) from None


def check_heads(infos: Mapping[str, ModelInfo], specs: Iterable[HeadSpec]) -> None:
    """Every wanted head exists (sequence models) with the wanted labels; ONE ModelMismatch line otherwise."""
    problems: list[str] = []
    for spec in specs:
        info = infos.get(spec.model)
        if info is None:
            problems.append(f"model {spec.model!r} was not started")
            continue
        if info.kind != "sequence":
            problems.append(f"{spec}: {spec.model!r} is a {info.kind} model, not a classifier")
            continue
        heads = info.heads()
        name = spec.head or info.primary_head
        head = heads.get(name)
        if head is None:
            problems.append(
                f"{spec}: model {spec.model!r} v{info.version} has no head {name!r} (heads: {', '.join(heads)})"
            )
        elif spec.labels is not None and tuple(spec.labels) != head.labels:
            problems.append(
                f"{spec}: labels {_short(head.labels)} of model {spec.model!r} v{info.version} "
                f"differ from the expected {_short(spec.labels)}"
            )
    if problems:
        msg = "heads do not match the settings: " + "; ".join(problems)
        raise ModelMismatch(msg)


def _short(labels: Sequence[str], shown: int = 8) -> str:
    more = f" ... and {len(labels) - shown} more" if len(labels) > shown else ""
    return "[" + ", ".join(labels[:shown]) + more + "]"


@runtime_checkable
class InferenceBackend(Protocol):
    """Async inference over named models.

    ``classify`` answers one :class:`Prediction` per text (sequence models);
    ``classify_heads`` answers that for several heads of one model from ONE
    forward pass (multi-head models; a single-task model has one head, named by
    its task);
    ``tag`` answers the entity spans of each text with character offsets
    (token models). Both raise ``BackendUnavailable`` (retry later) or
    ``InputRejected`` (poison input); ``start`` raises ``ModelMismatch``.
    """

    name: str

    async def start(self, models: Sequence[str], heads: Sequence[HeadSpec] = ()) -> None:
        """Load or check ``models`` and the ``heads`` a service will ask for; fail fast on a mismatch."""

    async def close(self) -> None:
        """Release connections / threads."""

    async def ready(self) -> bool:
        """True when inference can be served now (readiness probe)."""

    def info(self, model: str) -> ModelInfo:
        """Name, version, labels of a started model."""

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        """Sequence classification of ``texts`` (the model's primary head)."""

    async def classify_heads(
        self, model: str, texts: Sequence[str], heads: Sequence[str]
    ) -> dict[str, list[Prediction]]:
        """One forward pass of ``model`` over ``texts``; the predictions of each named head."""

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        """Entity spans of each text (character offsets into that text)."""
