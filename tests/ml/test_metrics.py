"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from textpulse.ml.metrics import (
    apply_oos_threshold,
    calibrate_oos_threshold,
    classification_metrics,
    ner_metrics,
    oos_metrics,
)


def test_classification_metrics_hand_computed() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    # a: P=2/2 R=2/3 F1=0.8 ; b: P=1/2 R=1/2 F1=0.5 ; c: P=1/2 R=1 F1=2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)


def test_macro_ignores_labels_absent_from_gold() -> None:
    m = classification_metrics(["a", "a"], ["a", "a"], ["a", "b"])
    assert m["macro_f1"] == pytest.approx(1.0)
    assert m["per_class"]["b"]["support"] == 0


def test_ner_metrics_entity_level() -> None:
    true = [["B-PER", "I-PER", "O", "B-ORG"], ["B-LOC", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    m = ner_metrics(true, pred)
    # entities: PER ok, ORG missed (predicted LOC), LOC ok -> TP=2, pred=3, gold=3
    assert m["micro_f1"] == pytest.approx(2 / 3)
    assert m["per_type"]["PER"]["f1"] == pytest.approx(1.0)
    assert m["per_type"]["ORG"]["recall"] == pytest.approx(0.0)
    assert m["per_type"]["LOC"]["precision"] == pytest.approx(0.5)
    assert m["per_type"]["LOC"]["f1"] == pytest.approx(2 / 3)
    # weighted by support (1 each): (1 + 0 + 2/3) / 3
    assert m["weighted_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert m["token_accuracy"] == pytest.approx(5 / 6)


def test_partial_span_is_an_error() -> None:
    m = ner_metrics([["B-ORG", "I-ORG"]], [["B-ORG", "O"]])
    assert m["micro_f1"] == pytest.approx(0.0)


def test_oos_threshold_and_metrics() -> None:
    labels = ["x", "y", "oos"]
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7], [0.5, 0.45, 0.05]])
    y_true = ["x", "oos", "oos", "y"]
    assert apply_oos_threshold(probs, labels, 0.45) == ["x", "oos", "oos", "x"]
    m = oos_metrics(y_true, ["x", "oos", "oos", "x"])
    assert m == {"in_scope_accuracy": 0.5, "oos_recall": 1.0, "oos_precision": 1.0, "n_in_scope": 2, "n_oos": 2}
    # threshold must exceed 0.4 to catch row 2 and stay <= 0.5 to keep row 1
    threshold = calibrate_oos_threshold(probs, y_true, labels)
    assert 0.4 < threshold <= 0.5


def test_oos_threshold_under_a_recall_floor() -> None:
    """The floor keeps the lowest threshold that still catches enough oos rows (most in-scope kept)."""
    labels = ["x", "y", "oos"]
    # top probabilities: in-scope rows 0.9, 0.6, 0.45, 0.3 (all argmax correct); oos rows 0.5, 0.35, 0.25, 0.2
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.6, 0.3, 0.1],
            [0.1, 0.45, 0.45 - 1e-3],
            [0.3, 0.29, 0.28],
            [0.5, 0.3, 0.2],
            [0.35, 0.33, 0.32],
            [0.25, 0.25 - 1e-3, 0.5 - 1e-3],
            [0.2, 0.19, 0.61],
        ]
    )
    y_true = ["x", "x", "y", "x", "oos", "oos", "oos", "oos"]
    # rows 6 and 7 are oos by argmax (half); 0.36 also catches row 5 (3/4), 0.51 all four
    assert calibrate_oos_threshold(probs, y_true, labels, min_recall=0.5) == 0.0  # argmax oos on rows 6, 7
    assert calibrate_oos_threshold(probs, y_true, labels, min_recall=0.75) == pytest.approx(0.36)
    assert calibrate_oos_threshold(probs, y_true, labels, min_recall=1.0) == pytest.approx(0.51)
    # the sum rule scores 1.5 at 0.0, 0.36 and 0.51 alike (each oos row caught costs an in-scope row); ties go low
    assert calibrate_oos_threshold(probs, y_true, labels) == 0.0


def test_oos_score_counts_recall_up_to_the_floor() -> None:
    """With a floor, recall above it adds nothing to the selection score: in-scope accuracy decides."""
    from textpulse.datasets import TextExample
    from textpulse.ml.evaluate import evaluate_sequence

    labels = ["x", "y", "oos"]
    probs = np.array([[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.1, 0.7], [0.5, 0.3, 0.2]])
    rows = [TextExample(id=str(i), text=str(i), label=label) for i, label in enumerate(["x", "x", "oos", "oos"])]
    plain, _ = evaluate_sequence(probs, rows, labels, "oos", 0.55)
    floored, predicted = evaluate_sequence(probs, rows, labels, "oos", 0.55, oos_min_recall=0.5)
    assert predicted == ["x", "y", "oos", "oos"]
    assert plain["oos_recall"] == floored["oos_recall"] == 1.0
    assert plain["oos_score"] == pytest.approx(0.5 + 1.0)
    assert floored["oos_score"] == pytest.approx(0.5 + 0.5)
