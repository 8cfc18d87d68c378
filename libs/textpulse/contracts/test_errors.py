"""The error vocabulary: codes, sentences and field paths from pydantic and decode errors."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from .errors import (
    MESSAGES,
    PROBLEMS,
    ErrorCode,
    FieldError,
    decode_error,
    error,
    field_path,
    json_type,
    message,
    problem,
    reason,
    validation_errors,
)
from .events import MAX_TEXT_CHARS, TextEventIn

GOOD = {"source": "s", "channel": "news", "text": "hello"}


def _errors(obj: object) -> list[FieldError]:
    with pytest.raises(ValidationError) as caught:
        TextEventIn.model_validate(obj)
    return validation_errors(caught.value)


def test_every_code_has_a_sentence() -> None:
    assert set(MESSAGES) == set(ErrorCode)
    for code in ErrorCode:
        assert "{" not in message(code), code  # a missing placeholder degrades to the plain sentence


@pytest.mark.parametrize(
    ("change", "code", "path"),
    [
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, ErrorCode.TEXT_TOO_LONG, "text"),
        ({"text": "x" * (4 * MAX_TEXT_CHARS + 1)}, ErrorCode.TEXT_TOO_LONG, "text"),
        ({"text": " \x00 "}, ErrorCode.TEXT_EMPTY, "text"),
        ({"text": None}, ErrorCode.NULL_VALUE, "text"),
        ({"text": 5}, ErrorCode.WRONG_TYPE, "text"),
        ({"channel": "fax"}, ErrorCode.NOT_ALLOWED_VALUE, "channel"),
        ({"language": "EN!"}, ErrorCode.BAD_FORMAT, "language"),
        ({"id": "a b"}, ErrorCode.BAD_FORMAT, "id"),
        ({"id": ""}, ErrorCode.TOO_SHORT, "id"),
        ({"event_time": "2024-01-01T00:00:00"}, ErrorCode.BAD_FORMAT, "event_time"),
        ({"event_time": "yesterday"}, ErrorCode.BAD_FORMAT, "event_time"),
        ({"source": None}, ErrorCode.NULL_VALUE, "source"),
        ({"metadata": {"k": [1]}}, ErrorCode.WRONG_TYPE, "metadata.k"),
        ({"metadata": {f"k{i}": 1 for i in range(33)}}, ErrorCode.TOO_LONG, "metadata"),
        ({"colour": "red"}, ErrorCode.UNKNOWN_FIELD, "colour"),
    ],
)
def test_pydantic_errors_map_to_one_code(change: dict[str, object], code: ErrorCode, path: str) -> None:
    (err,) = _errors({**GOOD, **change})
    assert (err.code, err.field) == (code, path)
    assert "items" not in err.message or code is ErrorCode.TOO_LONG


def test_missing_field_and_sentences_never_echo_the_input() -> None:
    errs = _errors({"channel": "secret@example.com", "text": "secret@example.com" * 10_000})
    assert {(e.code, e.field) for e in errs} >= {(ErrorCode.MISSING_FIELD, "source")}
    assert "secret" not in reason(errs)


def test_too_long_says_characters() -> None:
    (err,) = _errors({**GOOD, "text": "x" * (MAX_TEXT_CHARS + 1)})
    assert err.message == f"the text is longer than {MAX_TEXT_CHARS} characters (after normalisation)"
    (err,) = _errors({**GOOD, "source": "x" * 129})
    assert err.message == "the field allows at most 128 characters"


@pytest.mark.parametrize(
    ("raw", "code"),
    [(b"\xff{}", ErrorCode.INVALID_UTF8), (b'"\xed\xa0\x80"', ErrorCode.INVALID_UTF8), (b"{oops", ErrorCode.NOT_JSON)],
)
def test_decode_errors(raw: bytes, code: ErrorCode) -> None:
    with pytest.raises(orjson.JSONDecodeError) as caught:
        orjson.loads(raw)
    err = decode_error(caught.value)
    assert (err.code, err.field) == (code, "")
    assert "surrogates" not in err.message


def test_paths_types_reason_and_problem() -> None:
    assert field_path(["metadata", "k"]) == "metadata.k"
    assert field_path([3, "text"]) == "[3].text"
    assert error(ErrorCode.TEXT_EMPTY, "text").at("[3]").field == "[3].text"
    assert error(ErrorCode.NOT_AN_OBJECT, got="null").at("[3]").field == "[3]"
    assert json_type(None) == "null"
    assert json_type(True) == "a boolean"
    assert json_type([]) == "an array"
    errs = [error(ErrorCode.NOT_JSON, why="bad"), error(ErrorCode.UNKNOWN_FIELD, "x")]
    assert reason(errs) == "not_json: the value is not valid JSON (bad); unknown_field at x: unknown field"
    body = problem(400, errs)
    assert body == {
        "type": f"urn:textpulse:problem:{PROBLEMS[400]}",
        "title": "Malformed request body",
        "status": 400,
        "detail": reason(errs),
        "error": "malformed_body",
        "errors": [e.as_dict() for e in errs],
    }
