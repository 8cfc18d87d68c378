"""One error language for dead letters and HTTP answers.

A mistake in an input has one :class:`ErrorCode`, one field path and one human sentence,
whether the input came over HTTP (the ``errors`` list of an RFC 9457 problem body) or from
Kafka (the ``x-dlq-reason`` / ``x-dlq-code`` / ``x-dlq-field`` headers of its dead letter).

- :func:`validation_errors` turns a pydantic ``ValidationError`` into :class:`FieldError`
  items; :func:`decode_error` does the same for bytes that are not UTF-8 or not JSON.
- Messages never echo the input (it may hold personal data); they name the field and
  the rule.
- Field paths are dotted (``text``, ``metadata.lang``); an item of a batch is prefixed
  with its index in brackets (``[3].text``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

#: ``Content-Type`` of every error body (RFC 9457).
PROBLEM_JSON = "application/problem+json"


class ErrorCode(StrEnum):
    """What went wrong, stable across services and transports."""

    # The bytes.
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    EMPTY_VALUE = "empty_value"
    BODY_TOO_LARGE = "body_too_large"
    # The shape.
    NOT_AN_OBJECT = "not_an_object"
    NOT_AN_ARRAY = "not_an_array"
    BATCH_EMPTY = "batch_empty"
    TOO_MANY_EVENTS = "too_many_events"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    # The fields.
    UNKNOWN_FIELD = "unknown_field"
    MISSING_FIELD = "missing_field"
    NULL_VALUE = "null_value"
    WRONG_TYPE = "wrong_type"
    TEXT_EMPTY = "text_empty"
    TEXT_TOO_LONG = "text_too_long"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BAD_FORMAT = "bad_format"
    NOT_ALLOWED_VALUE = "not_allowed_value"
    OUT_OF_RANGE = "out_of_range"
    INVALID_VALUE = "invalid_value"
    # The request.
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_FOUND = "not_found"
    UNAUTHORIZED = "unauthorized"
    RATE_LIMITED = "rate_limited"
    # The system.
    BROKER_UNAVAILABLE = "broker_unavailable"
    RETRIES_EXHAUSTED = "retries_exhausted"
    UNAVAILABLE = "unavailable"
    INTERNAL_ERROR = "internal_error"


#: The human sentence of each code; ``{...}`` placeholders are filled from the error's context.
MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_UTF8: "the bytes are not valid UTF-8",
    ErrorCode.NOT_JSON: "the value is not valid JSON ({why})",
    ErrorCode.EMPTY_VALUE: "there is no value (an empty body or record, or a tombstone)",
    ErrorCode.BODY_TOO_LARGE: "the body exceeds {limit} bytes",
    ErrorCode.NOT_AN_OBJECT: "the value must be a JSON object, not {got}",
    ErrorCode.NOT_AN_ARRAY: "a JSON batch must be an array of events, not {got}",
    ErrorCode.BATCH_EMPTY: "the batch holds no events",
    ErrorCode.TOO_MANY_EVENTS: "the batch holds {count} events; the limit is {limit}",
    ErrorCode.UNSUPPORTED_SCHEMA_VERSION: "schema_version {got} is not one this build reads ({expected})",
    ErrorCode.UNKNOWN_FIELD: "unknown field",
    ErrorCode.MISSING_FIELD: "the field is required",
    ErrorCode.NULL_VALUE: "the field must not be null",
    ErrorCode.WRONG_TYPE: "the field must be {expected}",
    ErrorCode.TEXT_EMPTY: "the text is empty (after normalisation)",
    ErrorCode.TEXT_TOO_LONG: "the text is longer than {limit} characters (after normalisation)",
    ErrorCode.TOO_SHORT: "the field needs at least {limit} {unit}",
    ErrorCode.TOO_LONG: "the field allows at most {limit} {unit}",
    ErrorCode.BAD_FORMAT: "the field does not have the expected format ({expected})",
    ErrorCode.NOT_ALLOWED_VALUE: "the field must be one of {expected}",
    ErrorCode.OUT_OF_RANGE: "the number is out of range ({expected})",
    ErrorCode.INVALID_VALUE: "the field is not valid ({why})",
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: "the content type must be {expected}",
    ErrorCode.METHOD_NOT_ALLOWED: "the method is not allowed here",
    ErrorCode.NOT_FOUND: "there is nothing at this path",
    ErrorCode.UNAUTHORIZED: "a valid API key is required",
    ErrorCode.RATE_LIMITED: "too many requests; retry later",
    ErrorCode.BROKER_UNAVAILABLE: "the event store did not acknowledge the write; retry later",
    ErrorCode.RETRIES_EXHAUSTED: "processing failed {attempts} times ({why})",
    ErrorCode.UNAVAILABLE: "the service cannot answer now ({why}); retry later",
    ErrorCode.INTERNAL_ERROR: "the service failed to answer; the failure is logged",
}

#: ``type`` of a problem body: this prefix plus the problem type (``error``). A URN, not an URL: the
#: types are documented in the README ("HTTP errors"), not served, and no domain is implied.
PROBLEM_TYPE_PREFIX = "urn:textpulse:problem:"

#: The problem type (``error`` of the body, last part of ``type``) of each HTTP status.
PROBLEMS: dict[int, str] = {
    400: "malformed_body",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}

#: Title (short, per HTTP status) of a problem body.
TITLES: dict[int, str] = {
    400: "Malformed request body",
    401: "Unauthorized",
    404: "Not found",
    405: "Method not allowed",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def message(code: ErrorCode, **ctx: Any) -> str:
    """The human sentence of ``code`` with its placeholders filled (missing ones stay readable)."""
    template = MESSAGES[code]
    try:
        return template.format(**ctx)
    except (KeyError, IndexError):
        return template.split(" (")[0].split(" {")[0]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One mistake: its code, the dotted path of the field (``""``: the whole input) and the sentence."""

    code: ErrorCode
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code.value, "field": self.field, "message": self.message}

    def at(self, prefix: str) -> FieldError:
        """The same error inside a container (``prefix`` e.g. ``[3]``)."""
        return FieldError(self.code, f"{prefix}.{self.field}" if self.field else prefix, self.message)


