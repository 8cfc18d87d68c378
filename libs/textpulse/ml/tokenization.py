"""Tokenizer helpers: sub-word label alignment and word <-> character offsets.

Kept free of model code so the alignment rules (first sub-token carries the
word's label, the rest are ignored with -100) are unit-testable on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textpulse.ml.social import find_spans, placeholder_of

if TYPE_CHECKING:
    from collections.abc import Sequence

IGNORE_INDEX = -100

#: Words the NER model sees at inference: runs of word characters (with inner
#: ' . - joins, e.g. "O'Neil", "U.S", "co-op") or single punctuation marks,
#: which matches how FiNER-ORD and WNUT-17 were tokenised. Links and user handles are
#: found first (:mod:`textpulse.ml.social`) and each becomes one placeholder word.
_WORD_RE = re.compile(r"\w+(?:['’.\-&]\w+)*|[^\w\s]")


@dataclass(frozen=True, slots=True)
class Word:
    """A word the model sees and the ``[start, end)`` character span of the input it stands for.

    ``text`` is the input's own ``text[start:end]``, except for a placeholder (``kind`` set:
    ``url`` or ``user``), whose ``text`` is the placeholder word (``http``, ``@user``) while
    ``start``/``end`` cover the whole link or handle of the input.
    """

    text: str
    start: int
    end: int
    kind: str | None = None


def split_words(text: str) -> list[Word]:
    """Split raw text into the words the model sees, with character offsets into ``text``."""
    words: list[Word] = []
    cursor = 0
    for replaced in [*find_spans(text), None]:
        stop = replaced.start if replaced is not None else len(text)
        words.extend(Word(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text, cursor, stop))
        if replaced is not None:
            words.append(Word(replaced.placeholder, replaced.start, replaced.end, replaced.kind))
            cursor = replaced.end
    return words


def normalise_words(words: Sequence[str], tags: Sequence[str] | None = None) -> tuple[list[str], list[str] | None]:
    """Pre-split training words as :func:`split_words` shows them to the model at serving.

    A word that is a link or a handle becomes its placeholder and its tag ``O``: the service
    never tags a placeholder (:func:`spans_from_tags`), so training must not teach it to.
    """
    out_words: list[str] = []
    out_tags = list(tags) if tags is not None else None
    for index, word in enumerate(words):
        placeholder = placeholder_of(word)
        out_words.append(placeholder if placeholder is not None else word)
        if placeholder is not None and out_tags is not None:
            out_tags[index] = "O"
    return out_words, out_tags


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

    Repairs that keep multi-word names whole: an ``I-X`` that does not continue
    an open ``X`` entity starts a new one (lenient, like seqeval's default), and
    with ``text`` given, a ``B-X`` on the word right after an open ``X`` entity
    with only whitespace between them continues it (a small model often tags
    ``Suisse Group`` ``AG`` or ``Tim`` ``Cook`` as two B's; news wire rarely
    puts two names of one type side by side without punctuation; on FiNER-ORD
    dev this repair added 16 points of span F1 to the quick model). A
    placeholder word (a link or handle) is never part of an entity, whatever
    its tag. The span score is the mean of its words' scores. ``text`` (the
    original string) gives the exact surface form: the original text from the
    first to the last word, inner whitespace included.
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
        prefix, _, kind = tag.partition("-") if word.kind is None else ("O", "", "")
        adjacent = text is not None and not text[open_end : word.start].strip()
        if open_type == kind and (prefix == "I" or (prefix == "B" and adjacent)):
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
