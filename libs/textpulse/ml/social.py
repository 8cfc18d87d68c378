"""Model-input normalisation of social text: URLs and user handles become placeholder words.

A link such as ``https://t.co/bd0xbFGjkT`` is noise to a language model: the NER model
trained on news wire tagged its host ``t.co`` (key ``tco``) and its path slugs as
organisations in almost every tweet. Handles (``@elonmusk``) carry a name the model cannot
resolve and that differs from how the entity is written in prose. Both are replaced by one
placeholder word, the convention of TweetEval / cardiffnlp's tweet models: ``http`` for a
link (one WordPiece of the uncased BERT vocabulary our encoders use) and ``@user`` for a handle.

Pure functions, no model: :func:`find_spans` locates what is replaced, :func:`normalise`
returns the model text with an offset map back to the original, and
:func:`placeholder_of` is the same rule applied to one pre-split word (training data).
Numbers are left alone on purpose: ``5.3`` stays one word and ``9,000`` three, as in
FiNER-ORD's tokenisation, so serving splits them the way the model was trained.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Literal

#: Placeholder word of a link (TweetEval's; a single piece in the BERT uncased vocabulary).
URL_WORD = "http"
#: Placeholder word of a user handle (TweetEval's).
USER_WORD = "@user"

Kind = Literal["url", "user"]

#: Hosts of bare links (``t.co/abc``, ``bit.ly/x``, ``reut.rs/y``): a dotted name whose last
#: label is a common top-level domain, followed by a ``/`` path. Without the path a bare
#: ``example.com`` is left alone: in news it is often the company's name (``Amazon.com``).
_TLDS = "com|co|ly|rs|gl|io|me|net|org|us|uk|de|fr|ch|jp|cn|in|ca|au|fm|tv|be|gd|it|st|to|info|biz|news|app|ai|gov|edu"
_URL = re.compile(
    r"https?://[^\s<>\"]*|www\.[^\s<>\"]+"  # scheme or www.: up to the next space
    r"|(?<![\w@.\-/])https?(?!\w)…?"  # a link cut off by the tweet's length, or already a placeholder
    rf"|(?<![\w@.\-/])(?:[A-Za-z0-9\-]+\.)+(?:{_TLDS})/[^\s<>\"]*",  # bare host with a path
    re.IGNORECASE,
)
#: Twitter handles: 1-15 word characters after an ``@`` that does not follow a word character
#: (so ``jane@example.com`` is not a handle) and not followed by more word characters or ``@``.
_HANDLE = re.compile(r"(?<![\w@])@\w{1,15}(?![\w@])")
#: Closing punctuation that ends a sentence rather than a link (``see https://x.co/a).``).
_TRAILING = ".,;:!?)]}'\"’”…"


@dataclass(frozen=True, slots=True)
class Replaced:
    """One replaced run: ``original[start:end]`` became ``placeholder`` in the model text.

    In :attr:`Normalised.replaced` the placeholder includes the space :func:`normalise`
    added where the run was glued to other text.
    """

    kind: Kind
    start: int
    end: int
    placeholder: str


def _strip_trailing(text: str, start: int, end: int) -> int:
    while end > start + 1 and text[end - 1] in _TRAILING:
        # keep a closing bracket whose opener is inside the link (Wikipedia-style URLs)
        if text[end - 1] == ")" and text.count("(", start, end) >= text.count(")", start, end):
            break
        end -= 1
    return end


def find_spans(text: str) -> list[Replaced]:
    """Links and handles of ``text``, sorted, non-overlapping (a handle inside a link is part of the link)."""
    found: list[Replaced] = []
    for m in _URL.finditer(text):
        end = _strip_trailing(text, m.start(), m.end())
        found.append(Replaced("url", m.start(), end, URL_WORD))
    # handles are looked for with the links blanked out: none inside a link, and one glued to a
    # link (``@Reutershttps://…``) ends where the link starts
    masked = list(text)
    for r in found:
        masked[r.start : r.end] = " " * (r.end - r.start)
    found.extend(Replaced("user", m.start(), m.end(), USER_WORD) for m in _HANDLE.finditer("".join(masked)))
    found.sort(key=lambda r: r.start)
    return found


def url_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of every link in ``text`` (what no entity may overlap)."""
    return [(r.start, r.end) for r in find_spans(text) if r.kind == "url"]


