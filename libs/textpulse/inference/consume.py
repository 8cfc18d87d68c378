"""Decoding consumed records into contracts, with a dead-letter reason for each failure.

Shared by the enrichment services (classify, NER). A record is *poison* when
its bytes are not JSON, its ``schema_version`` is not one this build knows, or
it does not validate; poison goes to the service's DLQ with the reason,
everything else is processed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from textpulse.contracts import SCHEMA_VERSION
from textpulse.contracts.errors import (
    ErrorCode,
    FieldError,
    decode_error,
    error,
    json_type,
    reason,
    validation_errors,
)

from .errors import BackendUnavailable

M = TypeVar("M", bound=BaseModel)


class Poison(ValueError):
    """A record that can never be processed; ``reason`` goes into the DLQ headers.

    ``errors`` are the mistakes in the shared vocabulary (``textpulse.contracts.errors``): the
    dead letter's ``x-dlq-code`` / ``x-dlq-field`` and the same codes an HTTP API would answer.
    """

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        self.reason = reason(self.errors)
        super().__init__(self.reason)


def decode(raw: bytes | None, model: type[M]) -> M:
    """Parse and validate one record value; raise :class:`Poison` with a reason."""
    if raw is None or not raw.strip():
        raise Poison([error(ErrorCode.EMPTY_VALUE)])
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Poison([decode_error(exc)]) from exc
    if not isinstance(obj, dict):
        raise Poison([error(ErrorCode.NOT_AN_OBJECT, got=json_type(obj))])
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        raise Poison(
            [error(ErrorCode.UNSUPPORTED_SCHEMA_VERSION, "schema_version", got=repr(version), expected=SCHEMA_VERSION)]
        )
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise Poison(validation_errors(exc)) from exc


@dataclass(slots=True)
class Decoded(Generic[M]):
    """A batch split into decodable records (with their values) and poison."""

    good: list[tuple[Any, M]]
    poison: list[tuple[Any, Poison]]


def decode_batch(records: Sequence[Any], model: type[M]) -> Decoded[M]:
    """Decode every record of a consumed batch."""
    out: Decoded[M] = Decoded([], [])
    for rec in records:
        try:
            out.good.append((rec, decode(rec.value, model)))
        except Poison as exc:
            out.poison.append((rec, exc))
    return out


def record_headers(rec: Any, **updates: str) -> dict[str, str]:
    """The input record's headers (decoded) with ``updates`` applied: ids and times travel along."""
    headers = {
        str(k): (v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v))
        for k, v in (rec.headers or ())
    }
    headers.update(updates)
    return headers


Batch = Sequence[Any]
Handle = Callable[[Batch], Awaitable[None]]


async def guard_counting_failures(
    guard: Callable[[Batch, Handle], Awaitable[None]],
    records: Batch,
    handle: Handle,
    count_failed: Callable[[str, int], None],
) -> None:
    """``handle`` behind the dead letters' retry limit (``DeadLetters.guard``); a batch that still fails
    (inference unavailable past its wait, a write error ...) counts its records once per try, by reason
    ``inference_unavailable`` or ``error``, before it is raised for redelivery. Shared by classify and NER.
    """
    try:
        await guard(records, handle)
    except Exception as exc:
        count_failed("inference_unavailable" if isinstance(exc, BackendUnavailable) else "error", len(records))
        raise
