"""bench-route refuses what would flatter it: a missing model, or an intent model tuned on the split it scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textpulse.datasets import data_dir

from bench import bench_route
from tests.ci import missing


def _version(tmp_path: Path, config: dict[str, object]) -> Path:
    version = tmp_path / "intent" / "1"
    version.mkdir(parents=True)
    (version / "config.json").write_text("{}")
    (version / "training_config.json").write_text(json.dumps({"task": "clinc150", "output_dir": "x", **config}))
    return version


def test_missing_model_names_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench_route.MODELS, "banking77", (tmp_path / "banking77", "make ml-quick-banking77"))
    with pytest.raises(bench_route.MissingModel) as info:
        bench_route.model_version("banking77")
    assert "make ml-quick-banking77" in info.value.message
    assert info.value.code == 2


@pytest.mark.parametrize(
    "config",
    [
        {},  # trained before carve_dev was recorded: the old preset picked on val
        {"carve_dev": False},
        {"carve_dev": True, "dev_file": "clinc150/data_full.json"},
    ],
)
def test_intent_model_tuned_on_val_is_refused(tmp_path: Path, config: dict[str, object]) -> None:
    with pytest.raises(bench_route.MissingModel) as info:
        bench_route.clinc150_examples(_version(tmp_path, config))
    assert "make ml-quick-clinc150" in info.value.message


def test_intent_model_with_a_carved_dev_is_scored_on_official_val(tmp_path: Path) -> None:
    try:
        data_dir()
    except FileNotFoundError as exc:
        missing("the shared datasets", str(exc))
    scored = bench_route.clinc150_examples(_version(tmp_path, {"carve_dev": True}))
    assert len(scored.examples) == 3100  # val 3,000 + oos_val 100
    assert all(":val:" in e.id or ":oos_val:" in e.id for e in scored.examples)


def test_a_given_model_folder_replaces_the_repository_model(tmp_path: Path) -> None:
    """``--model clinc150=DIR`` scores DIR (its latest version), with the same refusal when it is missing."""
    version = _version(tmp_path, {"carve_dev": True})
    assert bench_route.model_version("clinc150", tmp_path / "intent") == version
    with pytest.raises(bench_route.MissingModel) as info:
        bench_route.model_version("clinc150", tmp_path / "absent")
    assert "absent" in info.value.message