def error(code: ErrorCode, field: str = "", **ctx: Any) -> FieldError:
    return FieldError(code, field, message(code, **ctx))


def field_path(loc: Iterable[int | str]) -> str:
    """Dotted path of a pydantic ``loc``; list indices become ``[i]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("["):
            out += part
        else:
            out += f".{part}" if out else str(part)
    return out


_JSON_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: bool is an int
    (int, "a number"),
    (float, "a number"),
    (str, "a string"),
    (list, "an array"),
    (dict, "an object"),
)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``null``, not ``NoneType``)."""
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_TYPES if isinstance(value, kind)), type(value).__name__)


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "list_type": "an array",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "datetime_type": "a date-time",
}
_FORMAT_TYPES = {
    "string_pattern_mismatch",
    "datetime_parsing",
    "datetime_from_date_parsing",
    "timezone_aware",
    "uuid_parsing",
}
_FORMAT_NAMES = {
    "datetime_parsing": "an RFC 3339 date-time with time zone",
    "datetime_from_date_parsing": "an RFC 3339 date-time with time zone",
    "timezone_aware": "an RFC 3339 date-time with time zone",
    "uuid_parsing": "a UUID",
}
_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _json_invalid(err: Any) -> FieldError:
    raw = err.get("input")
    if isinstance(raw, bytes | bytearray):
        if not bytes(raw).strip():
            return error(ErrorCode.EMPTY_VALUE)
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return error(ErrorCode.INVALID_UTF8)
    why = str((err.get("ctx") or {}).get("error", "")).split(" at line", maxsplit=1)[0]
    return error(ErrorCode.NOT_JSON, why=why or "syntax error")


def _from_pydantic(err: Any) -> FieldError:  # noqa: PLR0911, PLR0912 - one branch per kind of mistake
    kind: str = err["type"]
    loc = tuple(err["loc"])
    path = field_path(loc)
    ctx: dict[str, Any] = err.get("ctx") or {}
    is_text = bool(loc) and loc[-1] == "text"
    if kind == "json_invalid":  # model_validate_json: the bytes themselves
        return _json_invalid(err)
    if not loc and kind in {"model_type", "model_attributes_type", "dict_type"}:
        return error(ErrorCode.NOT_AN_OBJECT, got=json_type(err.get("input")))
    if kind == "extra_forbidden":
        return error(ErrorCode.UNKNOWN_FIELD, path)
    if kind == "missing":
        return error(ErrorCode.MISSING_FIELD, path)
    if _is_type_error(err):
        if "input" in err and err["input"] is None:
            return error(ErrorCode.NULL_VALUE, path)
        expected = err.get("expected") or _TYPE_NAMES.get(kind, kind.removesuffix("_type"))
        return error(ErrorCode.WRONG_TYPE, path, expected=expected)
    # A constrained type behind a validator reports ``too_short`` / ``too_long`` (pydantic says "items").
    if kind in {"string_too_short", "too_short"} and is_text and int(ctx.get("min_length") or 1) <= 1:
        # Only "empty" when one character would do (a search text of at least 3 is too_short).
        return error(ErrorCode.TEXT_EMPTY, path)
    if kind in {"string_too_long", "too_long"} and is_text:
        return error(ErrorCode.TEXT_TOO_LONG, path, limit=ctx.get("max_length"))
    if kind == "value_error" and is_text and "characters; the maximum is" in str(err.get("msg", "")):
        # The raw-size guard before normalisation (see contracts.events): the same mistake as too long.
        from .events import MAX_TEXT_CHARS

        return error(ErrorCode.TEXT_TOO_LONG, path, limit=MAX_TEXT_CHARS)
    if kind in {"string_too_short", "too_short"}:
        unit = "characters" if kind.startswith("string") or isinstance(err.get("input"), str) else "items"
        return error(ErrorCode.TOO_SHORT, path, limit=ctx.get("min_length"), unit=unit)
    if kind in {"string_too_long", "too_long"}:
        unit = "characters" if kind.startswith("string") or isinstance(err.get("input"), str) else "items"
        return error(ErrorCode.TOO_LONG, path, limit=ctx.get("max_length"), unit=unit)
    if kind in _FORMAT_TYPES:
        expected = f"pattern {ctx['pattern']}" if "pattern" in ctx else _FORMAT_NAMES.get(kind, kind)
        return error(ErrorCode.BAD_FORMAT, path, expected=expected)
    if kind in {"enum", "literal_error"}:
        return error(ErrorCode.NOT_ALLOWED_VALUE, path, expected=ctx.get("expected", "the listed values"))
    if kind in _RANGE_TYPES:
        bound = next((f"{k.replace('_', ' ')} {v}" for k, v in ctx.items()), "finite")
        return error(ErrorCode.OUT_OF_RANGE, path, expected=bound)
    # Custom validators: their message is ours (never the input); pydantic prefixes "Value error, ".
    why = str(err.get("msg", kind)).removeprefix("Value error, ")
    return error(ErrorCode.INVALID_VALUE, path, why=why)


