"""The bi-encoder's fine-tuning: pair and hard-negative mining, batching, the loss, resumable training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from textpulse.recsys.data import Rating, temporal_split
from textpulse.recsys.train import (
    CHECKPOINT,
    EmbedOnce,
    Example,
    TrainConfig,
    batch_examples,
    contrastive_loss,
    fit,
    mine_examples,
)


def _r(user: str, item: str, rating: float, t: float) -> Rating:
    return Rating(user, item, rating, t)


def test_pairs_are_consecutive_positives_and_negatives_the_users_own_unliked_items() -> None:
    ratings = [
        _r("u", "a", 5, 1),
        _r("u", "x", 2, 2),
        _r("u", "b", 4, 3),
        _r("u", "y", 1, 4),
        _r("u", "c", 5, 5),
        _r("v", "a", 5, 1),
        _r("v", "b", 5, 2),  # v has no unliked item: negatives are popular items v never rated
        _r("w", "c", 4, 1),
        _r("w", "d", 4, 2),
    ]
    examples = mine_examples(ratings, hard_negatives=2, seed=1)
    by_user = {(e.user, e.anchor, e.positive): e.negatives for e in examples}
    assert set(by_user) == {("u", "a", "b"), ("u", "b", "c"), ("v", "a", "b"), ("w", "c", "d")}
    assert set(by_user["u", "a", "b"]) == {"x", "y"}
    assert by_user["v", "a", "b"] == ("c", "d")  # c (2 positives) before d (1); a, b are v's own
    assert set(by_user["w", "c", "d"]) <= {"a", "b"}
    assert mine_examples(ratings, hard_negatives=2, seed=1) == examples  # deterministic
    assert all(not e.negatives for e in mine_examples(ratings, hard_negatives=0, seed=1))


def test_mining_reads_only_the_train_part() -> None:
    """A rating of the held-out period never becomes a pair or a negative (time-honest)."""
    ratings = [_r("u", f"i{n}", 5 if n % 2 else 2, n) for n in range(10)]
    train, held = temporal_split(ratings, 0.3)
    examples = mine_examples(train, hard_negatives=3, seed=0)
    used = {i for e in examples for i in e.items}
    assert used
    assert not used & {r.item for r in held}


def test_batches_hold_no_text_twice_and_defer_conflicts() -> None:
    texts = {i: f"text {i}" for i in "abcdefghijklmnop"}
    texts["z"] = texts["a"]  # another item with the same text
    examples = [
        Example("u", "a", "b", ("c",)),
        Example("v", "b", "d", ()),  # b again: waits for another batch
        Example("w", "e", "f", ("g",)),
        Example("x", "h", "i", ()),
        Example("y", "j", "k", ()),
        Example("y", "l", "m", ()),
        Example("y", "n", "o", ()),
        Example("y", "z", "p", ()),  # z reads as a: not with the first example
        Example("y", "a", "z", ()),  # anchor and positive read the same: left out
    ]
    batches, dropped = batch_examples(examples, texts, size=4)
    assert dropped == 1
    assert sum(len(b) for b in batches) == len(examples) - 1
    for batch in batches:
        keys = [texts[i] for e in batch for i in e.items]
        assert len(keys) == len(set(keys))


def test_loss_without_hard_negatives_is_the_symmetric_in_batch_loss() -> None:
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    target = torch.arange(5)
    ce = torch.nn.functional.cross_entropy
    expected = (ce(20 * q @ p.T, target) + ce(20 * p @ q.T, target)) / 2
    assert float(contrastive_loss(q, p, None, 20.0)) == pytest.approx(float(expected))
    # With hard negatives: anchor i chooses among every positive and every hard negative of the batch.
    h = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    logits = (20 * q @ torch.cat([p, h]).T).numpy()
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    forward = -float(np.mean(log_softmax[np.arange(5), np.arange(5)]))
    backward = float(torch.nn.functional.cross_entropy(20 * p @ q.T, target))
    assert float(contrastive_loss(q, p, h, 20.0)) == pytest.approx((forward + backward) / 2, rel=1e-5)


def test_a_hard_negative_close_to_the_positive_costs_more_than_a_far_one() -> None:
    q = torch.eye(4)
    p = torch.eye(4)
    near = torch.nn.functional.normalize(torch.eye(4)[:1] + 0.1, dim=-1)
    far = -torch.eye(4)[:1]
    assert float(contrastive_loss(q, p, near, 20.0)) > float(contrastive_loss(q, p, far, 20.0))
    assert float(contrastive_loss(q, p, far, 20.0)) == pytest.approx(float(contrastive_loss(q, p, None, 20.0)))


WORDS = [
    "star",
    "voyage",
    "space",
    "ship",
    "paris",
    "love",
    "romance",
    "war",
    "night",
    "city",
    "comedy",
    "drama",
    "sci",
    "fi",
    "action",
    "film",
]


def _tiny_base(folder: Path) -> str:
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", "utf-8")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return str(folder)


def _data() -> tuple[list[Example], dict[str, str]]:
    texts = {str(n): " ".join(WORDS[(n * 3 + j) % len(WORDS)] for j in range(2 + n % 3)) for n in range(40)}
    ratings = [_r(f"u{u}", str((u * 7 + n) % 40), 5 if n % 3 else 1, n) for u in range(6) for n in range(12)]
    return mine_examples(ratings, hard_negatives=1, seed=0), texts


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_fit_trains_the_top_layers_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    base = _tiny_base(tmp_path / "base")
    examples, texts = _data()
    config = TrainConfig(batch_size=4, epochs=2, hard_negatives=1, train_layers=1, checkpoint_every=2, threads=1)
    whole, _, info = fit(config, base, examples, texts, tmp_path / "whole")
    assert info["complete"]
    assert info["steps_done"] == info["steps"] >= 6
    assert len(info["loss_per_epoch"]) == config.epochs
    from transformers import AutoModel

    start = _weights(AutoModel.from_pretrained(base))
    end = _weights(whole)
    assert torch.equal(start["embeddings.word_embeddings.weight"], end["embeddings.word_embeddings.weight"])
    assert torch.equal(start["encoder.layer.0.output.dense.weight"], end["encoder.layer.0.output.dense.weight"])
    assert not torch.equal(start["encoder.layer.1.output.dense.weight"], end["encoder.layer.1.output.dense.weight"])

    # Interrupted after 3 steps (checkpoint at step 2), then rerun: the same weights as one run.
    cut = tmp_path / "cut"
    _, _, part = fit(config, base, examples, texts, cut, stop_after=3)
    assert not part["complete"]
    assert (cut / CHECKPOINT).is_file()
    _, _, part = fit(config, base, examples, texts, cut, stop_after=1)  # resumes at step 2, not 3
    assert part["steps_done"] == 3
    resumed, _, rest = fit(config, base, examples, texts, cut)
    assert rest["complete"]
    assert rest["loss_per_epoch"] == pytest.approx(info["loss_per_epoch"], rel=1e-4)
    for name, value in _weights(resumed).items():
        assert torch.allclose(value, end[name], atol=1e-5), name

    with pytest.raises(ValueError, match="another config"):
        fit(config.model_copy(update={"lr": 1e-3}), base, examples, texts, cut)


def test_embed_once_embeds_each_distinct_text_once() -> None:
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)

    once = EmbedOnce(encode)
    first = once(["a", "bb", "a"])
    assert calls == [["a", "bb"]]
    assert first.tolist() == [[1.0, 1.0], [2.0, 1.0], [1.0, 1.0]]
    once.remember(["ccc"], np.array([[9.0, 9.0]], dtype=np.float32))  # e.g. read from the vector cache
    assert once(["bb", "ccc", "dddd"]).tolist() == [[2.0, 1.0], [9.0, 9.0], [4.0, 1.0]]
    assert calls == [["a", "bb"], ["dddd"]]