def placeholder_of(word: str) -> str | None:
    """The placeholder a pre-split word is replaced by (training data), or None to keep it.

    A word counts when a link or handle covers all of it but trailing sentence punctuation,
    the same rule :func:`find_spans` applies inside running text.
    """
    for replaced in find_spans(word):
        if replaced.start == 0 and not word[replaced.end :].strip(_TRAILING):
            return replaced.placeholder
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of the model text, ``text[model_start:model_end]``, and the original run it stands for."""

    model_start: int
    model_end: int
    start: int
    end: int
    #: the replaced run, or None for text copied verbatim
    replaced: Replaced | None = None


@dataclass(frozen=True, slots=True)
class Normalised:
    """The model text of one original text, and the map between their character offsets."""

    original: str
    text: str
    replaced: tuple[Replaced, ...]
    #: the model text cut into verbatim and placeholder runs, in order, none empty
    segments: tuple[Segment, ...]

    def _segment(self, position: int) -> Segment:
        return self.segments[bisect.bisect_right(self.segments, position, key=lambda s: s.model_start) - 1]

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Original ``[start, end)`` of a model-text span ``[start, end)``.

        Verbatim text maps one to one; a span touching a placeholder widens to the whole
        link or handle it replaced, so a mapped span never starts or ends inside it.
        """
        if not 0 <= start <= end <= len(self.text):
            msg = f"span [{start}, {end}) outside the model text (length {len(self.text)})"
            raise ValueError(msg)
        if start == len(self.text):
            return len(self.original), len(self.original)
        first = self._segment(start)
        mapped_start = first.start if first.replaced else first.start + start - first.model_start
        if end == start:
            return mapped_start, mapped_start
        last = self._segment(end - 1)
        mapped_end = last.end if last.replaced else last.start + end - last.model_start
        return mapped_start, mapped_end


def normalise(text: str, kinds: tuple[Kind, ...] = ("url", "user")) -> Normalised:
    """Replace links and handles of ``text`` by placeholder words; keep everything else verbatim.

    A placeholder glued to other text (``Inc.https://…``, ``(@user)``) gets a space on that
    side, so it is always a word of its own for the word splitter (``Inc.http`` would be one
    word). Idempotent: the model text of a model text is itself.
    """
    parts: list[str] = []
    segments: list[Segment] = []
    replaced: list[Replaced] = []
    cursor = length = 0

    def add(piece: str, start: int, end: int, run: Replaced | None) -> None:
        nonlocal length
        if piece or end > start:
            segments.append(Segment(length, length + len(piece), start, end, run))
            parts.append(piece)
            length += len(piece)

    for r in (r for r in find_spans(text) if r.kind in kinds):  # ``kinds``: what is replaced
        add(text[cursor : r.start], cursor, r.start, None)
        placeholder = r.placeholder
        if parts and not parts[-1][-1:].isspace():
            placeholder = " " + placeholder
        if r.end < len(text) and not text[r.end].isspace():
            placeholder += " "
        run = Replaced(r.kind, r.start, r.end, placeholder)
        replaced.append(run)
        add(placeholder, r.start, r.end, run)
        cursor = r.end
    add(text[cursor:], cursor, len(text), None)
    return Normalised(text, "".join(parts), tuple(replaced), tuple(segments))


#: What a sequence model's encoder is shown, chosen at training (``TrainConfig.text_normalisation``)
#: and saved in the model's own config (``textpulse.text_normalisation``) so that every reader of
#: the model (the services' codec, the predictor, evaluation) shows it the same text: ``none`` the
#: text as written, ``links`` links replaced by :data:`URL_WORD` (handles kept: a source handle such
#: as ``@opinion`` or ``@climate`` is a topic cue), ``social`` links and handles (:func:`normalise`).
TextNormalisation = Literal["none", "links", "social"]
TEXT_NORMALISATIONS: tuple[str, ...] = ("none", "links", "social")
_REPLACED: dict[str, tuple[Kind, ...]] = {"links": ("url",), "social": ("url", "user")}


def check_text_normalisation(mode: object) -> TextNormalisation:
    """``mode`` as a :data:`TextNormalisation` (None: ``none``); ValueError names the known ones."""
    if mode is None or mode == "none":
        return "none"
    if mode == "links":
        return "links"
    if mode == "social":
        return "social"
    msg = f"unknown text normalisation {mode!r}; known: {', '.join(TEXT_NORMALISATIONS)}"
    raise ValueError(msg)


def model_text(text: str, mode: TextNormalisation) -> str:
    """The text a sequence model trained with ``mode`` sees for ``text``."""
    kinds = _REPLACED.get(mode)
    return normalise(text, kinds).text if kinds else text
