"""Loader tests: counts per file must match the data set READMEs / SOURCE.md."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from textpulse.datasets import (
    TextExample,
    TokenExample,
    data_dir,
    detect_dataset,
    dev_split,
    label_names,
    load_text_examples,
    load_token_examples,
)
from textpulse.datasets.settings import DEFAULT_DATA_DIR

from tests.ci import require_dataset


@pytest.fixture
def _shared_data() -> None:
    require_dataset()


needs_data = pytest.mark.usefixtures("_shared_data")


@needs_data
@pytest.mark.parametrize(
    ("path", "count", "label_counts"),
    [
        ("twitter_fin_sentiment", 9543, {"Bearish": 1442, "Bullish": 1923, "Neutral": 6178}),
        ("twitter_fin_topic/topic_train.csv", 16990, {"Analyst Update": 255, "IPO": 44, "Macro": 1822}),
        ("fin_phrasebank/Sentences_50Agree.txt", 3875, None),
        ("banking77/train.csv", 10003, {"contactless_not_working": 35, "card_payment_fee_charged": 187}),
    ],
)
def test_text_counts(path: str, count: int, label_counts: dict[str, int] | None) -> None:
    examples = load_text_examples(path)
    assert len(examples) == count
    assert all(e.label is not None and e.text for e in examples)
    if label_counts:
        counts = Counter(e.label for e in examples)
        for label, expected in label_counts.items():
            assert counts[label] == expected


@needs_data
def test_topic_has_all_twenty_classes() -> None:
    counts = Counter(e.label for e in load_text_examples("twitter_fin_topic"))
    assert set(counts) == set(label_names("twitter_fin_topic"))
    assert counts["Company | Product News"] == 3545


@needs_data
def test_phrasebank_splits_on_last_at_and_reads_latin1() -> None:
    examples = load_text_examples("fin_phrasebank")
    assert {e.label for e in examples} == {"positive", "neutral", "negative"}
    assert any("@" in e.text for e in examples) or all(not e.text.endswith("@") for e in examples)
    # Agreement subsets are nested: AllAgree has fewer, unanimous sentences.
    assert len(load_text_examples("fin_phrasebank/Sentences_AllAgree.txt")) < len(examples)


@needs_data
def test_clinc_splits_and_oos() -> None:
    train = load_text_examples("clinc150/data_full.json", dataset="clinc150:train")
    val = load_text_examples("clinc150/data_full.json", split="val")
    assert len(train) == 15000 + 100
    assert len(val) == 3000 + 100
    assert Counter(e.label for e in train)["oos"] == 100
    assert len({e.label for e in train}) == 151
    assert len(load_text_examples("clinc150", dataset="clinc150:oos_val")) == 100
    assert set(label_names("clinc150")) >= {e.label for e in val}
    assert len(label_names("clinc150")) == 151


@needs_data
@pytest.mark.parametrize(
    ("path", "sentences", "tokens", "tag_counts"),
    [
        ("finer_ord/train.csv", 3262, 80531, {"O": 74462, "B-PER": 821, "I-ORG": 1414}),
        ("finer_ord/val.csv", 402, 10233, {"B-ORG": 274, "I-LOC": 74}),
        ("wnut17/wnut17train.conll", 3394, 62730, {"O": 59570, "B-person": 660, "I-group": 150}),
        ("wnut17/emerging.dev.conll", 1009, 15733, {"B-product": 114}),
    ],
)
def test_token_counts(path: str, sentences: int, tokens: int, tag_counts: dict[str, int]) -> None:
    examples = load_token_examples(path)
    assert len(examples) == sentences
    assert sum(len(e.tokens) for e in examples) == tokens
    assert all(len(e.tokens) == len(e.tags) for e in examples)
    counts = Counter(t for e in examples for t in e.tags)
    for tag, expected in tag_counts.items():
        assert counts[tag] == expected
    assert set(counts) <= set(label_names(path.split("/", maxsplit=1)[0]))


@needs_data
def test_ids_are_stable_and_unique() -> None:
    first = load_text_examples("twitter_fin_sentiment")
    again = load_text_examples("twitter_fin_sentiment")
    assert [e.id for e in first] == [e.id for e in again]
    assert len({e.id for e in first}) == len(first)
    assert first[0].id == "twitter_fin_sentiment:sent_train:0"


def test_generic_jsonl_and_csv(tmp_path: Path) -> None:
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n\n{"text": "b"}\n', "utf-8")
    assert load_text_examples(jsonl) == [
        TextExample("jsonl:mine:0", "a", "x"),
        TextExample("jsonl:mine:2", "b", None),
    ]
    csv_file = tmp_path / "other.csv"
    csv_file.write_text('sentence,intent\n"hi, there",greet\n', "utf-8")
    assert load_text_examples(csv_file) == [TextExample("csv:other:0", "hi, there", "greet")]


def test_phrasebank_last_at(tmp_path: Path) -> None:
    folder = tmp_path / "fin_phrasebank"
    folder.mkdir()
    (folder / "Sentences_X.txt").write_bytes("mail me@corp caf\xe9 up 5%@positive\n".encode("latin-1"))
    assert load_text_examples(folder / "Sentences_X.txt") == [
        TextExample("fin_phrasebank:Sentences_X:0", "mail me@corp café up 5%", "positive"),
    ]


def test_conll_whitespace_separators(tmp_path: Path) -> None:
    path = tmp_path / "x.conll"
    path.write_text("A\tB-person\nb\tO\n\t\nc\tO\n\n", "utf-8")
    assert load_token_examples(path) == [
        TokenExample("wnut17:x:0", ["A", "b"], ["B-person", "O"]),
        TokenExample("wnut17:x:1", ["c"], ["O"]),
    ]


def test_detect_dataset_names() -> None:
    assert detect_dataset(Path("/x/twitter_fin_sentiment/sent_valid.csv")) == "twitter_fin_sentiment"
    assert detect_dataset(Path("/elsewhere/sent_valid.csv")) == "twitter_fin_sentiment"
    assert detect_dataset(Path("/x/banking77/test.csv")) == "banking77"
    assert detect_dataset(Path("/x/emerging.test.annotated")) == "wnut17"
    assert detect_dataset(Path("/x/finer_ord/test.csv")) == "finer_ord"


def test_dev_split_deterministic_stratified_and_leak_free() -> None:
    # texts told apart by letters: numbers are folded by the near-duplicate key
    names = [chr(97 + g // 26) + chr(97 + g % 26) for g in range(90)]
    examples = [TextExample(str(i), f"t {names[i % 90]}", "a" if i % 3 else "b") for i in range(300)]
    train, dev = dev_split(examples, fraction=0.2, seed=13)
    train2, dev2 = dev_split(examples, fraction=0.2, seed=13)
    assert [e.id for e in dev] == [e.id for e in dev2]
    assert [e.id for e in train] == [e.id for e in train2]
    assert len(train) + len(dev) == len(examples)
    assert not {e.text for e in train} & {e.text for e in dev}
    assert {e.label for e in dev} == {"a", "b"}
    _, dev_other = dev_split(examples, fraction=0.2, seed=14)
    assert [e.id for e in dev_other] != [e.id for e in dev]


def test_data_dir_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TEXTPULSE_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("TEXTPULSE_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="TEXTPULSE_DATA_DIR"):
        data_dir()
    assert DEFAULT_DATA_DIR.name == "datasets"


@needs_data
def test_label_names_banking_order_matches_categories() -> None:
    categories = json.loads((data_dir() / "banking77" / "categories.json").read_text("utf-8"))
    assert label_names("banking77") == categories
    assert label_names("clinc150:train")[-1] == "oos"
