"""A second token data set mixed into NER training (``TrainConfig.mix``): mapping, carve, cap, weight.

Tiny hand-made data; the one training run (slow) reads tiny files written here.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest
from textpulse.datasets import TokenExample
from textpulse.datasets.labels import FINER_ORD_TAGS, WNUT17_TAGS
from textpulse.ml.config import TokenMix, TrainConfig, load_config_file
from textpulse.ml.mix import check_label_map, drop_twins, load_mix, map_tags, split_mix, weighted
from textpulse.ml.social import URL_WORD, USER_WORD
from textpulse.ml.tokenization import normalise_words

SOCIAL = {"person": "PER", "location": "LOC", "corporation": "ORG", "group": "ORG"}
#: (words, BIO tags) per sentence
Sentences = list[tuple[list[str], list[str]]]
PROFILE = Path(__file__).resolve().parents[2] / "libs" / "textpulse" / "ml" / "profiles" / "social" / "finer_ord.yaml"


def _examples(n: int) -> list[TokenExample]:
    """``n`` distinct tweets (distinct near-duplicate keys), a person, a product and a link each."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return [
        TokenExample(
            f"wnut:{i}",
            ["Jane", "Doe", "loves", "iPhone", words[i % 8], words[i // 8 % 8], "http://t.co/x"],
            ["B-person", "I-person", "O", "B-product", "O", "O", "O"],
        )
        for i in range(n)
    ]


def test_types_are_mapped_and_unmapped_types_become_o() -> None:
    tags = ["B-person", "I-person", "O", "B-corporation", "B-group", "I-group", "B-product", "I-creative-work"]
    assert map_tags(tags, SOCIAL) == ["B-PER", "I-PER", "O", "B-ORG", "B-ORG", "I-ORG", "O", "O"]


def test_mapped_rows_are_normalised_like_the_main_set() -> None:
    (example,) = _examples(1)
    words, tags = normalise_words(["@jane", *example.tokens], ["B-person", *map_tags(example.tags, SOCIAL)])
    # the handle and the link become placeholders tagged O, whatever the mixed set said
    assert words[0] == USER_WORD
    assert words[-1] == URL_WORD
    assert tags == ["O", "B-PER", "I-PER", "O", "O", "O", "O", "O"]


def test_a_label_map_with_a_typo_or_an_unknown_target_is_refused() -> None:
    check_label_map(SOCIAL, WNUT17_TAGS, FINER_ORD_TAGS)
    with pytest.raises(ValueError, match="does not have"):
        check_label_map({"persn": "PER"}, WNUT17_TAGS, FINER_ORD_TAGS)
    with pytest.raises(ValueError, match="outside the model's labels"):
        check_label_map({"product": "MISC"}, WNUT17_TAGS, FINER_ORD_TAGS)


def test_weight_repeats_and_samples() -> None:
    rows = _examples(10)
    assert weighted(rows, 0, random.Random(1)) == []
    assert weighted(rows, 1, random.Random(1)) == rows
    twice_and_a_half = weighted(rows, 2.5, random.Random(1))
    assert len(twice_and_a_half) == 25
    counts = [sum(e.id == r.id for e in twice_and_a_half) for r in rows]
    assert sorted(counts) == [2] * 5 + [3] * 5  # every row twice, half of them once more


def test_dev_is_carved_first_and_is_the_same_for_every_seed_cap_and_weight() -> None:
    examples = _examples(40)
    mix = TokenMix(task="wnut17", label_map=SOCIAL, dev_fraction=0.25)
    train, dev, sentences = split_mix(examples, mix, data_seed=13, seed=13)
    assert (len(train), len(dev), sentences) == (30, 10, 30)
    assert {e.id for e in train}.isdisjoint(e.id for e in dev)
    assert all(set(e.tags) <= {"O", "B-PER", "I-PER"} for e in [*train, *dev])
    for seed, limit, weight in [(7, None, 1.0), (13, 5, 1.0), (13, None, 0.0), (7, 8, 2.0)]:
        varied = TokenMix(task="wnut17", label_map=SOCIAL, dev_fraction=0.25, limit=limit, weight=weight)
        other_train, other_dev, other_sentences = split_mix(examples, varied, data_seed=13, seed=seed)
        assert [e.id for e in other_dev] == [e.id for e in dev]
        assert other_sentences == (0 if weight == 0 else min(limit or 30, 30))
        assert len(other_train) == round(other_sentences * weight)
        assert {e.id for e in other_train} <= {e.id for e in train}
    capped_dev = split_mix(
        examples, TokenMix(task="wnut17", label_map=SOCIAL, dev_fraction=0.25, limit_dev=4), data_seed=13, seed=1
    )[1]
    assert len(capped_dev) == 4
    assert {e.id for e in capped_dev} <= {e.id for e in dev}


def test_dev_fraction_zero_trains_on_every_sentence_and_scores_none() -> None:
    examples = _examples(40)
    train, dev, sentences = split_mix(
        examples, TokenMix(task="wnut17", label_map=SOCIAL, dev_fraction=0), data_seed=13, seed=13
    )
    assert (len(train), dev, sentences) == (40, [], 40)
    with pytest.raises(ValueError, match="neither trains nor scores"):
        TokenMix(task="wnut17", label_map=SOCIAL, dev_fraction=0, weight=0)


def test_mixed_rows_that_are_twins_of_the_primary_dev_rows_are_dropped() -> None:
    rows = _examples(5)
    # the same sentence with other case and another number is the same near-duplicate key
    twin = TokenExample("dev:0", [w.upper() if w.isalpha() else w for w in rows[2].tokens], rows[2].tags)
    kept = drop_twins(rows, [twin, TokenExample("dev:1", ["unrelated", "words"], ["O", "O"])])
    assert [e.id for e in kept] == ["wnut:0", "wnut:1", "wnut:3", "wnut:4"]


def test_test_splits_and_sequence_tasks_are_refused() -> None:
    with pytest.raises(ValueError, match="test split"):
        load_mix(
            TokenMix(task="wnut17", file="wnut17/emerging.test.annotated", label_map=SOCIAL),
            FINER_ORD_TAGS,
            data_seed=13,
            seed=13,
        )
    with pytest.raises(ValueError, match="not a token"):
        load_mix(TokenMix(task="sentiment", label_map=SOCIAL), FINER_ORD_TAGS, data_seed=13, seed=13)


def test_the_social_profile_loads(tmp_path: Path) -> None:
    config = TrainConfig(task="finer_ord", output_dir=tmp_path, **load_config_file(PROFILE))
    quick = load_config_file(PROFILE.parents[1] / "quick" / "finer_ord.yaml")
    # the quick recipe with 600 of its FiNER rows given to the mix: same rows, same cost, so the
    # comparison isolates what the mixed data is worth
    social = load_config_file(PROFILE)
    assert {k: v for k, v in social.items() if k not in {"mix", "limit_train"}} == {
        k: v for k, v in quick.items() if k != "limit_train"
    }
    (mix,) = config.mix
    assert (mix.task, mix.label_map, mix.limit, mix.weight) == ("wnut17", SOCIAL, 600, 1.0)
    assert social["limit_train"] + mix.limit == quick["limit_train"] == 2400


def test_the_full_wnut17_profile_trains_on_the_official_dev_file_and_carves_its_dev_from_train(
    tmp_path: Path,
) -> None:
    from textpulse.ml.config import resolve_task

    profiles = PROFILE.parents[1]
    config = TrainConfig(task="wnut17", output_dir=tmp_path, **load_config_file(profiles / "full" / "wnut17.yaml"))
    (mix,) = config.mix
    assert (mix.file, mix.dev_fraction, mix.weight) == (resolve_task("wnut17")[1].dev, 0, 1.0)
    # the same six types, nothing mapped away
    assert mix.label_map == {kind: kind for kind in {tag.partition("-")[2] for tag in WNUT17_TAGS if tag != "O"}}
    # the checkpoint cannot be chosen on rows it trains on
    assert config.carve_dev is True
    # the ablation that measured it is the same recipe with half of that file held out
    ablation = load_config_file(profiles / "ablation" / "wnut17.yaml")
    full = load_config_file(profiles / "full" / "wnut17.yaml")
    assert {k: v for k, v in ablation.items() if k != "mix"} == {k: v for k, v in full.items() if k != "mix"}
    assert ablation["mix"][0]["dev_fraction"] == 0.5


def _finer_csv(path: Path, sentences: Sentences) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["gold_label", "gold_token", "doc_idx", "sent_idx"])
        for index, (tokens, tags) in enumerate(sentences):
            writer.writerows(
                [FINER_ORD_TAGS.index(tag), token, 0, index] for token, tag in zip(tokens, tags, strict=True)
            )
    return path


