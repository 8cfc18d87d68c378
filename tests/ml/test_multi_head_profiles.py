"""The multi-head profiles (finance, support): each head trains and is scored on its single-task data.

docs/models.md compares every head of ``finance`` / ``support`` with the single-task quick
model of its task; that is only a fair comparison while both saw the same train subset and
are scored on the same carved dev rows (same carve fraction, seeds, near-duplicate grouping).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textpulse.datasets import TextExample
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
from textpulse.ml.train import extra_task_config, load_data

pytestmark = pytest.mark.usefixtures("datasets_available")

PROFILES = Path(__file__).resolve().parents[2] / "libs" / "textpulse" / "ml" / "profiles"
#: multi-head profile -> single-task profile file of each head (the primary first)
HEADS = {"finance": ("sentiment", "topic"), "support": ("clinc150", "sentiment")}


def _config(profile: str, name: str, tmp_path: Path) -> TrainConfig:
    values = load_config_file(PROFILES / profile / f"{name}.yaml")
    values.setdefault("task", name)
    return TrainConfig(output_dir=tmp_path, **values)


def _rows(config: TrainConfig, task: str) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]]]:
    train, dev, _, _ = load_data(config, resolve_task(task)[1])
    pairs = [[(e.text, e.label) for e in part if isinstance(e, TextExample)] for part in (train, dev)]
    return pairs[0], pairs[1]


@pytest.mark.parametrize("model", sorted(HEADS))
def test_every_head_sees_its_single_task_train_and_dev_rows(model: str, tmp_path: Path) -> None:
    multi = _config("quick", model, tmp_path)
    primary, extra = HEADS[model]
    assert (resolve_task(multi.task)[0], multi.extra_tasks, multi.select_on) == (primary, [extra], "mean")
    for task, seen in ((primary, multi), (extra, extra_task_config(multi, extra))):
        single = _config("quick", task, tmp_path)
        assert _rows(seen, task) == _rows(single, task), f"{model}: head {task} differs from quick/{task}.yaml"


@pytest.mark.parametrize("model", sorted(HEADS))
def test_full_profiles_load(model: str, tmp_path: Path) -> None:
    config = _config("full", model, tmp_path)
    assert config.extra_tasks == [HEADS[model][1]]
    extra = HEADS[model][1]
    assert extra_task_config(config, extra).dev_fraction == _config("full", extra, tmp_path).dev_fraction
