"""The ablation runner's scoring-only holdout (``train_ablation --holdout-fraction``).

It lets variants that fit the CLINC150 oos threshold on different splits be compared on rows that
no variant used for any choice; these tests pin that the holdout is leak-free and that the
metrics and the dev-vs-holdout optimism are what the docs table reports.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
from textpulse.datasets import OOS_LABEL, TextExample, load_text_examples
from textpulse.datasets.splits import near_duplicate_key
from textpulse.ml.config import TrainConfig, resolve_task
from textpulse.ml.train import load_splits
from textpulse.ml.train_ablation import carve_holdout, holdout_metrics, holdout_summary

if TYPE_CHECKING:
    from pathlib import Path

INTENTS = ("timer", "weather", "balance")


@pytest.fixture
def clinc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny ``clinc150/data_full.json`` (with near-duplicate pairs) as the data directory."""
    train = [
        [f"{intent} question number {i} about {intent} {'x' * i}", intent] for intent in INTENTS for i in range(20)
    ]
    # twins (same text up to case and numbers) must land on one side of every carve
    train += [["Set a timer for 5 minutes", "timer"], ["set a timer for 10 minutes", "timer"]]
    oos = [[f"something unrelated {'y' * i}", "oos"] for i in range(20)]
    folder = tmp_path / "data" / "clinc150"
    folder.mkdir(parents=True)
    (folder / "data_full.json").write_text(json.dumps({"train": train, "oos_train": oos, "val": [], "oos_val": []}))
    monkeypatch.setenv("TEXTPULSE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def keys(rows: list[TextExample] | list[TextExample | object]) -> set[str]:
    return {near_duplicate_key(r.text) for r in rows if isinstance(r, TextExample)}


def test_holdout_is_disjoint_from_every_carve_of_the_pool(clinc_dir: Path) -> None:
    pool_path = clinc_dir / "out" / "train_pool.json"
    holdout = carve_holdout("clinc150", 0.2, 15, pool_path)
    pool = load_text_examples(pool_path, dataset="clinc150")
    assert len(pool) + len(holdout) == 3 * 20 + 2 + 20
    assert not keys(holdout) & keys(pool), "no holdout row has a near-twin in the pool"
    assert sum(e.label == OOS_LABEL for e in holdout) == 4  # stratified: 20 % of the 20 oos rows
    assert {e.label for e in holdout} == {*INTENTS, OOS_LABEL}
    # the pool keeps the data_full.json layout: in-scope first, then oos, labels intact
    labels = [e.label for e in pool]
    assert labels.index(OOS_LABEL) == len(labels) - labels[::-1].count(OOS_LABEL)
    # a run on the pool carves dev and calibration from it, never touching the holdout
    config = TrainConfig(
        task="clinc150",
        output_dir=clinc_dir / "model",
        train_file=str(pool_path),
        carve_dev=True,
        dev_fraction=0.2,
        calibration_fraction=0.25,
    )
    splits = load_splits(config, resolve_task("clinc150")[1])
    assert splits.dev
    assert splits.calibration
    for rows in (splits.train, splits.dev, splits.calibration):
        assert not keys(holdout) & keys(rows)
    assert len(splits.train) + len(splits.dev) + len(splits.calibration) == len(pool)


def test_holdout_is_the_same_for_the_same_seed(clinc_dir: Path) -> None:
    first = carve_holdout("clinc150", 0.2, 15, clinc_dir / "a.json")
    second = carve_holdout("clinc150", 0.2, 15, clinc_dir / "b.json")
    assert [e.text for e in first] == [e.text for e in second]
    assert (clinc_dir / "a.json").read_text() == (clinc_dir / "b.json").read_text()


def test_holdout_needs_an_oos_task(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="out-of-scope"):
        carve_holdout("phrasebank", 0.2, 15, tmp_path / "pool.json")


def test_holdout_metrics_at_a_given_threshold() -> None:
    labels = ["a", "b", OOS_LABEL]
    examples = [
        TextExample("1", "x", "a"),
        TextExample("2", "x", "b"),
        TextExample("3", "x", OOS_LABEL),
        TextExample("4", "x", OOS_LABEL),
    ]
    # max probabilities 0.9, 0.5, 0.4, 0.8: at 0.6 rows 2 and 3 become oos
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.4, 0.3, 0.3], [0.1, 0.8, 0.1]])
    metrics = holdout_metrics(probs, examples, labels, OOS_LABEL, 0.6)
    assert metrics["in_scope_accuracy"] == 0.5
    assert metrics["oos_recall"] == 0.5
    assert metrics["oos_precision"] == 0.5
    assert metrics["oos_f1"] == pytest.approx(0.5)
    assert metrics["oos_threshold"] == 0.6
    none = holdout_metrics(probs, examples, labels, OOS_LABEL, 0.0)
    assert none["oos_recall"] == 0.0
    assert none["oos_f1"] == 0.0


def test_holdout_summary_reports_mean_std_and_dev_optimism() -> None:
    def run(variant: str, dev_recall: float, recall: float, accuracy: float) -> dict[str, object]:
        own = {"in_scope_accuracy": accuracy, "oos_recall": recall, "oos_precision": 0.1, "oos_f1": 0.2}
        return {
            "variant": variant,
            "dev": {"in_scope_accuracy": 0.9, "oos_recall": dev_recall},
            "holdout": {"own": own},
        }

    rows = [run("base", 0.9, 0.6, 0.85), run("base", 0.8, 0.8, 0.87), run("calib", 0.7, 0.7, 0.86), {"variant": "x"}]
    table = {line["variant"]: line for line in holdout_summary(rows)}
    assert set(table) == {"base", "calib"}
    assert table["base"]["n"] == 2
    assert table["base"]["oos_recall"] == pytest.approx((0.7, 0.1414), abs=1e-4)
    assert table["base"]["oos_recall_optimism"] == pytest.approx(0.15)
    assert table["base"]["in_scope_accuracy_optimism"] == pytest.approx(0.04)
    assert table["calib"]["oos_recall"] == (0.7, 0.0)
    assert "oos_f1_optimism" not in table["calib"], "dev without oos precision has no F1 to compare"
    # with dev oos precision, dev's F1 is derived and compared too
    rows[2]["dev"] = {"oos_precision": 0.2, "oos_recall": 0.2}
    table = {line["variant"]: line for line in holdout_summary(rows)}
    assert table["calib"]["oos_f1_optimism"] == pytest.approx(0.0)
    assert table["calib"]["oos_precision_optimism"] == pytest.approx(0.1)
