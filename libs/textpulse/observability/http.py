"""HTTP operations endpoints and request metrics.

``/health`` is liveness (the process serves HTTP), ``/ready`` is readiness (the
broker answers, and no partition the process holds is stuck: :mod:`.progress`),
``/metrics`` is the service's own Prometheus registry.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from textpulse.contracts.errors import PROBLEM_JSON, ErrorCode, FieldError, error, from_error_dicts, problem
from textpulse.settings import ServiceSettings

from .metrics import ServiceMetrics
from .progress import stuck_partitions

ReadyCheck = Callable[[], Awaitable[bool]]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Endpoint:
    """An ASGI callable that is not a plain function, so Starlette's ``Route`` mounts it as an app."""

    def __init__(self, fn: ASGIApp) -> None:
        self.fn = fn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.fn(scope, receive, send)


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

    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None, access_log=False)


def problem_response(
    status: int,
    errors: Sequence[FieldError] = (),
    *,
    code: str | None = None,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """An RFC 9457 ``application/problem+json`` response (the one error shape of every HTTP API)."""
    from starlette.responses import JSONResponse

    body = problem(status, errors, code=code, detail=detail)
    return JSONResponse(body, status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


def install_problem_handlers(app: Any) -> None:
    """Answer FastAPI's request validation errors and Starlette's 404/405/… with problem bodies."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    async def _validation(_: Any, exc: RequestValidationError) -> Any:
        return problem_response(422, from_error_dicts(exc.errors()))

    async def _http(_: Any, exc: HTTPException) -> Any:
        detail = exc.detail if isinstance(exc.detail, str) else None
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            return problem_response(exc.status_code, [error(ErrorCode.METHOD_NOT_ALLOWED)], headers=exc.headers)
        if exc.status_code == HTTPStatus.NOT_FOUND and detail == "Not Found":
            return problem_response(exc.status_code, [error(ErrorCode.NOT_FOUND)], headers=exc.headers)
        return problem_response(exc.status_code, detail=detail, headers=exc.headers)

    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)


#: OpenAPI schema of a problem body (components/schemas/Problem).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details; `errors` use the codes of the dead letters (x-dlq-code).",
    "required": ["type", "title", "status", "detail", "error", "errors"],
    "properties": {
        "type": {"type": "string", "description": "urn:textpulse:problem:<error>"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "The errors in one line (the dead-letter reason)."},
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
