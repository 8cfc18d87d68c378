"""HTTP operations endpoints and request metrics.

``/health`` is liveness (the process serves HTTP), ``/ready`` is readiness (the
broker answers, and no partition the process holds is stuck: :mod:`.progress`),
``/metrics`` is the service's own Prometheus registry.

Every error answer of every HTTP API is an RFC 9457 ``application/problem+json`` body
(:func:`install_problem_handlers` for FastAPI apps, :class:`OpsAsgiFastStream` and the ops
endpoints for the consumer services), with the codes of :mod:`textpulse.contracts.errors`;
:func:`problem_openapi` documents it, with the API-key security schemes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from faststream.asgi import AsgiFastStream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from textpulse.contracts.errors import (
    PROBLEM_JSON,
    PROBLEM_TYPE_PREFIX,
    ErrorCode,
    FieldError,
    error,
    from_error_dicts,
    problem,
)
from textpulse.settings import ServiceSettings

from .metrics import ServiceMetrics
from .progress import stuck_partitions

ReadyCheck = Callable[[], Awaitable[bool]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(__name__)
_READ_METHODS = ("GET", "HEAD")
#: The operations routes (open to probes and Prometheus: no key, no rate limit).
OPS_PATHS = ("/health", "/ready", "/metrics")


class _Endpoint:
    """An ASGI callable that is not a plain function, so Starlette's ``Route`` mounts it as an app.

    Mounted by FastStream (exact path, any method) it refuses other methods itself, and a failure
    inside it is a 500 problem body; both in the shape of every other error.
    """

    def __init__(self, fn: ASGIApp) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method", "GET") not in _READ_METHODS:
            allow = {"allow": ", ".join(_READ_METHODS)}
            await send_problem(send, scope, 405, status_errors(405), allow)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.fn(scope, receive, tracking_send)
        except Exception:
            if started:
                raise
            log.exception("ops endpoint failed", extra={"path": scope.get("path")})
            await send_problem(send, scope, 500, status_errors(500))


async def _respond(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def health_app() -> ASGIApp:
    """Liveness: 200 while the event loop serves requests."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
        await _respond(send, 200, b'{"status":"ok"}', b"application/json")

    return _Endpoint(app)


def ready_app(check: ReadyCheck, metrics: ServiceMetrics | None = None) -> ASGIApp:
    """Readiness: 200 when ``check`` passes and (with ``metrics``) no partition this process holds is stuck.

    Else 503 (not ready for traffic); a stuck partition is named in the body
    (``{"status":"not ready","stuck":["text.in:0"]}``, see :mod:`.progress`).
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
        ok = False
        try:
            ok = await check()
        except Exception:  # noqa: BLE001 - any failure of the probe means "not ready"
            ok = False
        stuck = stuck_partitions(metrics) if metrics is not None else []
        if ok and not stuck:
            await _respond(send, 200, b'{"status":"ready"}', b"application/json")
        elif stuck:
            body = orjson.dumps({"status": "not ready", "stuck": stuck})
            await _respond(send, 503, body, b"application/json")
        else:
            await _respond(send, 503, b'{"status":"not ready"}', b"application/json")

    return _Endpoint(app)


def metrics_app(metrics: ServiceMetrics) -> ASGIApp:
    """Prometheus exposition of the service registry."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
        await _respond(send, 200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST.encode())

    return _Endpoint(app)


def ops_routes(metrics: ServiceMetrics, ready: ReadyCheck) -> list[tuple[str, ASGIApp]]:
    """The three operations routes, for ``AsgiFastStream(asgi_routes=...)``; ``/ready`` fails on a stuck partition."""
    return [("/health", health_app()), ("/ready", ready_app(ready, metrics)), ("/metrics", metrics_app(metrics))]


