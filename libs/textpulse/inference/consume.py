"""Decoding consumed records into contracts, with a dead-letter reason for each failure.

Shared by the enrichment services (classify, NER). A record is *poison* when
its bytes are not JSON, its ``schema_version`` is not one this build knows, or
it does not validate; poison goes to the service's DLQ with the reason,
everything else is processed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from textpulse.contracts import SCHEMA_VERSION

M = TypeVar("M", bound=BaseModel)


class Poison(ValueError):
    """A record that can never be processed; ``reason`` goes into the DLQ headers."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode(raw: bytes | None, model: type[M]) -> M:
    """Parse and validate one record value; raise :class:`Poison` with a reason."""
    if raw is None:
        raise Poison("empty record value (tombstone)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"undecodable: invalid JSON: {exc}"
        raise Poison(msg) from exc
    if not isinstance(obj, dict):
        msg = f"undecodable: expected a JSON object, got {type(obj).__name__}"
        raise Poison(msg)
    version = obj.get("schema_version")
    if version != SCHEMA_VERSION:
        msg = f"unsupported schema_version {version!r} (this build reads {SCHEMA_VERSION})"
        raise Poison(msg)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(p) for p in e["loc"]) or "<root>" for e in exc.errors(include_url=False, include_input=False)
        )
        msg = f"invalid {model.__name__}: {fields}"
        raise Poison(msg) from exc


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