def validation_errors(exc: ValidationError, *, prefix: str = "") -> list[FieldError]:
    """The :class:`FieldError` items of a pydantic ``ValidationError`` (input values never echoed)."""
    # include_input only to tell null from a wrong type; the input is not copied into the message.
    return from_error_dicts(exc.errors(include_url=False, include_context=True, include_input=True), prefix=prefix)


def _is_type_error(err: Any) -> bool:
    kind: str = err["type"]
    return kind not in _FORMAT_TYPES and (kind in _TYPE_NAMES or kind.endswith(("_type", "_parsing")))


def _merge_unions(errors: list[Any]) -> list[Any]:
    """One ``wrong_type`` per union field: pydantic reports each member (``loc`` ending in ``str``, ``int``…)."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if len(loc) > 1 and isinstance(loc[-1], str) and _is_type_error(err):
            groups.setdefault(loc[:-1], []).append(err)
    out: list[Any] = []
    done: set[tuple[Any, ...]] = set()
    for err in errors:
        loc = tuple(err["loc"])
        members = groups.get(loc[:-1], []) if len(loc) > 1 else []
        if len(members) < 2 or err not in members:  # noqa: PLR2004 - a union has at least two members
            out.append(err)
        elif loc[:-1] not in done:
            done.add(loc[:-1])
            names = sorted({_TYPE_NAMES.get(m["type"], m["type"]) for m in members})
            out.append({**err, "loc": loc[:-1], "type": "union_type", "expected": " or ".join(names)})
    return out


def from_error_dicts(errors: Iterable[Any], *, prefix: str = "") -> list[FieldError]:
    """The :class:`FieldError` items of pydantic error dicts (e.g. FastAPI's ``RequestValidationError.errors()``)."""
    items = [_from_pydantic(err) for err in _merge_unions(list(errors))]
    return [e.at(prefix) if prefix else e for e in items]


def decode_error(exc: Exception) -> FieldError:
    """The :class:`FieldError` of bytes that could not be decoded as JSON (not UTF-8, or bad syntax)."""
    text = str(exc)
    if isinstance(exc, UnicodeDecodeError) or "utf-8" in text.lower() or "surrogates" in text.lower():
        return error(ErrorCode.INVALID_UTF8)
    return error(ErrorCode.NOT_JSON, why=text.split(": line", maxsplit=1)[0][:200])


def reason(errors: Sequence[FieldError], *, limit: int = 10) -> str:
    """The one-line reason of a dead letter: ``code at field: sentence`` joined by ``; ``."""
    parts = [
        f"{e.code.value} at {e.field}: {e.message}" if e.field else f"{e.code.value}: {e.message}"
        for e in errors[:limit]
    ]
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def problem(
    status: int,
    errors: Sequence[FieldError] = (),
    *,
    code: str | None = None,
    detail: str | None = None,
    title: str | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem body: ``type``, ``title``, ``status``, ``detail``, ``instance``, ``error``, ``errors``.

    ``error`` is the problem type (:data:`PROBLEMS` of the status unless ``code`` says otherwise);
    ``errors`` lists every :class:`FieldError`. ``detail`` defaults to the items' reason.
    ``instance`` is the request path (never the query string: it may hold personal data).
    """
    top = code or PROBLEMS.get(status, "error")
    body: dict[str, Any] = {
        "type": f"{PROBLEM_TYPE_PREFIX}{top}",
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail if detail is not None else (reason(errors) or TITLES.get(status, "Error")),
    }
    if instance is not None:
        body["instance"] = instance
    body["error"] = top
    body["errors"] = [e.as_dict() for e in errors]
    return body
