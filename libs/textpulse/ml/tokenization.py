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


def bio_entities(tags: Sequence[str], joined: Sequence[bool] | None = None) -> list[tuple[str, list[int]]]:
    """Group word-level BIO tags into entities: ``(type, indices of its words)``, in order.

    The one decoding rule of every NER path: the service's decoder (:func:`spans_from_tags`, the
    Predictor and the Triton / in-process codec) and the exporter's drift reference
    (:func:`textpulse.ml.export.entity_spans`), so the reference counts entities the way the
    service publishes them. Repairs that keep multi-word names whole:

    * an ``I-X`` that does not continue an open ``X`` entity starts a new one (lenient, like
      seqeval's default);
    * a ``B-X`` on the word right after an open ``X`` entity continues it when ``joined`` says
      the word follows the previous one with only whitespace between (a small model often tags
      ``Suisse Group`` ``AG`` or ``Tim`` ``Cook`` as two B's; news wire rarely puts two names of
      one type side by side without punctuation, and punctuation is a word of its own, tagged
      ``O``). ``joined=None``: every word follows the one before, as pre-split words do.

    ``O`` and any tag without a ``B-``/``I-`` prefix close the open entity.
    """
    entities: list[tuple[str, list[int]]] = []
    open_type: str | None = None
    for index, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        follows = joined is None or joined[index]
        if open_type == kind and (prefix == "I" or (prefix == "B" and follows)):
            entities[-1][1].append(index)
        elif prefix in {"B", "I"}:
            entities.append((kind, [index]))
            open_type = kind
        else:
            open_type = None
    return entities


def spans_from_tags(
    words: Sequence[Word],
    tags: Sequence[str],
    scores: Sequence[float] | None = None,
    text: str | None = None,
) -> list[dict[str, Any]]:
    """Decode word-level BIO tags into entity spans with character offsets (rules: :func:`bio_entities`).

    With ``text`` given, a word counts as joined to the previous one when only whitespace lies
    between them, so the ``B``-after-``B`` repair applies (on FiNER-ORD dev it added 16 points of
    span F1 to the quick model); without ``text`` it does not. A placeholder word (a link or
    handle) is never part of an entity, whatever its tag. The span score is the mean of its
    words' scores. ``text`` (the original string) gives the exact surface form: the original
    text from the first to the last word, inner whitespace included.
    """
    count = min(len(words), len(tags))
    word_tags = [tags[i] if words[i].kind is None else "O" for i in range(count)]
    joined = [i > 0 and text is not None and not text[words[i - 1].end : words[i].start].strip() for i in range(count)]
    spans: list[dict[str, Any]] = []
    for kind, indices in bio_entities(word_tags, joined):
        start, end = words[indices[0]].start, words[indices[-1]].end
        span_scores = [scores[i] for i in indices] if scores is not None else []
        spans.append(
            {
                "entity": kind,
                "start": start,
                "end": end,
                "text": text[start:end] if text is not None else None,
                "score": sum(span_scores) / len(span_scores) if span_scores else None,
            }
        )
    if text is None:
        for span in spans:
            span["text"] = " ".join(w.text for w in words if span["start"] <= w.start < span["end"])
    return spans
