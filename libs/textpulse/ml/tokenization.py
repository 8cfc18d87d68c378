"""Tokenizer helpers: sub-word label alignment and word <-> character offsets.

Kept free of model code so the alignment rules (first sub-token carries the
word's label, the rest are ignored with -100) are unit-testable on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

IGNORE_INDEX = -100

#: Words the NER model sees at inference: runs of word characters (with inner
#: ' . - joins, e.g. "O'Neil", "U.S", "co-op") or single punctuation marks,
#: which matches how FiNER-ORD and WNUT-17 were tokenised.
_WORD_RE = re.compile(r"\w+(?:['’.\-&]\w+)*|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Word:
    """A word of the input text and its ``[start, end)`` character span."""

    text: str
    start: int
    end: int


def split_words(text: str) -> list[Word]:
    """Split raw text into words with character offsets."""
    return [Word(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Label the first sub-token of each word; later sub-tokens and specials get -100.

    ``word_ids`` comes from a fast tokenizer's ``BatchEncoding.word_ids(i)``.
    Words cut off by truncation simply never appear.
    """
    aligned: list[int] = []
    previous: int | None = None
    for word_id in word_ids:
        if word_id is None or word_id == previous:
            aligned.append(IGNORE_INDEX)
        else:
            aligned.append(word_labels[word_id])
        previous = word_id if word_id is not None else previous
    return aligned


def first_subtoken_positions(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Map word index -> position of its first sub-token."""
    positions: dict[int, int] = {}
    for position, word_id in enumerate(word_ids):
        if word_id is not None and word_id not in positions:
            positions[word_id] = position
    return positions


def spans_from_tags(
    words: Sequence[Word],
    tags: Sequence[str],
    scores: Sequence[float] | None = None,
    text: str | None = None,
) -> list[dict[str, Any]]:
    """Decode word-level BIO tags into entity spans with character offsets.

    Lenient like seqeval's default: an ``I-X`` that does not continue an open
    ``X`` entity starts a new one. The span score is the mean of its words'
    scores. ``text`` (the original string) gives the exact surface form,
    including inner whitespace.
    """
    spans: list[dict[str, Any]] = []
    open_type: str | None = None
    open_start = open_end = 0
    open_scores: list[float] = []

    def close() -> None:
        if open_type is not None:
            surface = text[open_start:open_end] if text is not None else None
            spans.append(
                {
                    "entity": open_type,
                    "start": open_start,
                    "end": open_end,
                    "text": surface,
                    "score": sum(open_scores) / len(open_scores) if open_scores else None,
                },
            )

    for index, (word, tag) in enumerate(zip(words, tags, strict=False)):
        score = scores[index] if scores is not None else None
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and open_type == kind:
            open_end = word.end
        elif prefix in {"B", "I"}:
            close()
            open_type, open_start, open_end, open_scores = kind, word.start, word.end, []
        else:
            close()
            open_type, open_scores = None, []
            continue
        if score is not None:
            open_scores.append(score)
    close()
    if text is None:
        for span in spans:
            span["text"] = " ".join(w.text for w in words if span["start"] <= w.start < span["end"])
    return spans
