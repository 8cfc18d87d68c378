"""PII redaction: e-mail addresses, phone numbers, card numbers and IBANs.

Applied to every string that goes into Elasticsearch and to every log record the
service emits, so a search index or a log shipper never holds contact or payment
data. Matching is conservative where a false positive would hurt the platform's
own data: card numbers must pass the Luhn check, IBANs the ISO 13616 mod-97
check, and a phone number needs a phone-like shape (``+`` country code, an area
code in parentheses, a 3-3-4 grouping or a national number starting with 0) so
that prices, dates and tickers in financial text are left alone.

Replacements keep the kind (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``) so a
reader still sees that the text contained one. :class:`Redaction` records the
replaced spans, which lets callers move character offsets (entities) from the
original text to the redacted one.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

EMAIL = "[EMAIL]"
PHONE = "[PHONE]"
CARD = "[CARD]"
IBAN = "[IBAN]"

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}\.)+[A-Za-z]{2,24}\b"
)
# 13-19 digits, optionally grouped by single spaces or hyphens.
_CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
# Country code, check digits, then 11-30 alphanumerics, optionally in groups of 4.
_IBAN_RE = re.compile(r"\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}\b")
_PHONE_RES = (
    # +<country> followed by digits and the usual separators.
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\w])"),
    # (area) exchange-number
    re.compile(r"(?<![\w(])\(\d{2,5}\)[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){1,3}(?![\w])"),
    # NANP 3-3-4 with a consistent separator
    re.compile(r"(?<![\w.-])\d{3}([ .-])\d{3}\1\d{4}(?![\w]|[.-]\d)"),
    # national number with a trunk prefix 0: 07700 900123, 020 7946 0958, 06-12345678
    re.compile(r"(?<![\w.,-])0\d{1,4}(?:[ -]?\d{2,4}){1,4}(?![\w]|[.,-]\d)"),
)
_DIGIT = re.compile(r"\d")
CARD_DIGITS = (13, 19)
IBAN_CHARS = (15, 34)
PHONE_DIGITS = (8, 15)
#: Fewest digits any digit-based rule needs (a phone with a country code).
_MIN_DIGITS = 7
_SEVEN_DIGITS = re.compile(rf"(?:\D*+\d){{{_MIN_DIGITS}}}")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum used by every card scheme."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            d = d - 9 if d > 9 else d  # noqa: PLR2004 - the Luhn rule itself
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters → numbers, mod 97 == 1."""
    s = candidate.replace(" ", "").upper()
    if not IBAN_CHARS[0] <= len(s) <= IBAN_CHARS[1] or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


Finder = Callable[[str], Iterator[tuple[int, int]]]


def _matches(rx: re.Pattern[str], check: Callable[[str], bool]) -> Finder:
    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in rx.finditer(text):
            if check(m.group()):
                yield m.span()

    return find


def _card_ok(candidate: str) -> bool:
    digits = re.sub(r"\D", "", candidate)
    return CARD_DIGITS[0] <= len(digits) <= CARD_DIGITS[1] and luhn_ok(digits)


def _phone_ok(candidate: str) -> bool:
    return PHONE_DIGITS[0] <= len(_DIGIT.findall(candidate)) <= PHONE_DIGITS[1]


def _find_ibans(text: str) -> Iterator[tuple[int, int]]:
    """The IBAN pattern also swallows following words ("... 7654 32 failed"): keep the longest valid prefix."""
    for m in _IBAN_RE.finditer(text):
        start, cand = m.start(), m.group()
        ends = [i for i in range(len(cand), 14, -1) if i == len(cand) or cand[i] == " "]
        for end in ends:
            if iban_ok(cand[:end]):
                yield start, start + end
                break


@dataclass(frozen=True)
class Redaction:
    """A redacted text and the spans replaced, as ``(start, end, replacement)`` of the original."""

    text: str
    spans: tuple[tuple[int, int, str], ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.spans)

    def map_offset(self, offset: int, *, end: bool = False) -> int:
        """Where an original offset lands in the redacted text.

        An offset inside a replaced span snaps to the span's start (or its end
        when ``end`` is true), so an entity that overlapped PII covers the token.
        """
        shift = 0
        for start, stop, repl in self.spans:
            if offset <= start:
                break
            if offset < stop:
                return start + shift + (len(repl) if end else 0)
            shift += len(repl) - (stop - start)
        return offset + shift


_RULES: tuple[tuple[Finder, str], ...] = (
    (_matches(_EMAIL_RE, bool), EMAIL),
    (_find_ibans, IBAN),
    (_matches(_CARD_RE, _card_ok), CARD),
    *((_matches(rx, _phone_ok), PHONE) for rx in _PHONE_RES),
)


def _find(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping spans to replace; earlier rules win (e-mail, IBAN, card, phone)."""
    taken: list[tuple[int, int, str]] = []
    for finder, repl in _RULES:
        for s, e in finder(text):
            if any(s < te and ts < e for ts, te, _ in taken):
                continue
            taken.append((s, e, repl))
    taken.sort()
    return taken


def _might_contain_pii(text: str) -> bool:
    """Cheap pre-check: every rule needs an '@' or at least 7 digits (the rules' own ``\\d``).

    Runs on every indexed string, so it is one C-level scan that stops at the
    seventh digit (possessive, so a miss never backtracks).
    """
    return "@" in text or _SEVEN_DIGITS.match(text) is not None


def redact_spans(text: str) -> Redaction:
    """Redact ``text`` and keep the replaced spans (for offset mapping)."""
    if not _might_contain_pii(text):
        return Redaction(text)
    spans = _find(text)
    if not spans:
        return Redaction(text)
    out, pos = [], 0
    for start, stop, repl in spans:
        out.append(text[pos:start])
        out.append(repl)
        pos = stop
    out.append(text[pos:])
    return Redaction("".join(out), tuple(spans))


def redact(text: str) -> str:
    """``text`` with e-mails, phone numbers, card numbers and IBANs replaced by tokens."""
    if not _might_contain_pii(text):
        return text  # the common case, without building a Redaction
    return redact_spans(text).text


def redact_obj(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dict keys are left alone)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    return value


def find_pii(text: str) -> Iterator[str]:
    """The PII substrings of ``text`` (what :func:`redact` would replace); for tests and audits."""
    for start, stop, _ in _find(text):
        yield text[start:stop]


# -- logs ---------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


class RedactingFilter(logging.Filter):
    """Redacts a log record's message, string ``extra`` fields and traceback in place.

    Installed on handlers (not loggers) so it sees records of every library,
    aiokafka and elasticsearch included. The traceback is formatted and redacted
    here and carried as the ``exc`` / ``exc_type`` fields the JSON formatter uses.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tp_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not drop the record
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_") and isinstance(value, str | dict | list):
                setattr(record, key, redact_obj(value))
        if record.exc_info and record.exc_info[0] is not None:
            exc_type = record.exc_info[0].__name__
            record.__dict__["exc_type"] = exc_type
            record.__dict__["exc"] = redact("".join(traceback.format_exception(*record.exc_info))[-4000:])
            record.msg = f"{record.msg} ({exc_type}: {redact(str(record.exc_info[1]))[:500]})"
            record.exc_info, record.exc_text = None, None
        record.__dict__["_tp_redacted"] = True
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> Callable[[], None]:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (root); returns the undo."""
    target = logger or logging.getLogger()
    flt = RedactingFilter()
    handlers = list(target.handlers)
    for handler in handlers:
        handler.addFilter(flt)

    def undo() -> None:
        for handler in handlers:
            handler.removeFilter(flt)

    return undo
