"""``textpulse pretrain`` (DAPT): leak-free corpus, whole-word masking, resumable run, usable as a base.

Tiny on purpose (a few dozen texts, a few steps, 16 tokens): it checks the pipeline, not quality.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from textpulse.datasets import TextExample
from textpulse.datasets.splits import near_duplicate_key
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
from textpulse.ml.pretrain import (
    PROFILES_DIR,
    PretrainConfig,
    build_corpus,
    dev_carves,
    encode_words,
    load_pretrain_config,
    mask_whole_words,
    pretrain,
    pretrain_profile,
)
from textpulse.ml.train import carves_dev, extra_task_config, load_data

pytestmark = pytest.mark.usefixtures("datasets_available", "base_model_path")

SOURCES = ["sentiment", "topic", "phrasebank", "clinc150", "banking77"]


@functools.cache
def _dev_keys(config_json: str, task: str) -> frozenset[str]:
    """Dev keys of one (task config): memoised, the quick and full profiles share most carves."""
    config = TrainConfig.model_validate_json(config_json)
    _, dev, _, _ = load_data(config, resolve_task(task)[1])
    return frozenset(near_duplicate_key(e.text) for e in dev if isinstance(e, TextExample))


def _profile_dev_keys(folder: str) -> dict[str, set[str]]:
    """Near-duplicate keys of the dev rows each profile of ``folder`` trains against, via train.load_data."""
    keys: dict[str, set[str]] = {}
    for path in sorted((PROFILES_DIR / folder).glob("*.yaml")):
        config = TrainConfig(output_dir=Path(), **{"task": path.stem, **load_config_file(path)})
        for index, requested in enumerate([config.task, *config.extra_tasks]):
            name, preset = resolve_task(requested)
            task_config = extra_task_config(config, name) if index else config
            if name not in SOURCES or not carves_dev(task_config, preset):
                continue
            # the whole carve (limit_dev only subsamples it): a superset of the rows scored
            for limit in (task_config.limit_dev, None):
                # only the fields that choose dev rows, so equal carves share the memo
                chooser = TrainConfig(
                    task=name,
                    output_dir=Path(),
                    dev_fraction=task_config.dev_fraction,
                    data_seed=task_config.data_seed,
                    seed=task_config.seed,
                    carve_dev=True,
                    limit_train=task_config.limit_train,
                    limit_dev=limit,
                )
                keys.setdefault(f"{folder}/{path.name}:{name}", set()).update(
                    _dev_keys(chooser.model_dump_json(), name)
                )
    return keys


def test_corpus_excludes_the_dev_rows_of_the_quick_and_full_profiles(tmp_path: Path) -> None:
    corpus = build_corpus(PretrainConfig(output_dir=tmp_path, limit_heldout=None))
    texts = {near_duplicate_key(t) for t in [*corpus.train, *corpus.heldout]}
    checked = 0
    for folder in ("quick", "full"):
        for profile, dev_keys in _profile_dev_keys(folder).items():
            assert dev_keys, profile
            assert not texts & dev_keys, f"{profile}: dev rows in the pretraining text"
            checked += 1
    # every carving task of both profiles (sentiment, topic, PhraseBank, CLINC150, Banking77 + the heads)
    assert checked >= 14
    carved = {c.task for c in dev_carves(PROFILES_DIR, ["quick", "full"])}
    assert carved == set(SOURCES)
    # held-out slice and training text are disjoint, and every text comes from a training file
    assert not {near_duplicate_key(t) for t in corpus.heldout} & {near_duplicate_key(t) for t in corpus.train}
    assert corpus.stats["n_train"] > 40_000


def test_corpus_never_reads_test_or_validation_splits(tmp_path: Path) -> None:
    from textpulse.datasets import load_text_examples

    corpus = build_corpus(PretrainConfig(output_dir=tmp_path, sources=["clinc150"], limit_heldout=None))
    train_texts = {e.text for e in load_text_examples("clinc150/data_full.json", dataset="clinc150:train")}
    assert set(corpus.train) | set(corpus.heldout) <= train_texts


def test_whole_word_masking_masks_every_sub_token_of_a_chosen_word(base_model_path: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    rows = encode_words(tokenizer, ["Quarterly earnings outperformed expectations at Nvidia"] * 8, 32)
    assert len(rows[0].input_ids) > 9, "some words must split into several sub-tokens"

    def draw(seed: int) -> dict[str, torch.Tensor]:
        return mask_whole_words(
            rows,
            pad_id=tokenizer.pad_token_id,
            mask_id=tokenizer.mask_token_id,
            vocab_size=tokenizer.vocab_size,
            probability=0.3,
            generator=torch.Generator().manual_seed(seed),
        )

    batch = draw(1)
    assert torch.equal(batch["labels"], draw(1)["labels"]), "masks are reproducible from the seed"
    for i, row in enumerate(rows):
        word_ids = row.word_ids or []
        targeted = {w for p, w in enumerate(word_ids) if batch["labels"][i, p] != -100}
        assert None not in targeted, "special tokens are never targets"
        assert len(targeted) == round(0.3 * len({w for w in word_ids if w is not None}))
        for p, w in enumerate(word_ids):
            assert (batch["labels"][i, p] != -100) == (w in targeted), "whole words only"
            if w in targeted:
                assert batch["labels"][i, p] == row.input_ids[p]
    masked = batch["input_ids"] == tokenizer.mask_token_id
    assert masked.any()
    assert bool((batch["labels"][masked] != -100).all())


def _tiny(out: Path, **overrides: object) -> PretrainConfig:
    values: dict[str, object] = {
        "output_dir": out,
        "sources": ["phrasebank", "banking77"],
        "limit_texts": 48,
        "limit_heldout": 16,
        "max_length": 16,
        "batch_size": 8,
        "max_steps": 4,
        "head_warmup_steps": 1,
        "checkpoint_every": 100,  # only the stop_after_steps checkpoint: disk writes are the slow part
        "threads": 2,
        "progress": False,
        "seed": 5,
    }
    values.update(overrides)
    return PretrainConfig.model_validate(values)


def test_tiny_pretrain_resumes_exactly_and_is_a_fine_tuning_base(tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from textpulse.ml.modeling import build_model

    straight = pretrain(_tiny(tmp_path / "straight"))
    assert straight["finished"]
    assert straight["steps"] == 4
    held = straight["heldout"]
    assert held["after"]["mlm_loss"] < held["before"]["mlm_loss"]
    assert held["after_head_warmup"]["masked_tokens"] == held["before"]["masked_tokens"] > 0

    # interrupted after 2 steps, then resumed: the same weights as the uninterrupted run
    first = pretrain(_tiny(tmp_path / "resumed", stop_after_steps=2))
    assert not first["finished"]
    assert (tmp_path / "resumed" / "checkpoint" / "state.pt").is_file()
    with pytest.raises(ValueError, match="another configuration"):  # never resumes another recipe's state
        pretrain(_tiny(tmp_path / "resumed", lr=1e-3))
    resumed = pretrain(_tiny(tmp_path / "resumed"))
    assert resumed["finished"]
    assert resumed["heldout"]["before"] == held["before"]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    assert not (tmp_path / "resumed" / "checkpoint").exists(), "the checkpoint goes once the run is done"

    out = tmp_path / "straight"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fresh_head_weights"], "the sentence-transformer checkpoint ships no MLM head"
    assert "Held-out masked-LM loss" in (out / "README.md").read_text()
    assert PretrainConfig.model_validate_json((out / "pretrain_config.json").read_text()).max_steps == 4

    # the fine-tuning config takes the folder as its base: the encoder is the adapted one
    model = build_model(str(out), "sequence", ["negative", "neutral", "positive"])
    adapted = a["bert.embeddings.word_embeddings.weight"]
    torch.testing.assert_close(model.encoder.embeddings.word_embeddings.weight.detach(), adapted)
    torch.testing.assert_close(
        model.encoder.encoder.layer[0].attention.self.query.weight.detach(),
        a["bert.encoder.layer.0.attention.self.query.weight"],
    )


def test_shipped_profiles_load(tmp_path: Path) -> None:
    for name in ("quick", "full"):
        config = load_pretrain_config({**load_config_file(pretrain_profile(name)), "output_dir": tmp_path})
        assert config.sources == SOURCES
    dapt = load_config_file(PROFILES_DIR / "dapt" / "phrasebank.yaml")
    quick = load_config_file(PROFILES_DIR / "quick" / "phrasebank.yaml")
    # same recipe as the quick profile, only the base differs: the comparison isolates the base
    assert {k: v for k, v in dapt.items() if k != "base_model"} == quick
    assert TrainConfig(task="phrasebank", output_dir=tmp_path, **dapt).base_model == ".cache/pretrain/quick"
