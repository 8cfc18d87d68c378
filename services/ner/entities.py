"""Entity rules of the NER service: cashtags, the normalised entity key, merging, the link guard.

Pure functions (no model, no Kafka) so the rules are unit-tested on their own.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from textpulse.contracts import Entity
from textpulse.inference import Span
from textpulse.ml.social import url_spans

#: ``$AAPL``, ``$BRK.B``, ``$RDS-A``: a ``$`` not preceded by a word character
#: or another ``$``, 1-6 letters, an optional one- or two-letter class suffix,
#: not followed by a word character. ``$100`` and ``US$5`` are amounts, not tickers.
CASHTAG = re.compile(r"(?<![\w$])\$([A-Za-z]{1,6}(?:[.\-][A-Za-z]{1,2})?)(?![\w])")

TICKER = "TICKER"

#: Legal-form suffixes stripped from the end of an organisation's name.
LEGAL_SUFFIXES = frozenset(
    {
        "inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited", "plc", "llc", "llp",
        "lp", "ag", "sa", "nv", "bv", "gmbh", "se", "spa", "oyj", "ab", "asa", "kk", "pte", "pty", "srl", "sas",
    }
)  # fmt: skip

_JOINERS = re.compile(r"[.'’`´]")
_SEPARATORS = re.compile(r"[^\w&\-]+")
_SPACES = re.compile(r"\s+")
_POSSESSIVE = re.compile(r"['’]s$")


def entity_key(surface: str, entity_type: str | None = None) -> str:
    """Normalised key of an entity, stable across spellings of the same name.

    Tickers: ``$`` + upper-case symbol (``$aapl`` → ``$AAPL``). Others: NFKC,
    case-folded, possessive ``'s`` dropped, dots and apostrophes joined
    (``U.S.`` → ``us``), other punctuation → space, a leading ``the`` and
    trailing legal-form suffixes (``Inc.``, ``Corp``, ``plc``, ``Ltd`` …) removed
    while a name remains. ``Apple Inc.``, ``APPLE INC`` and ``Apple's`` all
    give ``apple``.
    """
    text = unicodedata.normalize("NFKC", surface).strip()
    if entity_type == TICKER or (CASHTAG.fullmatch(text) is not None):
        return "$" + text.lstrip("$").upper()
    text = _POSSESSIVE.sub("", text.casefold())
    text = _JOINERS.sub("", text)
    text = _SPACES.sub(" ", _SEPARATORS.sub(" ", text)).strip(" -")
    words = text.split(" ")
    if len(words) > 1 and words[0] == "the":
        words = words[1:]
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words = words[:-1]
    key = " ".join(w for w in words if w)
    return key or surface.strip().casefold() or surface


def cashtags(text: str) -> list[Span]:
    """Every ``$TICKER`` in ``text`` as a span (the ``$`` included)."""
    return [Span(TICKER, m.start(), m.end(), m.group(), 1.0) for m in CASHTAG.finditer(text)]


def _overlaps(a: Span, b: Span) -> bool:
    return a.start < b.end and b.start < a.end


def merge(text: str, model_spans: Iterable[Span], rule_spans: Sequence[Span]) -> list[Entity]:
    """Model entities plus rule matches, sorted by offset; a rule match wins over an overlapping model span.

    Every entity satisfies ``text[start:end] == surface``; a span that does not
    (a backend bug) is dropped rather than published wrong. No entity overlaps a
    link (:func:`textpulse.ml.social.url_spans`): the model sees a link as one
    placeholder word it never tags, and this guard holds whatever the backend did
    and for rule matches too (``https://x.com/$AAPL`` is not a cashtag mention).
    """
    entities: list[Entity] = []
    links = [Span("URL", start, end, text[start:end]) for start, end in url_spans(text)]
    rule_spans = [r for r in rule_spans if not any(_overlaps(r, link) for link in links)]
    kept = [s for s in model_spans if not any(_overlaps(s, r) for r in [*rule_spans, *links])]
    for span, origin in [*((s, "model") for s in kept), *((s, "rule") for s in rule_spans)]:
        if span.end <= span.start or text[span.start : span.end] != span.surface or not span.surface.strip():
            continue
        entities.append(
            Entity(
                surface=span.surface,
                type=span.type,
                start=span.start,
                end=span.end,
                key=entity_key(span.surface, span.type)[:128],
                score=min(1.0, max(0.0, span.score)),
                origin=origin,  # type: ignore[arg-type]
            )
        )
    entities.sort(key=lambda e: (e.start, e.end))
    return entities
