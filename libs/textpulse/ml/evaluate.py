"""Score a model on labelled examples: metrics, confusion matrix and predictions."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from textpulse.ml.data import encode_text_examples, encode_token_examples
from textpulse.ml.inference import run_batches, softmax
from textpulse.ml.metrics import (
    apply_oos_threshold,
    calibrate_oos_threshold,
    classification_metrics,
    ner_metrics,
    oos_metrics,
)
from textpulse.ml.social import placeholder_of
from textpulse.ml.tokenization import first_subtoken_positions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path

    from textpulse.datasets import TextExample, TokenExample


def unknown_labels(gold: Iterable[str], known: Sequence[str]) -> dict[str, int]:
    """Gold labels the model cannot predict, with their counts (most frequent first).

    Scored anyway they would count as plain errors, so a file labelled for
    another task (or with a typo) would pass as a bad model; callers refuse it.
    """
    allowed = set(known)
    counts = Counter(label for label in gold if label not in allowed)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def sequence_probs(
    logits_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Any,
    examples: Sequence[TextExample],
    labels: list[str],
    max_length: int,
    batch_size: int = 64,
) -> np.ndarray:
    """Class probabilities ``[n, labels]`` for text examples."""
    rows = encode_text_examples(tokenizer, examples, {label: i for i, label in enumerate(labels)}, max_length)
    logits = run_batches(logits_fn, rows, tokenizer.pad_token_id, batch_size)
    return softmax(np.stack(logits)) if logits else np.zeros((0, len(labels)), dtype=np.float32)


def evaluate_sequence(
    probs: np.ndarray,
    examples: Sequence[TextExample],
    labels: list[str],
    oos_label: str | None = None,
    oos_threshold: float | None = None,
    oos_min_recall: float | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Metrics and predicted labels; with ``oos_label`` also in-scope accuracy / oos recall.

    ``oos_score`` (the checkpoint-selection metric) is in-scope accuracy + oos recall; with
    ``oos_min_recall`` the recall counts only up to that floor, so once the floor is met the score
    is in-scope accuracy: one dev oos row more (5 points of recall with 20 rows) no longer
    outweighs in-scope rows, which is what the floor is for.
    """
    y_true = [e.label or "" for e in examples]
    if oos_label is not None:
        threshold = oos_threshold if oos_threshold is not None else 0.0
        y_pred = apply_oos_threshold(probs, labels, threshold, oos_label)
    else:
        y_pred = [labels[i] for i in probs.argmax(axis=1)]
    metrics = classification_metrics(y_true, y_pred, labels)
    if oos_label is not None:
        metrics.update(oos_metrics(y_true, y_pred, oos_label))
        metrics["oos_threshold"] = oos_threshold
        recall = float(metrics["oos_recall"])
        counted = min(recall, oos_min_recall) if oos_min_recall is not None else recall
        metrics["oos_score"] = float(metrics["in_scope_accuracy"]) + counted
    return metrics, y_pred


def calibrate(
    probs: np.ndarray,
    examples: Sequence[TextExample],
    labels: list[str],
    oos_label: str,
    min_recall: float | None = None,
) -> float:
    """Dev-calibrated out-of-scope confidence threshold (see :func:`calibrate_oos_threshold`)."""
    return calibrate_oos_threshold(probs, [e.label or "" for e in examples], labels, oos_label, min_recall)


def token_predictions(
    logits_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tokenizer: Any,
    examples: Sequence[TokenExample],
    labels: list[str],
    max_length: int,
    batch_size: int = 64,
) -> list[list[str]]:
    """Word-level tags (first sub-token's argmax); words lost to truncation get ``O``."""
    label2id = {label: i for i, label in enumerate(labels)}
    rows = encode_token_examples(tokenizer, examples, label2id, max_length)
    logits = run_batches(logits_fn, rows, tokenizer.pad_token_id, batch_size)
    predictions = []
    for example, row, row_logits in zip(examples, rows, logits, strict=True):
        positions = first_subtoken_positions(row.word_ids or [])
        tags = []
        for word_index in range(len(example.tokens)):
            position = positions.get(word_index)
            # a link or handle is never tagged at serving (tokenization.spans_from_tags): scored the same here
            if position is None or placeholder_of(example.tokens[word_index]) is not None:
                tags.append("O")
            else:
                tags.append(labels[int(row_logits[position].argmax())])
        predictions.append(tags)
    return predictions


def evaluate_token(predictions: list[list[str]], examples: Sequence[TokenExample]) -> dict[str, Any]:
    """Entity-level metrics (seqeval) of word-level predictions."""
    return ner_metrics([e.tags for e in examples], predictions)


def confusion_png(y_true: Sequence[str], y_pred: Sequence[str], labels: list[str], path: Path) -> Path:
    """Write a row-normalised confusion matrix; cell counts are annotated for small label sets."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(5.0, min(40.0, 0.28 * len(labels) + 3))
    fig, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 30 else 9)  # noqa: PLR2004
    axis.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 30 else 9)  # noqa: PLR2004
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(labels) <= 25:  # noqa: PLR2004 - counts stay readable
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if normalised[i, j] > 0.5 else "black"  # noqa: PLR2004
                axis.text(j, i, str(count), ha="center", va="center", fontsize=8, color=colour)
    fig.colorbar(image, ax=axis, fraction=0.046)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def token_confusion_inputs(
    predictions: list[list[str]],
    examples: Sequence[TokenExample],
) -> tuple[list[str], list[str]]:
    """Flatten word tags for a tag-level confusion matrix."""
    y_true = [t for e in examples for t in e.tags]
    y_pred = [t for p in predictions for t in p]
    return y_true, y_pred
