"""Sub-word label alignment and word/character offset mapping."""

from __future__ import annotations

from textpulse.ml.tokenization import (
    IGNORE_INDEX,
    Word,
    align_labels,
    bio_entities,
    first_subtoken_positions,
    spans_from_tags,
    split_words,
)


def test_align_labels_first_subtoken_only() -> None:
    # [CLS] kenyan firms @ paul ##walk [SEP]  (word 2 is "@paulwalk" split in three)
    word_ids = [None, 0, 1, 2, 2, 2, None]
    assert align_labels(word_ids, [5, 6, 1]) == [IGNORE_INDEX, 5, 6, 1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_align_labels_with_padding_and_truncation() -> None:
    # word 2 truncated away; trailing pads (None) are ignored
    assert align_labels([None, 0, 0, 1, None, None], [3, 4, 5]) == [
        IGNORE_INDEX,
        3,
        IGNORE_INDEX,
        4,
        IGNORE_INDEX,
        IGNORE_INDEX,
    ]


def test_alignment_with_real_tokenizer(base_model_path: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    words = ["Goldman", "Sachs", "hired", "Jane", "Smithsonianovich"]
    encoding = tokenizer([words], is_split_into_words=True)
    word_ids = encoding.word_ids(0)
    aligned = align_labels(word_ids, [5, 6, 0, 1, 2])
    labelled = [label for label in aligned if label != IGNORE_INDEX]
    assert labelled == [5, 6, 0, 1, 2]
    positions = first_subtoken_positions(word_ids)
    assert sorted(positions) == [0, 1, 2, 3, 4]
    tokens = encoding.tokens(0)
    assert not tokens[positions[4]].startswith("##")


def test_split_words_offsets() -> None:
    text = "Apple's CEO met U.S. officials, in New York."
    words = split_words(text)
    assert [w.text for w in words][:4] == ["Apple's", "CEO", "met", "U.S"]
    assert all(text[w.start : w.end] == w.text for w in words)


def test_spans_from_tags_char_offsets_and_lenient_i() -> None:
    text = "Tim Cook visited  New York for Apple"
    words = split_words(text)
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "I-ORG"]
    spans = spans_from_tags(words, tags, [0.9, 0.7, 1.0, 0.8, 0.6, 1.0, 0.5], text)
    assert [(s["entity"], s["text"], s["start"], s["end"]) for s in spans] == [
        ("PER", "Tim Cook", 0, 8),
        ("LOC", "New York", 18, 26),
        ("ORG", "Apple", 31, 36),
    ]
    assert abs(spans[0]["score"] - 0.8) < 1e-9


def test_spans_break_on_type_change() -> None:
    words = [Word("a", 0, 1), Word("b", 2, 3)]
    spans = spans_from_tags(words, ["B-PER", "I-LOC"])
    assert [(s["entity"], s["text"]) for s in spans] == [("PER", "a"), ("LOC", "b")]


def test_bio_entities_b_after_b_needs_joined_words() -> None:
    tags = ["B-ORG", "B-ORG", "O", "I-PER", "B-PER", "B-LOC"]
    # pre-split words (joined=None): each follows the one before
    assert bio_entities(tags) == [("ORG", [0, 1]), ("PER", [3, 4]), ("LOC", [5])]
    # a word not joined to the previous one (text unknown): a second B starts a new entity
    assert bio_entities(tags, [False] * len(tags)) == [
        ("ORG", [0]),
        ("ORG", [1]),
        ("PER", [3]),
        ("PER", [4]),
        ("LOC", [5]),
    ]
    assert bio_entities([]) == []
