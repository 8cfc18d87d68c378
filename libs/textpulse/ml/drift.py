"""Model health: confidence and label mix of live predictions against the training distribution.

The exporter (:mod:`textpulse.ml.export`) writes ``reference.json`` into each model version: per head,
the label mix and the confidence histogram (max softmax, :data:`CONFIDENCE_EDGES`) of the model's own
predictions on its dev split. A service keeps a sliding window of its recent predictions per head
(:class:`DriftWindow`) and compares it with that reference by the population stability index
(:func:`psi`). Everything here is pure numpy over per-batch count vectors: a batch costs one
``np.bincount`` per head, never a Python loop over its predictions.

Models exported before ``reference.json`` existed have no reference: :func:`load_reference` answers
``None`` and no drift gauge is exported for them (confidence and label counts still are).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

REFERENCE_FILE = "reference.json"
REFERENCE_FORMAT = 1
#: Ten equal confidence bins on [0, 1]: the reference histogram and the PSI of confidence use these.
CONFIDENCE_EDGES: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
#: Buckets (upper bounds) of the ``textpulse_model_confidence`` histogram: the PSI bins plus a finer top end,
#: where a well-trained classifier puts most of its predictions.
CONFIDENCE_BUCKETS: tuple[float, ...] = (*CONFIDENCE_EDGES[1:-1], 0.95, 0.99, 1.0)
#: Share floor of an empty bin (PSI takes a log of each share).
PSI_EPSILON = 1e-4
#: Conventional PSI reading: below 0.1 stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one.
PSI_WARN, PSI_ALERT = 0.1, 0.25


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPSILON) -> float:
    """Population stability index ``sum((a - e) * ln(a / e))`` of two count (or share) vectors.

    Both are normalised to shares; empty bins get the floor ``eps`` so that a label absent on one
    side weighs in with a large but finite term.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        msg = f"psi needs two non-empty vectors of the same shape, got {e.shape} and {a.shape}"
        raise ValueError(msg)
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def confidence_counts(confidences: np.ndarray | Sequence[float]) -> np.ndarray:
    """Counts per bin of :data:`CONFIDENCE_EDGES` (1.0 falls in the last bin)."""
    values = np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0)
    bins = len(CONFIDENCE_EDGES) - 1
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins).astype(np.int64)


def label_counts(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Counts of ``labels`` in the order of ``names``; a label outside ``names`` is not counted."""
    position = {name: i for i, name in enumerate(names)}
    index = np.fromiter((position.get(label, -1) for label in labels), dtype=np.int64, count=len(labels))
    return np.bincount(index[index >= 0], minlength=len(names)).astype(np.int64)


@dataclass(frozen=True)
class HeadReference:
    """One head's training-time distribution: label counts (in ``labels`` order) and confidence counts."""

    labels: tuple[str, ...]
    label_counts: np.ndarray
    confidence_counts: np.ndarray | None
    samples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "labels": dict(zip(self.labels, (int(c) for c in self.label_counts), strict=True)),
            "confidence": None
            if self.confidence_counts is None
            else {"edges": list(CONFIDENCE_EDGES), "counts": [int(c) for c in self.confidence_counts]},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeadReference:
        labels = tuple(str(k) for k in data["labels"])
        counts = np.asarray([int(v) for v in data["labels"].values()], dtype=np.int64)
        confidence = data.get("confidence")
        conf_counts = None
        if confidence is not None:
            if tuple(float(e) for e in confidence["edges"]) != CONFIDENCE_EDGES:
                msg = f"confidence edges {confidence['edges']} differ from {list(CONFIDENCE_EDGES)}"
                raise ValueError(msg)
            conf_counts = np.asarray([int(c) for c in confidence["counts"]], dtype=np.int64)
        return cls(labels, counts, conf_counts, int(data.get("samples", int(counts.sum()))))


def head_reference(
    labels: Sequence[str], predicted: Sequence[str], confidences: Sequence[float] | np.ndarray | None
) -> HeadReference:
    """The reference of one head from its dev-split predictions (what the exporter saves)."""
    conf = None if confidences is None else confidence_counts(confidences)
    return HeadReference(tuple(labels), label_counts(predicted, labels), conf, len(predicted))


def write_reference(version_dir: Path, heads: Mapping[str, HeadReference], source: str) -> Path:
    """``<version_dir>/reference.json`` with every head's reference."""
    path = version_dir / REFERENCE_FILE
    doc = {
        "format": REFERENCE_FORMAT,
        "source": source,
        "heads": {name: ref.to_json() for name, ref in heads.items()},
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", "utf-8")
    return path


def load_reference(version_dir: Path) -> dict[str, HeadReference] | None:
    """Every head's reference from ``reference.json``; None when the version has none (or it is unreadable)."""
    path = version_dir / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text("utf-8"))
        return {name: HeadReference.from_json(data) for name, data in doc["heads"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # a broken reference must not stop inference: drift is then simply not measured
        log.warning("cannot read %s: %s; no drift gauge for this model version", path, exc)
        return None


class DriftWindow:
    """The last ``size`` predictions of one head (at batch granularity) against its reference.

    Holds one (label counts, confidence counts) pair per batch in a deque plus their running sums,
    so adding a batch and reading the PSI cost O(labels), whatever the window size. Batches leave
    the window whole, oldest first, once the rest still holds ``size`` predictions.
    """

    def __init__(self, reference: HeadReference, size: int = 2000, min_samples: int = 200) -> None:
        self.reference = reference
        self.size = size
        self.min_samples = min_samples
        self._batches: deque[tuple[np.ndarray, np.ndarray, int]] = deque()
        self._labels = np.zeros(len(reference.labels), dtype=np.int64)
        self._confidence = np.zeros(len(CONFIDENCE_EDGES) - 1, dtype=np.int64)
        self.samples = 0

    def add(self, labels: Sequence[str], confidences: Sequence[float] | np.ndarray) -> None:
        """One batch of predictions: their labels and confidences (max softmax)."""
        if not len(labels):
            return
        lab = label_counts(labels, self.reference.labels)
        conf = confidence_counts(confidences)
        n = len(labels)
        self._batches.append((lab, conf, n))
        self._labels += lab
        self._confidence += conf
        self.samples += n
        while len(self._batches) > 1 and self.samples - self._batches[0][2] >= self.size:
            old_lab, old_conf, old_n = self._batches.popleft()
            self._labels -= old_lab
            self._confidence -= old_conf
            self.samples -= old_n

    def psi(self, signal: str) -> float:
        """PSI of ``label`` mix or ``confidence`` now; NaN until the window holds ``min_samples``."""
        if signal == "label":
            expected, actual = self.reference.label_counts, self._labels
        elif signal == "confidence":
            if self.reference.confidence_counts is None:
                return float("nan")
            expected, actual = self.reference.confidence_counts, self._confidence
        else:
            msg = f"signal must be label or confidence, not {signal!r}"
            raise ValueError(msg)
        if self.samples < self.min_samples or actual.sum() == 0 or expected.sum() == 0:
            return float("nan")
        return psi(expected, actual)

    def signals(self) -> Iterable[str]:
        """The signals this head's reference supports."""
        return ("label", "confidence") if self.reference.confidence_counts is not None else ("label",)
