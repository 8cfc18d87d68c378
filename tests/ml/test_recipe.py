"""Recipe levers of issue #21: layer-wise LR decay, checkpoint averaging, R-Drop, oos calibration split.

Each lever is off by default (a profile turns it on only once dev shows it pays); the unit tests
pin the arithmetic, the slow one trains a few steps with every lever on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from textpulse.datasets import OOS_LABEL, TextExample
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
from textpulse.ml.tokenization import IGNORE_INDEX
from textpulse.ml.train import (
    _parameter_groups,
    average_state_dicts,
    encoder_depth,
    load_data,
    load_splits,
    lr_groups,
    rdrop_loss,
    symmetric_kl,
)

PROFILES = Path(__file__).resolve().parents[2] / "libs" / "textpulse" / "ml" / "profiles"


def test_levers_are_off_by_default(tmp_path: Path) -> None:
    config = TrainConfig(task="phrasebank", output_dir=tmp_path)
    assert config.layerwise_lr_decay == 1.0
    assert config.average_last == 1
    assert config.rdrop_alpha == 0.0
    assert config.calibration_fraction is None


def test_lr_groups_without_depths_keeps_the_three_groups() -> None:
    weight, bias, head = torch.zeros(2, 2), torch.zeros(2), torch.zeros(3, 2)
    groups = lr_groups([(False, weight), (False, bias), (True, head)], lr=1e-4, head_lr=1e-3, weight_decay=0.01)
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in groups] == [
        (1, 1e-4, 0.01),
        (1, 1e-4, 0.0),
        (1, 1e-3, 0.01),
    ]


def test_lr_groups_decay_each_layer_below_the_top() -> None:
    top, middle, embeddings, head = torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(3, 2)
    norm = torch.zeros(2)
    groups = lr_groups(
        [(False, top, 0), (False, middle, 1), (False, norm, 1), (False, embeddings, 2), (True, head, 0)],
        lr=1e-4,
        head_lr=1e-3,
        weight_decay=0.01,
        layer_decay=0.5,
    )
    by_tensor = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert by_tensor[id(top)] == pytest.approx((1e-4, 0.01))
    assert by_tensor[id(middle)] == pytest.approx((5e-5, 0.01))
    assert by_tensor[id(norm)] == pytest.approx((5e-5, 0.0))
    assert by_tensor[id(embeddings)] == pytest.approx((2.5e-5, 0.01))
    assert by_tensor[id(head)] == pytest.approx((1e-3, 0.01))
    assert all(g["params"] for g in groups), "no empty groups once depths are in use"


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("encoder.encoder.layer.5.attention.self.query.weight", 0),
        ("encoder.encoder.layer.0.output.dense.bias", 5),
        ("encoder.base_model.model.encoder.layer.2.intermediate.dense.weight", 3),
        ("encoder.embeddings.word_embeddings.weight", 6),
        ("encoder.pooler.dense.weight", 0),
        ("head.weight", 0),
    ],
)
def test_encoder_depth(name: str, depth: int) -> None:
    assert encoder_depth(name, 6) == depth


@pytest.mark.usefixtures("base_model_path")
def test_parameter_groups_apply_layerwise_decay(tmp_path: Path) -> None:
    from textpulse.ml.modeling import build_model
    from textpulse.ml.settings import default_base_model

    model = build_model(default_base_model(), "sequence", ["a", "b", "c"])
    names = {id(p): n for n, p in model.named_parameters()}
    plain = _parameter_groups(model, TrainConfig(task="phrasebank", output_dir=tmp_path, lr=1e-4))
    assert len(plain) == 3
    decayed = _parameter_groups(
        model, TrainConfig(task="phrasebank", output_dir=tmp_path, lr=1e-4, layerwise_lr_decay=0.8)
    )
    lr_of = {names[id(p)]: g["lr"] for g in decayed for p in g["params"]}
    assert lr_of["encoder.encoder.layer.5.attention.self.query.weight"] == pytest.approx(1e-4)
    assert lr_of["encoder.encoder.layer.0.attention.self.query.weight"] == pytest.approx(1e-4 * 0.8**5)
    assert lr_of["encoder.embeddings.word_embeddings.weight"] == pytest.approx(1e-4 * 0.8**6)
    assert lr_of["head.weight"] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in decayed) == sum(1 for p in model.parameters() if p.requires_grad)


def test_average_state_dicts_means_floats_and_keeps_integer_buffers() -> None:
    states = [
        {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([0, 1]), "h": torch.tensor([2.0], dtype=torch.float16)},
        {"w": torch.tensor([3.0, 5.0]), "ids": torch.tensor([0, 2]), "h": torch.tensor([4.0], dtype=torch.float16)},
    ]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0]))
    assert torch.equal(averaged["ids"], torch.tensor([0, 2]))
    assert averaged["h"].dtype == torch.float16
    assert averaged["h"].item() == 3.0
    with pytest.raises(ValueError, match="nothing"):
        average_state_dicts([])


def test_symmetric_kl() -> None:
    a = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    b = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item())
    p, q = torch.softmax(a[0], -1), torch.softmax(b[0], -1)
    expected = 0.5 * float((p * (p / q).log()).sum() + (q * (q / p).log()).sum())
    # the second row is identical in both, so the mean over two rows is half the first's
    assert symmetric_kl(a, b).item() == pytest.approx(expected / 2, rel=1e-5)
    assert symmetric_kl(a, b, torch.tensor([True, False])).item() == pytest.approx(expected, rel=1e-5)


def test_rdrop_loss_adds_the_weighted_kl_over_labelled_positions() -> None:
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    # token-task shape (batch 1, 3 positions, 2 classes); the ignored position disagrees wildly
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, -9.0]]])
    b = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [-9.0, 9.0]]])
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    cross_entropy = 0.5 * (
        loss_fn(a.reshape(-1, 2), labels.reshape(-1)) + loss_fn(b.reshape(-1, 2), labels.reshape(-1))
    )
    assert rdrop_loss(a, b, labels, loss_fn, 0.0).item() == pytest.approx(cross_entropy.item())
    kl = symmetric_kl(a[0, :2], b[0, :2])
    assert rdrop_loss(a, b, labels, loss_fn, 4.0).item() == pytest.approx(cross_entropy.item() + 4.0 * kl.item())
    assert math.isfinite(kl.item())
    assert kl.item() < 1.0, "the ignored position's huge disagreement is left out"


@pytest.mark.usefixtures("datasets_available")
def test_calibration_split_is_disjoint_from_train_and_dev(tmp_path: Path) -> None:
    _, preset = resolve_task("clinc150")
    values = load_config_file(PROFILES / "quick" / "clinc150.yaml") | {"limit_train": None}
    plain = TrainConfig(task="clinc150", output_dir=tmp_path, **values)
    calibrated = plain.model_copy(update={"calibration_fraction": 0.25})
    splits = load_splits(calibrated, preset)
    ids = {name: {e.id for e in rows if isinstance(e, TextExample)} for name, rows in vars_of(splits).items()}
    assert ids["calibration"]
    assert not ids["calibration"] & ids["dev"]
    assert not ids["calibration"] & ids["train"]
    assert sum(e.label == OOS_LABEL for e in splits.calibration if isinstance(e, TextExample)) >= 15
    # dev (checkpoint choice) is the same set with or without the calibration carve
    assert ids["dev"] == {e.id for e in load_data(plain, preset)[1] if isinstance(e, TextExample)}
    assert len(load_data(plain, preset)[0]) == len(splits.train) + len(splits.calibration)
    assert splits.calibration_desc is not None
    assert "after the dev carve" in splits.calibration_desc


def vars_of(splits: object) -> dict[str, list[object]]:
    return {name: getattr(splits, name) for name in ("train", "dev", "calibration")}


@pytest.mark.usefixtures("datasets_available")
def test_calibration_split_needs_an_oos_task(tmp_path: Path) -> None:
    config = TrainConfig(task="phrasebank", output_dir=tmp_path, calibration_fraction=0.2)
    with pytest.raises(ValueError, match="out-of-scope"):
        load_splits(config, resolve_task("phrasebank")[1])


@pytest.mark.slow
@pytest.mark.usefixtures("datasets_available", "base_model_path")
def test_training_with_every_lever_on(tmp_path: Path) -> None:
    """A few steps on CLINC150 with LLRD, R-Drop, averaging and a calibration split: the threshold
    comes from the calibration rows and the saved meta says so."""
    from textpulse.ml.train import train

    config = TrainConfig(
        task="clinc150",
        output_dir=tmp_path / "model",
        limit_train=256,
        limit_dev=96,
        dev_fraction=0.2,
        calibration_fraction=0.25,
        max_length=24,
        batch_size=32,
        eval_every=2,
        max_steps=4,
        patience=5,
        layerwise_lr_decay=0.8,
        average_last=3,
        rdrop_alpha=1.0,
        oos_min_recall=0.85,
        threads=1,
        progress=False,
        device="cpu",
    )
    summary = train(config)
    assert summary["steps"] == 4
    assert summary["averaged_score"] is not None
    meta = json.loads((tmp_path / "model" / "config.json").read_text("utf-8"))["textpulse"]
    assert meta["n_calibration"] == 96
    assert "after the dev carve" in meta["oos_calibration_data"]
    assert summary["dev"]["oos_threshold"] is not None
    # the recall floor is recorded, named on the card and caps what recall adds to the selection score
    assert meta["oos_min_recall"] == 0.85
    assert "keeping oos recall >= 0.85" in (tmp_path / "model" / "README.md").read_text("utf-8")
    dev = summary["dev"]
    assert dev["oos_score"] == pytest.approx(dev["in_scope_accuracy"] + min(dev["oos_recall"], 0.85))


def test_ablation_variants_and_summary() -> None:
    from textpulse.ml.train_ablation import parse_variant, summarise

    assert parse_variant("base") == ("base", {})
    assert parse_variant("llrd:layerwise_lr_decay=0.8,pooling=first") == (
        "llrd",
        {"layerwise_lr_decay": 0.8, "pooling": "first"},
    )
    with pytest.raises(ValueError, match="key=value"):
        parse_variant("bad:oops")
    rows = [
        {"variant": "base", "seed": 1, "score": 0.81, "single_best": 0.80, "averaged_score": 0.81},
        {"variant": "base", "seed": 2, "score": 0.82, "single_best": 0.82, "averaged_score": 0.79},
        {"variant": "rdrop", "seed": 1, "score": 0.84, "averaged_score": None},
        {"variant": "rdrop", "seed": 2, "score": 0.84},
    ]
    table = {line["variant"]: line for line in summarise(rows)}
    assert table["base"]["mean"] == pytest.approx(0.81)
    assert table["base"]["std"] == pytest.approx(0.01414, abs=1e-4)
    assert table["base+avg"]["mean"] == pytest.approx(0.815)
    assert table["rdrop"]["gain"] == pytest.approx(0.03)
    assert table["rdrop"]["std"] == 0.0