class HttpMetricsMiddleware:
    """Counts requests and times them by route template (bounded label set)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            svc = self.metrics.service
            self.metrics.http_requests.labels(svc, path, method, str(status)).inc()
            self.metrics.http_duration.labels(svc, path, method).observe(time.perf_counter() - started)


def serve(app: Any, settings: ServiceSettings) -> None:
    """Serve ``app`` with uvicorn on the service's host and port (logging already configured)."""
    import uvicorn

    # proxy_headers off: the client address comes from the socket or, behind proxies, from the one
    # setting TEXTPULSE_API_TRUSTED_PROXY_HOPS (apikey.client_address), never from uvicorn's own guess.
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
    )


def problem_response(
    status: int,
    errors: Sequence[FieldError] = (),
    *,
    code: str | None = None,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
    instance: str | None = None,
) -> Any:
    """An RFC 9457 ``application/problem+json`` response (the one error shape of every HTTP API)."""
    from starlette.responses import JSONResponse

    body = problem(status, errors, code=code, detail=detail, instance=instance)
    return JSONResponse(body, status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


#: The vocabulary's code of an ``HTTPException`` raised without one (by a route, a dependency or Starlette).
_STATUS_CODES: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_VALUE,
    401: ErrorCode.UNAUTHORIZED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.BODY_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.INVALID_VALUE,
    429: ErrorCode.RATE_LIMITED,
    500: ErrorCode.INTERNAL_ERROR,
    503: ErrorCode.UNAVAILABLE,
}
_STARLETTE_DETAILS = {"Not Found", "Method Not Allowed", "Internal Server Error", "Service Unavailable"}


def status_errors(status: int, detail: str | None = None) -> list[FieldError]:
    """The one :class:`FieldError` of a refusal that names no field (``detail`` fills ``{why}``)."""
    code = _STATUS_CODES.get(status)
    if code is None:
        return []
    why = detail if detail and detail not in _STARLETTE_DETAILS else None
    return [error(code, why=why) if why else error(code)]


def request_errors(errors: Sequence[Any]) -> list[FieldError]:
    """FastAPI's ``RequestValidationError`` items in the vocabulary.

    Body fields drop FastAPI's ``body`` prefix, so they read as the ingest API's do (``text``);
    parameters keep theirs (``query.size``, ``path.user_id``, ``header.idempotency-key``).
    """
    fixed = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        fixed.append({**err, "loc": loc[1:]} if loc[:1] == ("body",) else err)
    return from_error_dicts(fixed)


async def send_problem(
    send: Send, scope: Scope, status: int, errors: Sequence[FieldError] = (), headers: Mapping[str, str] | None = None
) -> None:
    """A problem answer from plain ASGI code (no Starlette request)."""
    body = orjson.dumps(problem(status, errors, instance=str(scope.get("path", ""))))
    raw_headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def install_problem_handlers(app: Any) -> None:
    """Every error of a FastAPI app as an RFC 9457 problem, and the OpenAPI document to match.

    Covers FastAPI's request validation (422), ``HTTPException`` from routes, dependencies and
    Starlette's router (404, 405, 503, …) and any unhandled exception (500; Starlette re-raises
    it after the answer, so the server still logs it with its traceback). The API guard's
    401/413/429 are answered by its middleware with the same body. ``app.openapi`` becomes
    :func:`problem_openapi` (a service with schemas of its own sets it again with them).
    """
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def _validation(request: Any, exc: RequestValidationError) -> Any:
        return problem_response(422, request_errors(exc.errors()), instance=request.url.path)

    async def _http(request: Any, exc: HTTPException) -> Any:
        detail = exc.detail if isinstance(exc.detail, str) else None
        shown = None if detail in _STARLETTE_DETAILS else detail
        # An exception may carry its own items (apikey.BodyTooLarge: the code with its limit).
        errors = getattr(exc, "problem_errors", None) or status_errors(exc.status_code, detail)
        return problem_response(exc.status_code, errors, detail=shown, headers=exc.headers, instance=request.url.path)

    async def _unhandled(request: Any, exc: Exception) -> Any:  # noqa: ARG001 - logged by the server
        return problem_response(500, status_errors(500), instance=request.url.path)

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unhandled)
    app.openapi = problem_openapi(app)


