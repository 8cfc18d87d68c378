"""``text_normalisation: social`` end to end: training rows, the saved config, every reader of the model.

Small on purpose (a few steps): it checks that train, dev and serving show the encoder one text,
not accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textpulse.ml.config import TrainConfig, resolve_task
from textpulse.ml.social import model_text
from textpulse.ml.train import fit, load_splits

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("datasets_available", "base_model_path")]

TWEET = "$TSLA beats estimates, shares jump https://t.co/bd0xbFGjkT via @Reuters"


def test_splits_are_normalised_for_sequence_tasks_only(tmp_path: Path) -> None:
    config = TrainConfig(
        task="sentiment", output_dir=tmp_path, text_normalisation="social", limit_train=400, limit_dev=200
    )
    splits = load_splits(config, resolve_task("sentiment")[1])
    texts = [e.text for e in [*splits.train, *splits.dev]]  # type: ignore[union-attr]
    assert not any("https://" in t or "t.co/" in t for t in texts)
    assert any(" http" in t or t.startswith("http") for t in texts)  # the staged tweets do carry links
    raw = load_splits(config.model_copy(update={"text_normalisation": "none"}), resolve_task("sentiment")[1])
    # the same rows (same carve, same subsample), only the text differs
    assert [e.id for e in raw.dev] == [e.id for e in splits.dev]
    assert [model_text(e.text, "social") for e in raw.dev] == [e.text for e in splits.dev]  # type: ignore[union-attr]


@pytest.mark.timeout(300)
def test_trained_model_carries_its_normalisation_to_serving(tmp_path: Path) -> None:
    from textpulse.inference.codec import Codec
    from textpulse.ml.predictor import Predictor

    model_dir = tmp_path / "finance"
    config = TrainConfig(
        task="sentiment",
        text_normalisation="links",
        output_dir=model_dir,
        limit_train=160,
        limit_dev=40,
        max_steps=2,
        batch_size=16,
        max_length=32,
        threads=2,
        progress=False,
    )
    fit(config)
    meta = json.loads((model_dir / "config.json").read_text("utf-8"))["textpulse"]
    assert meta["text_normalisation"] == "links"
    shown = model_text(TWEET, "links")  # what the shipped finance profile uses
    predictor = Predictor(model_dir)
    assert predictor.encode([TWEET]).input_ids.tolist() == predictor.encode([shown]).input_ids.tolist()
    codec = Codec(model_dir, "finance")
    assert codec.encode([TWEET]).input_ids.tolist() == predictor.encode([shown]).input_ids.tolist()