def _conll(path: Path, examples: list[TokenExample]) -> Path:
    path.write_text(
        "".join("".join(f"{t}\t{g}\n" for t, g in zip(e.tokens, e.tags, strict=True)) + "\n" for e in examples), "utf-8"
    )
    return path


def _train_with_mix(
    tmp_path: Path, news: Sentences, dev: Sentences, mix: TokenMix, *, max_steps: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training summary, the model's ``config.json`` meta) of a tiny FiNER-ORD run with ``mix``."""
    from textpulse.ml.train import fit

    config = TrainConfig(
        task="finer_ord",
        output_dir=tmp_path / "model",
        train_file=str(_finer_csv(tmp_path / "train.csv", news)),
        dev_file=str(_finer_csv(tmp_path / "val.csv", dev)),
        mix=[mix],
        max_steps=max_steps,
        batch_size=8,
        max_length=32,
        threads=1,
        progress=False,
    )
    summary = fit(config).summary
    return summary, json.loads((tmp_path / "model" / "config.json").read_text("utf-8"))["textpulse"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("base_model_path")
def test_training_with_a_mix_scores_its_dev_split(tmp_path: Path) -> None:
    news = [
        (
            ["Goldman", "Sachs", "hired", "Jane", "Smith", "in", "London", "."],
            ["B-ORG", "I-ORG", "O", "B-PER", "I-PER", "O", "B-LOC", "O"],
        )
    ] * 8
    mix = TokenMix(
        task="wnut17",
        file=str(_conll(tmp_path / "social.conll", _examples(20))),
        label_map=SOCIAL,
        limit=6,
        weight=1.5,
    )
    summary, meta = _train_with_mix(tmp_path, news, news[:2], mix, max_steps=2)
    assert set(summary["dev_mix"]) == {"wnut17"}
    assert summary["dev_mix"]["wnut17"]["n"] == 2  # 10 % of 20 sentences, never trained on
    assert {"micro_f1", "weighted_f1", "per_type"} <= set(summary["dev_mix"]["wnut17"])
    assert meta["n_train"] == 8 + 9  # 6 sentences x 1.5
    assert meta["mix"]["wnut17"]["n_dev"] == 2
    assert "CC BY 4.0" in meta["data_licence"]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("base_model_path")
def test_training_on_a_whole_mixed_file_drops_twins_of_the_primary_dev_rows(tmp_path: Path) -> None:
    social = _examples(6)
    dev = [(list(social[0].tokens), ["B-PER", "I-PER", "O", "O", "O", "O", "O"])]  # a twin of a mixed row
    news = [(["Goldman", "Sachs", "hired", "Jane", "Smith", "."], ["B-ORG", "I-ORG", "O", "B-PER", "I-PER", "O"])] * 8
    mix = TokenMix(task="wnut17", file=str(_conll(tmp_path / "dev.conll", social)), label_map=SOCIAL, dev_fraction=0)
    summary, meta = _train_with_mix(tmp_path, news, dev, mix, max_steps=1)
    assert "dev_mix" not in summary  # nothing carved, nothing scored
    assert meta["n_train"] == 8 + 5
    assert "; 1 dropped as near-twins of primary dev rows" in meta["mix"]["wnut17"]["train_data"]
    assert meta["mix"]["wnut17"]["n_dev"] == 0
    # the preset may still call that file a dev file: evaluation refuses to score training data
    from textpulse.ml.evaluation_cli import EvalError, run_eval

    with pytest.raises(EvalError, match="training data of this model"):
        run_eval("finer_ord", tmp_path / "model", str(tmp_path / "dev.conll"), threads=1)
