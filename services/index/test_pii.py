"""PII redaction on a corpus of positives (must vanish) and look-alikes (must stay)."""

from __future__ import annotations

import logging

import pytest

from tests.support.pii_corpus import NEGATIVE, POSITIVE

from .pii import (
    CARD,
    EMAIL,
    IBAN,
    PHONE,
    RedactingFilter,
    find_pii,
    iban_ok,
    install_log_redaction,
    luhn_ok,
    redact,
    redact_obj,
    redact_spans,
)


@pytest.mark.parametrize(("text", "pii"), POSITIVE)
def test_positive_corpus_is_redacted(text: str, pii: tuple[str, ...]) -> None:
    out = redact(text)
    for item in pii:
        assert item not in out, (item, out)
    assert sorted(find_pii(text)) == sorted(pii)
    assert any(token in out for token in (EMAIL, PHONE, CARD, IBAN))


@pytest.mark.parametrize("text", NEGATIVE)
def test_negative_corpus_is_kept(text: str) -> None:
    assert redact(text) == text
    assert list(find_pii(text)) == []


def test_kinds() -> None:
    assert redact("a@b.io") == EMAIL
    assert redact("4111111111111111") == CARD
    assert redact("DE89370400440532013000") == IBAN
    assert redact("+44 20 7946 0958") == PHONE


def test_checksums() -> None:
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32")
    assert not iban_ok("GB83 WEST 1234 5698 7654 32")


def test_offsets_move_with_the_redaction() -> None:
    text = "mail a@b.io about ACME Corp today"
    r = redact_spans(text)
    start = text.index("ACME Corp")
    end = start + len("ACME Corp")
    assert r.text[r.map_offset(start) : r.map_offset(end, end=True)] == "ACME Corp"
    # an offset inside the e-mail snaps to the token
    inside = text.index("@")
    assert r.text[r.map_offset(inside) : r.map_offset(inside + 1, end=True)] == EMAIL
    assert not redact_spans("nothing here").changed


def test_redact_obj_walks_json() -> None:
    value = {"a": ["x@y.com", 3, {"b": "+44 20 7946 0958"}], "n": None}
    assert redact_obj(value) == {"a": [EMAIL, 3, {"b": PHONE}], "n": None}


def test_log_filter_redacts_message_extras_and_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tp.test.pii")
    undo = install_log_redaction()
    caplog.handler.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="tp.test.pii"):
            logger.info("user %s wrote", "jane.doe@example.com", extra={"text": "card 4111 1111 1111 1111"})
            try:
                raise ValueError("bad input 'call +44 20 7946 0958'")
            except ValueError:
                logger.exception("failed")
    finally:
        undo()
    dump = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "jane.doe@example.com" not in dump
    assert "4111 1111 1111 1111" not in dump
    assert "7946 0958" not in dump
    for token in (EMAIL, CARD, PHONE):
        assert token in dump
