"""CLINC150: dev (checkpoint choice + oos threshold) is carved from train, so official val stays unused.

bench-route scores CLINC150 on the official ``val`` + ``oos_val``; that is only
honest while no training decision looked at it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textpulse.datasets import OOS_LABEL, TextExample, load_text_examples
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
from textpulse.ml.train import carves_dev, dev_examples_for, load_data

pytestmark = pytest.mark.usefixtures("datasets_available")

PROFILES = Path(__file__).resolve().parents[2] / "libs" / "textpulse" / "ml" / "profiles"


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_clinc150_dev_is_carved_from_train_and_val_is_untouched(profile: str, tmp_path: Path) -> None:
    _, preset = resolve_task("clinc150")
    config = TrainConfig(task="clinc150", output_dir=tmp_path, **load_config_file(PROFILES / profile / "clinc150.yaml"))
    assert carves_dev(config, preset)
    train, dev, _, dev_desc = load_data(config, preset)
    train_ids = {e.id for e in load_text_examples("clinc150/data_full.json", dataset="clinc150:train")}
    val_ids = {e.id for e in load_text_examples("clinc150/data_full.json", dataset="clinc150:val")}
    dev_ids = {e.id for e in dev if isinstance(e, TextExample)}
    assert dev_ids <= train_ids, "dev must come from train + oos_train"
    assert not dev_ids & val_ids
    assert not dev_ids & {e.id for e in train if isinstance(e, TextExample)}
    # The threshold needs out-of-scope rows to calibrate on.
    assert sum(e.label == OOS_LABEL for e in dev if isinstance(e, TextExample)) >= 20
    assert "split `train`" in dev_desc


def test_saved_config_rebuilds_the_same_dev_set(tmp_path: Path) -> None:
    """training_config.json records carve_dev: the dev set rebuilds even if the preset changes later."""
    _, preset = resolve_task("clinc150")
    config = TrainConfig(task="clinc150", output_dir=tmp_path, dev_fraction=0.2, limit_dev=300)
    saved = config.model_copy(update={"carve_dev": carves_dev(config, preset)})
    rebuilt = TrainConfig.model_validate_json(saved.model_dump_json())
    assert rebuilt.carve_dev is True
    first = [e.id for e in dev_examples_for(rebuilt) if isinstance(e, TextExample)]
    assert first == [e.id for e in dev_examples_for(config) if isinstance(e, TextExample)]
    assert len(first) == 300


def test_carve_dev_false_without_a_dev_file_is_refused(tmp_path: Path) -> None:
    _, preset = resolve_task("clinc150")
    with pytest.raises(ValueError, match="carve_dev is false"):
        load_data(TrainConfig(task="clinc150", output_dir=tmp_path, carve_dev=False), preset)
