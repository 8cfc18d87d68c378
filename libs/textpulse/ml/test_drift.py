"""Model health: PSI, the sliding drift window, reference.json, and the metrics built on them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from textpulse.inference.metrics import InferenceMetrics

from .drift import (
    CONFIDENCE_EDGES,
    DriftWindow,
    HeadReference,
    confidence_counts,
    head_reference,
    label_counts,
    load_reference,
    psi,
    write_reference,
)

LABELS = ("Bearish", "Bullish", "Neutral")


def test_psi_is_zero_for_the_same_mix_and_grows_with_the_shift() -> None:
    assert psi(np.array([10, 20, 70]), np.array([1, 2, 7])) == pytest.approx(0.0)
    small = psi(np.array([10, 20, 70]), np.array([12, 20, 68]))
    large = psi(np.array([10, 20, 70]), np.array([60, 20, 20]))
    assert 0 < small < 0.1
    assert large > 0.25
    # textbook value: shares (0.5, 0.5) against (0.25, 0.75)
    assert psi(np.array([1, 1]), np.array([1, 3])) == pytest.approx(
        (0.25 - 0.5) * math.log(0.5) + (0.75 - 0.5) * math.log(1.5)
    )


def test_psi_of_an_empty_bin_is_large_but_finite() -> None:
    value = psi(np.array([50, 50, 0]), np.array([0, 50, 50]))
    assert math.isfinite(value)
    assert value > 1


def test_psi_refuses_empty_or_mismatched_vectors() -> None:
    with pytest.raises(ValueError, match="same shape"):
        psi(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="non-empty"):
        psi(np.array([0, 0]), np.array([1, 2]))


def test_confidence_counts_use_ten_equal_bins_with_one_in_the_last() -> None:
    counts = confidence_counts([0.0, 0.05, 0.1, 0.55, 0.99, 1.0, 1.0000001])
    assert len(counts) == len(CONFIDENCE_EDGES) - 1
    assert counts.tolist() == [2, 1, 0, 0, 0, 1, 0, 0, 0, 3]


def test_label_counts_follow_the_names_and_ignore_unknown_labels() -> None:
    assert label_counts(["Neutral", "Bearish", "Neutral", "other"], LABELS).tolist() == [1, 0, 2]
    assert label_counts([], LABELS).tolist() == [0, 0, 0]


def _reference() -> HeadReference:
    return head_reference(LABELS, ["Neutral"] * 60 + ["Bullish"] * 30 + ["Bearish"] * 10, [0.9] * 80 + [0.5] * 20)


def test_reference_round_trips_through_reference_json(tmp_path: Path) -> None:
    ref = _reference()
    write_reference(tmp_path, {"sentiment": ref}, "dev split")
    loaded = load_reference(tmp_path)
    assert loaded is not None
    back = loaded["sentiment"]
    assert back.labels == LABELS
    assert back.label_counts.tolist() == [10, 30, 60]
    assert back.confidence_counts is not None
    assert back.confidence_counts.tolist() == confidence_counts([0.9] * 80 + [0.5] * 20).tolist()
    assert back.samples == 100


def test_a_version_without_or_with_a_broken_reference_has_none(tmp_path: Path) -> None:
    assert load_reference(tmp_path) is None
    (tmp_path / "reference.json").write_text("{not json")
    assert load_reference(tmp_path) is None


def test_window_psi_is_nan_until_min_samples_then_tracks_the_recent_mix() -> None:
    window = DriftWindow(_reference(), size=100, min_samples=50)
    window.add(["Neutral"] * 30, [0.9] * 30)
    assert math.isnan(window.psi("label"))
    # the training mix: stable
    for _ in range(5):
        window.add(["Neutral"] * 12 + ["Bullish"] * 6 + ["Bearish"] * 2, [0.9] * 16 + [0.5] * 4)
    assert window.psi("label") < 0.1
    assert window.psi("confidence") < 0.1
    # a burst of Bearish with low confidence pushes the old batches out of the window
    for _ in range(10):
        window.add(["Bearish"] * 20, [0.35] * 20)
    assert window.samples == 100
    assert window.psi("label") > 0.25
    assert window.psi("confidence") > 0.25


def test_window_keeps_at_least_size_predictions_at_batch_granularity() -> None:
    window = DriftWindow(_reference(), size=10, min_samples=1)
    window.add(["Neutral"] * 8, [0.9] * 8)
    window.add(["Bearish"] * 8, [0.9] * 8)
    assert window.samples == 16  # dropping the first batch would leave 8 < 10
    window.add(["Bearish"] * 8, [0.9] * 8)
    assert window.samples == 16


def test_window_without_confidence_reference_measures_labels_only() -> None:
    ref = head_reference(("ORG", "PER"), ["ORG", "PER"], None)
    window = DriftWindow(ref, size=10, min_samples=1)
    window.add(["ORG"], [0.8])
    assert tuple(window.signals()) == ("label",)
    assert math.isnan(window.psi("confidence"))
    assert window.psi("label") > 0


def _metric_lines(metrics: InferenceMetrics, name: str) -> dict[str, float]:
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def test_metrics_count_labels_observe_confidence_and_export_drift(tmp_path: Path) -> None:
    version_dir = tmp_path / "finance" / "3"
    version_dir.mkdir(parents=True)
    write_reference(version_dir, {"sentiment": _reference()}, "dev split")
    metrics = InferenceMetrics("classify", enabled=True, model_repo=tmp_path, drift_window=100, drift_min_samples=10)
    metrics.observe_predictions("finance", "3", "sentiment", "sentiment", ["Bearish"] * 20, [0.3] * 20)
    metrics.observe_predictions("finance", "3", "topic", "topic", ["Earnings"], [0.7])  # no reference for the head
    metrics.observe_predictions("other", "1", "sentiment", "sentiment", ["Bearish"], [0.7])  # no reference.json
    counts = _metric_lines(metrics, "textpulse_model_predictions_total")
    key = (
        'textpulse_model_predictions_total{head="sentiment",label="Bearish",model="finance",'
        'service="classify",task="sentiment",version="3"}'
    )
    assert counts[key] == 20.0
    confidence = _metric_lines(metrics, "textpulse_model_confidence_bucket")
    assert (
        confidence[
            'textpulse_model_confidence_bucket{head="sentiment",le="0.3",model="finance",service="classify",version="3"}'
        ]
        == 20.0
    )
    drift = _metric_lines(metrics, "textpulse_model_drift_psi")
    assert set(drift) == {
        'textpulse_model_drift_psi{head="sentiment",model="finance",service="classify",signal="label",version="3"}',
        'textpulse_model_drift_psi{head="sentiment",model="finance",service="classify",signal="confidence",version="3"}',
    }
    assert all(value > 0.25 for value in drift.values())
    samples = _metric_lines(metrics, "textpulse_model_drift_window_samples")
    assert list(samples.values()) == [20.0]


def test_disabled_metrics_skip_the_health_work(tmp_path: Path) -> None:
    metrics = InferenceMetrics("classify", enabled=False, model_repo=tmp_path)
    metrics.observe_predictions("finance", "3", "sentiment", "sentiment", ["Bearish"], [0.3])
    assert metrics._windows == {}  # nothing was looked up
