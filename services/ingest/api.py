"""The HTTP edge: ``POST /v1/events`` and ``POST /v1/events/batch``.

Status codes (documented in the README):
202 written (or a duplicate of an event already written) · 400 not JSON or not
UTF-8 · 413 body or batch too large · 415 wrong content type · 422 wrong shape or
invalid fields · 503 broker unavailable (Retry-After). Every error body is an RFC 9457
problem (``application/problem+json``) whose ``errors`` use the codes, sentences and
field paths of the dead letters (``textpulse.contracts.errors``); the same mistake has
the same status on both endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from textpulse.contracts.errors import PROBLEM_JSON, ErrorCode, FieldError, error, reason
from textpulse.kafka.writer import WriteError
from textpulse.observability.http import problem_response
from textpulse.observability.tracing import bind_event

from .core import Ingestor, InvalidInput, Result, decode_json, now, parse_batch, validate_event
from .metrics import IngestMetrics
from .settings import IngestSettings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["events"])

JSON_TYPES = {"application/json"}
NDJSON_TYPES = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}


class EventResult(BaseModel):
    id: str = Field(description="Event id (client-supplied or generated).")
    status: str = Field(description="accepted | duplicate")


class IngestResponse(BaseModel):
    accepted: int = Field(description="Events written to text.raw by this request.")
    duplicates: int = Field(description="Events whose id was already written (not written again).")
    results: list[EventResult]


class ApiError(Exception):
    """A refusal: its status and its mistakes (codes of ``textpulse.contracts.errors``), as a problem body."""

    def __init__(
        self,
        status: int,
        errors: Sequence[FieldError] = (),
        *,
        code: str | None = None,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or reason(errors))
        self.status, self.errors, self.code, self.detail, self.headers = status, errors, code, detail, headers or {}

    @classmethod
    def of(cls, exc: InvalidInput) -> ApiError:
        return cls(exc.status, exc.errors)

    def response(self, request: Request) -> JSONResponse:
        return problem_response(  # type: ignore[no-any-return]
            self.status,
            self.errors,
            code=self.code,
            detail=self.detail,
            headers=self.headers,
            instance=request.url.path,
        )


def settings_dep(request: Request) -> IngestSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def ingestor_dep(request: Request) -> Ingestor:
    return request.app.state.ingestor  # type: ignore[no-any-return]


def metrics_dep(request: Request) -> IngestMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """Read at most ``limit`` bytes; a larger body is refused without buffering it all."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, [error(ErrorCode.BODY_TOO_LARGE, limit=limit)])
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, [error(ErrorCode.BODY_TOO_LARGE, limit=limit)])
        chunks.append(chunk)
    return b"".join(chunks)


async def _write(ingestor: Ingestor, events: list[Any], settings: IngestSettings) -> list[Result]:
    try:
        return await ingestor.ingest(events)
    except (WriteError, TimeoutError) as exc:  # TimeoutError: also WriteTimeout and Undecided
        log.warning("broker unavailable; answering 503", extra={"error": repr(exc)})
        raise ApiError(
            503, [error(ErrorCode.BROKER_UNAVAILABLE)], headers={"Retry-After": str(settings.retry_after_s)}
        ) from exc


def _respond(results: list[Result], events: list[Any], metrics: IngestMetrics) -> JSONResponse:
    for res, event in zip(results, events, strict=True):
        metrics.ingest_events.labels("ingest", event.channel.value, res.outcome.value).inc()
    body = IngestResponse(
        accepted=sum(r.outcome == "accepted" for r in results),
        duplicates=sum(r.outcome == "duplicate" for r in results),
        results=[EventResult(id=r.id, status=r.outcome.value) for r in results],
    )
    return JSONResponse(body.model_dump(), 202)


def _reject(metrics: IngestMetrics, count: int = 1) -> None:
    metrics.ingest_events.labels("ingest", "unknown", "rejected").inc(count)