def _not_found_app() -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
        await send_problem(send, scope, 404, status_errors(404))

    return app


class OpsAsgiFastStream(AsgiFastStream):
    """FastStream's ASGI app whose unknown paths answer a problem body too (FastStream's is plain text)."""

    _problem_404 = staticmethod(_not_found_app())

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            await self._problem_404(scope, receive, send)
            return
        await super().not_found(scope, receive, send)


#: OpenAPI schema of a problem body (components/schemas/Problem).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `errors` use the codes of the dead letters (x-dlq-code).",
    "required": ["type", "title", "status", "detail", "instance", "error", "errors"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": f"{PROBLEM_TYPE_PREFIX}<error>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "The errors in one line (the dead-letter reason)."},
        "instance": {"type": "string", "format": "uri-reference", "description": "The request path."},
        "error": {"type": "string", "description": "Problem type, e.g. validation_failed, too_large."},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["code", "field", "message"],
                "properties": {
                    "code": {"type": "string", "enum": [c.value for c in ErrorCode]},
                    "field": {"type": "string", "description": "Dotted path; [i] is a batch position; empty: all."},
                    "message": {"type": "string"},
                },
            },
        },
    },
}


#: OpenAPI security schemes: the API guard accepts either header (``apikey.presented_key``).
SECURITY_SCHEMES: dict[str, Any] = {
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "One of TEXTPULSE_API_KEYS / TEXTPULSE_<SERVICE>_API_KEYS (not checked when none is set).",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same key as `Authorization: Bearer <key>`.",
    },
}
_SECURITY: list[dict[str, list[str]]] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
_PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
_STANDARD: dict[int, dict[str, Any]] = {
    401: {
        "description": "API key missing or invalid (`unauthorized`).",
        "headers": {"WWW-Authenticate": {"description": 'Bearer realm="textpulse"', "schema": {"type": "string"}}},
    },
    413: {"description": "Body larger than the cap (`body_too_large`)."},
    422: {"description": "Invalid parameters or body; `errors` lists each with its code and field."},
    429: {"description": "Rate limit of this client (`rate_limited`).", "headers": _RETRY_AFTER},
    500: {"description": "Unexpected failure (`internal_error`); logged by the service."},
}


def document_problems(schema: dict[str, Any], *, open_paths: Sequence[str] = OPS_PATHS) -> None:
    """Add the problem schema, the security schemes and the error answers to an OpenAPI document.

    Every operation outside ``open_paths`` requires a key (either scheme) and documents 401 and
    429; operations with a body document 413, those with parameters or a body 422; all document
    500. Every error answer (any 4xx/5xx, FastAPI's default 422 included) uses the problem schema.
    """
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    components["securitySchemes"] = SECURITY_SCHEMES
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if method not in _HTTP_METHODS:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            wanted = [500]
            if path not in open_paths:
                op["security"] = _SECURITY
                wanted += [401, 429]
            if "requestBody" in op:
                wanted.append(413)
            if "requestBody" in op or op.get("parameters") or "422" in responses:
                wanted.append(422)
            for status in wanted:
                standard = _STANDARD[status]
                current = responses.get(str(status), {})
                described = current.get("description") not in {None, "Validation Error"}
                responses[str(status)] = {
                    **standard,
                    **current,
                    "description": current["description"] if described else standard["description"],
                }
            for key, answer in responses.items():
                if key[:1] in {"4", "5"}:
                    answer["content"] = _PROBLEM_CONTENT
    text = orjson.dumps(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}".encode() not in text:
            components["schemas"].pop(unused, None)


def problem_openapi(app: Any, schemas: Mapping[str, Any] | None = None) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with :func:`document_problems` applied and ``schemas`` added to the components."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(schemas or {})
            guard = getattr(app.state, "api_guard", None)
            document_problems(schema, open_paths=tuple(guard.open_paths) if guard is not None else OPS_PATHS)
            app.openapi_schema = schema
        return app.openapi_schema  # type: ignore[no-any-return]

    return openapi
