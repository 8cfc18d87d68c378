"""Distillation: the loss, soft-label alignment, and the stages end to end on a tiny config-built BERT.

No download and no real weights: teacher and student are the same 1-layer random BERT saved to a
temp folder, the data a few dozen PhraseBank-format lines, so CI runs it without the teacher.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from textpulse.ml import distill as distill_module
from textpulse.ml.tokenization import IGNORE_INDEX

from .distill import (
    DistillConfig,
    align_soft_labels,
    distill,
    distill_profile,
    distillation_loss,
    load_distill_config,
    text_key,
    unique_texts,
)
from .train import _evaluate_all as evaluate_all

WORDS = {
    "positive": ["profit", "rose", "growth", "record", "strong"],
    "negative": ["loss", "fell", "decline", "weak", "cut"],
    "neutral": ["company", "said", "meeting", "office", "report"],
}


# Section: loss.


def test_loss_is_alpha_weighted_t2_kl_plus_ce_and_kl_only_on_unlabelled() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, 2, IGNORE_INDEX, 1])
    temperature, alpha = 3.0, 0.3
    p_teacher = torch.softmax(teacher / temperature, -1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / temperature, -1))).sum(-1) * temperature**2
    ce = torch.nn.functional.cross_entropy(student, labels.clamp(min=0), reduction="none")
    ce[2] = 0.0  # the unlabelled row has no hard term
    expected = (alpha * kl + (1 - alpha) * ce).mean()
    got = distillation_loss(student, teacher, labels, temperature=temperature, alpha=alpha)
    assert torch.allclose(got, expected, atol=1e-6)


def test_loss_edges() -> None:
    logits = torch.randn(3, 4)
    labels = torch.tensor([1, 0, 3])
    # the teacher's own logits cost nothing on the soft term
    assert distillation_loss(logits, logits, labels, temperature=2.0, alpha=1.0).item() == pytest.approx(0, abs=1e-6)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(distillation_loss(logits, torch.randn(3, 4), labels, temperature=2.0, alpha=0.0), hard)
    unlabelled = torch.full((3,), IGNORE_INDEX)
    assert distillation_loss(logits, logits + 1, unlabelled, temperature=1.0, alpha=0.0).item() == 0.0
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(logits, logits, labels, temperature=0.0, alpha=0.5)


def test_t_squared_keeps_the_soft_gradient_scale() -> None:
    """Without T^2 the soft gradient shrinks as 1/T^2 at high T; with it, it stays of order 1."""
    torch.manual_seed(1)
    teacher = torch.randn(64, 5) * 3
    norms = []
    for temperature in (4.0, 16.0):
        student = torch.randn(64, 5, generator=torch.Generator().manual_seed(2)).requires_grad_()
        loss: Any = distillation_loss(
            student, teacher, torch.full((64,), IGNORE_INDEX), temperature=temperature, alpha=1.0
        )
        loss.backward()
        assert student.grad is not None
        norms.append(float(student.grad.norm()))
    # d(T^2 KL)/ds = T (p_s - p_t), and p_s - p_t shrinks as 1/T: the gradient stays of the same size
    assert 0.5 < norms[0] / norms[1] < 2


# Section: alignment.


def test_align_soft_labels_by_text_in_order_with_duplicates() -> None:
    cached = ["a", "b", "c"]
    logits = np.arange(9, dtype=np.float32).reshape(3, 3)
    aligned = align_soft_labels(["c", "a", "c"], cached, logits)
    assert aligned.tolist() == [logits[2].tolist(), logits[0].tolist(), logits[2].tolist()]
    assert align_soft_labels([], cached, logits).shape == (0, 3)
    with pytest.raises(KeyError, match="no teacher logits"):
        align_soft_labels(["a", "zzz"], cached, logits)
    with pytest.raises(ValueError, match="rows"):
        align_soft_labels(["a"], cached, logits[:2])


def test_unique_texts_and_keys() -> None:
    assert unique_texts(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert text_key("x") != text_key("x ")


@pytest.mark.parametrize("name", ["phrasebank", "phrasebank-full"])
def test_shipped_profile_loads_and_its_dev_carve_is_excluded_from_pretraining(name: str) -> None:
    from textpulse.ml.pretrain import PROFILES_DIR, DevCarve, dev_carves

    from .config import load_config_file

    config = load_distill_config(load_config_file(distill_profile(name)) | {"output_dir": "/tmp/x"})
    student, teacher = config.train_config("student"), config.train_config("teacher")
    assert teacher.base_model is not None
    # teacher and student are scored on the same dev rows, which pretraining never reads
    assert (teacher.dev_fraction, teacher.data_seed) == (student.dev_fraction, student.data_seed)
    assert DevCarve("phrasebank", student.dev_fraction, student.data_seed) in dev_carves(PROFILES_DIR)


# Section: end to end (tiny model).


def _tiny_base(folder: Path) -> str:
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    folder.mkdir(parents=True)
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "and",
        *sorted({w for ws in WORDS.values() for w in ws}),
    ]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def _phrasebank_file(path: Path, rows: int = 90) -> str:
    rng = random.Random(0)
    lines = []
    for i in range(rows):
        label = ["positive", "negative", "neutral"][i % 3]
        words = rng.sample(WORDS[label], 3) + rng.sample(WORDS["neutral"], 1) + ["the"] * (i % 4)
        lines.append(" ".join(words) + f" {i}@{label}")
    path.write_text("\n".join(lines) + "\n", "latin-1")
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("distill")
    return {"base": _tiny_base(root / "base"), "data": _phrasebank_file(root / "pb.txt")}


def _config(tiny: dict[str, str], out: Path, **extra: Any) -> DistillConfig:
    common = {
        "train_file": tiny["data"],
        "base_model": tiny["base"],
        "dev_fraction": 0.2,
        "max_length": 16,
        "batch_size": 8,
        "eval_batch_size": 16,
        "threads": 1,
        "device": "cpu",
        "progress": False,
        "lr": 1e-3,
    }
    values: dict[str, Any] = {
        "task": "phrasebank",
        "output_dir": out,
        "common": common,
        "teacher": {"epochs": 1, "seed": 3},
        "student": {"epochs": 1, "limit_train": 30, "seed": 5},
        "temperature": 2.0,
        "alpha": 0.5,
        "limit_unlabelled": 20,
    }
    return DistillConfig(**(values | extra))


@pytest.mark.slow
@pytest.mark.timeout(300)  # four stages and a second seed; tens of seconds on an idle 2-core machine
def test_distill_end_to_end_writes_what_train_writes(tiny: dict[str, str], tmp_path: Path) -> None:
    config = _config(tiny, tmp_path / "run", stages=["teacher", "soft_labels", "student", "baseline"])
    result = distill(config)
    for folder in ("teacher", "student-seed5", "baseline-seed5"):
        for name in ("metrics.json", "confusion_matrix.png", "README.md", "training_config.json", "config.json"):
            assert (tmp_path / "run" / folder / name).is_file(), f"{folder}/{name}"
    student = result["student"]
    assert student["train_rows"] == 30
    assert student["unlabelled_rows"] == 20
    assert result["baseline"]["unlabelled_rows"] == 0
    assert "distilled from" in (tmp_path / "run" / "student-seed5" / "README.md").read_text("utf-8")
    # soft labels: the student's 30 rows + its 20 unlabelled training rows, never a dev text
    with np.load(tmp_path / "run" / "soft_labels.npz") as cached:
        texts = set(cached["texts"].tolist())
        assert cached["logits"].shape == (len(texts), 3)
    from .train import load_data

    student_train = {e.text for e in load_data(config.train_config("student"), _preset())[0]}  # type: ignore[union-attr]
    train, dev, _, _ = load_data(config.train_config("student").model_copy(update={"limit_train": None}), _preset())
    assert len(texts) == 50
    assert student_train <= texts <= {e.text for e in train}  # type: ignore[union-attr]
    assert not texts & {e.text for e in dev}  # type: ignore[union-attr]
    # another seed reuses the finished teacher and adds only its own new texts to the cache
    again = distill(
        config.model_copy(update={"student": {**config.student, "seed": 6}, "stages": ["teacher", "soft_labels"]})
    )
    assert again["teacher"]["config_fingerprint"] == result["teacher"]["config_fingerprint"]
    assert 0 < again["soft_labels"]["computed"] < 50
    summary = json.loads((tmp_path / "run" / "distill_summary-seed5.json").read_text("utf-8"))
    assert summary["student"]["dev"]["accuracy"] == student["dev"]["accuracy"]


def _preset() -> Any:
    from .config import resolve_task

    return resolve_task("phrasebank")[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_interrupted_stage_resumes_after_its_last_epoch(
    tiny: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(tiny, tmp_path / "whole", stages=["teacher"], teacher={"epochs": 3, "seed": 3})
    whole = distill_module.run_stage(config.train_config("teacher"), role="teacher")

    interrupted = config.model_copy(update={"output_dir": tmp_path / "cut"})
    real = evaluate_all
    calls = {"n": 0}

    def crash_in_epoch_two(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "_evaluate_all", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        distill_module.run_stage(interrupted.train_config("teacher"), role="teacher")
    monkeypatch.setattr(distill_module, "_evaluate_all", real)
    resumed = distill_module.run_stage(interrupted.train_config("teacher"), role="teacher")

    assert [h["epoch"] for h in resumed.summary["history"]] == [1, 2, 3]
    assert resumed.summary["history"][0] == whole.summary["history"][0]
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value, resumed.model.state_dict()[key], atol=1e-6), key