_EVENT_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/TextEventIn"}}}
_BATCH_BODY = {
    "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/TextEventIn"}}},
    "application/x-ndjson": {"schema": {"type": "string", "description": "One TextEventIn JSON object per line."}},
}
_PROBLEM = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The body is not JSON or not UTF-8 (`not_json`, `invalid_utf8`).", "content": _PROBLEM},
    401: {"description": "API key missing or invalid (`unauthorized`).", "content": _PROBLEM},
    405: {"description": "Method not allowed (`method_not_allowed`).", "content": _PROBLEM},
    413: {"description": "Body or batch too large (`body_too_large`, `too_many_events`).", "content": _PROBLEM},
    415: {"description": "Unsupported content type (`unsupported_media_type`).", "content": _PROBLEM},
    422: {
        "description": "Wrong shape or invalid fields; `errors` lists each with code and field.",
        "content": _PROBLEM,
    },
    429: {"description": "Rate limit; retry after `Retry-After` seconds (`rate_limited`).", "content": _PROBLEM},
    503: {"description": "Broker unavailable; retry after `Retry-After` seconds.", "content": _PROBLEM},
}


@router.post(
    "/events",
    status_code=202,
    response_model=IngestResponse,
    responses=_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": _EVENT_BODY}},
    summary="Ingest one event",
)
async def post_event(
    request: Request,
    settings: Annotated[IngestSettings, Depends(settings_dep)],
    ingestor: Annotated[Ingestor, Depends(ingestor_dep)],
    metrics: Annotated[IngestMetrics, Depends(metrics_dep)],
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> JSONResponse:
    """Validate, normalise and write one event; 202 only after Kafka acknowledged it."""
    try:
        if _media_type(request) not in JSON_TYPES:
            raise ApiError(415, [error(ErrorCode.UNSUPPORTED_MEDIA_TYPE, expected="application/json")])
        raw = await read_body(request, settings.max_event_bytes)
        try:
            event = validate_event(decode_json(raw), ingest_time=now(), fallback_id=idempotency_key)
        except InvalidInput as exc:
            raise ApiError.of(exc) from exc
        bind_event(event.id)
        results = await _write(ingestor, [event], settings)
        return _respond(results, [event], metrics)
    except ApiError as err:
        if err.status != HTTPStatus.SERVICE_UNAVAILABLE:
            _reject(metrics)
        return err.response(request)


@router.post(
    "/events/batch",
    status_code=202,
    response_model=IngestResponse,
    responses=_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": _BATCH_BODY}},
    summary="Ingest a batch (JSON array or NDJSON)",
)
async def post_batch(
    request: Request,
    settings: Annotated[IngestSettings, Depends(settings_dep)],
    ingestor: Annotated[Ingestor, Depends(ingestor_dep)],
    metrics: Annotated[IngestMetrics, Depends(metrics_dep)],
) -> JSONResponse:
    """All-or-nothing validation (422 lists failures by index), then one write of the batch."""
    try:
        media = _media_type(request)
        if media not in JSON_TYPES | NDJSON_TYPES:
            raise ApiError(
                415,
                [
                    error(
                        ErrorCode.UNSUPPORTED_MEDIA_TYPE, expected="application/json (an array) or application/x-ndjson"
                    )
                ],
            )
        raw = await read_body(request, settings.max_batch_bytes)
        try:
            items = parse_batch(raw, ndjson=media in NDJSON_TYPES)
        except InvalidInput as exc:
            raise ApiError.of(exc) from exc
        if not items:
            raise ApiError(422, [error(ErrorCode.BATCH_EMPTY)])
        if len(items) > settings.max_batch_events:
            raise ApiError(413, [error(ErrorCode.TOO_MANY_EVENTS, count=len(items), limit=settings.max_batch_events)])
        ingest_time = now()
        events: list[Any] = []
        errors: list[FieldError] = []
        for index, item in enumerate(items):
            try:
                events.append(validate_event(item, ingest_time=ingest_time))
            except InvalidInput as exc:
                errors.extend(e.at(f"[{index}]") for e in exc.errors)
        if errors:
            # The status of the first mistake: every item's shape and field errors are 422.
            raise ApiError(InvalidInput(errors).status, errors)
        results = await _write(ingestor, events, settings)
        return _respond(results, events, metrics)
    except ApiError as err:
        if err.status != HTTPStatus.SERVICE_UNAVAILABLE:
            _reject(metrics)
        return err.response(request)
