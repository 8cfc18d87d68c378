"""Evaluation metrics: classification, entity-level NER and out-of-scope intent.

Thin wrappers over scikit-learn and seqeval that return plain JSON-able dicts,
so the CLI prints them and model cards/manifests store them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro/weighted F1 and per-class precision/recall/F1/support."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    label_list = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=label_list,
        zero_division=0,
    )
    present = [i for i, s in enumerate(support) if s > 0]
    per_class = {
        label: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(label_list)
    }
    total = int(sum(support))
    weighted = float(sum(f1[i] * support[i] for i in present) / total) if total else 0.0
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        # Macro over classes present in the gold data: absent classes would add
        # a meaningless 0 when scoring a subset.
        "macro_f1": float(np.mean([f1[i] for i in present])) if present else 0.0,
        "weighted_f1": weighted,
        "per_class": per_class,
    }


def ner_metrics(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Entity-level (exact span + type) P/R/F1 per type, micro, macro and weighted (seqeval)."""
    from seqeval.metrics import classification_report

    y_true = [list(t) for t in true_tags]
    y_pred = [list(p) for p in pred_tags]
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    per_type: dict[str, dict[str, float | int]] = {}
    averages: dict[str, dict[str, float | int]] = {}
    for name, values in report.items():
        entry = {
            "precision": float(values["precision"]),
            "recall": float(values["recall"]),
            "f1": float(values["f1-score"]),
            "support": int(values["support"]),
        }
        if name.endswith(" avg"):
            averages[name.removesuffix(" avg")] = entry
        else:
            per_type[name] = entry
    tokens = [(t, p) for ts, ps in zip(y_true, y_pred, strict=True) for t, p in zip(ts, ps, strict=True)]
    return {
        "n": len(y_true),
        "micro_f1": averages.get("micro", {}).get("f1", 0.0),
        "macro_f1": averages.get("macro", {}).get("f1", 0.0),
        "weighted_f1": averages.get("weighted", {}).get("f1", 0.0),
        "token_accuracy": float(np.mean([t == p for t, p in tokens])) if tokens else 0.0,
        "averages": averages,
        "per_type": per_type,
    }


def apply_oos_threshold(
    probs: np.ndarray,
    labels: Sequence[str],
    threshold: float,
    oos_label: str = "oos",
) -> list[str]:
    """Argmax labels, replaced by ``oos_label`` when the top probability is below ``threshold``."""
    best = probs.argmax(axis=1)
    top = probs[np.arange(len(probs)), best]
    return [oos_label if p < threshold else labels[i] for i, p in zip(best, top, strict=True)]


def oos_metrics(y_true: Sequence[str], y_pred: Sequence[str], oos_label: str = "oos") -> dict[str, float | int]:
    """In-scope accuracy (exact intent on in-scope rows) and out-of-scope recall/precision."""
    in_scope = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if t != oos_label]
    oos_rows = [p for t, p in zip(y_true, y_pred, strict=True) if t == oos_label]
    predicted_oos = sum(1 for p in y_pred if p == oos_label)
    true_oos_hits = sum(1 for p in oos_rows if p == oos_label)
    return {
        "in_scope_accuracy": float(np.mean([t == p for t, p in in_scope])) if in_scope else 0.0,
        "oos_recall": true_oos_hits / len(oos_rows) if oos_rows else 0.0,
        "oos_precision": true_oos_hits / predicted_oos if predicted_oos else 0.0,
        "n_in_scope": len(in_scope),
        "n_oos": len(oos_rows),
    }


def calibrate_oos_threshold(
    probs: np.ndarray,
    y_true: Sequence[str],
    labels: Sequence[str],
    oos_label: str = "oos",
    min_recall: float | None = None,
) -> float:
    """Pick the confidence threshold on dev (0.01 grid): in-scope accuracy + oos recall, or a recall floor.

    Without ``min_recall``: maximise in-scope accuracy + oos recall. Equal weight for the two rates
    (not plain accuracy) because dev has 30x more in-scope rows, which would otherwise push the
    threshold to zero. With ``min_recall``: the lowest threshold whose oos recall reaches the floor,
    i.e. the most in-scope accuracy the floor allows (a lower threshold never rejects more in-scope
    rows); if none does (oos rows given an intent with probability >= 0.99), the most recall there is.
    Ties go to the lowest threshold (fewest in-scope rows rejected).
    """
    rates = []  # (threshold, in-scope accuracy, oos recall), thresholds ascending
    for threshold in np.round(np.arange(0.0, 1.0, 0.01), 2):
        scores = oos_metrics(y_true, apply_oos_threshold(probs, labels, float(threshold), oos_label), oos_label)
        rates.append((float(threshold), float(scores["in_scope_accuracy"]), float(scores["oos_recall"])))
    if min_recall is not None:
        met = [t for t, _, recall in rates if recall >= min_recall - 1e-12]
        if met:
            return met[0]
        return max(rates, key=lambda r: (r[2], -r[0]))[0]
    return max(rates, key=lambda r: (round(r[1] + r[2], 12), -r[0]))[0]
