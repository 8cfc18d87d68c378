"""API keys, per-client rate limits and a request body cap for the HTTP APIs.

One ASGI middleware (:class:`ApiGuardMiddleware`, installed by :func:`install_api_guard`)
guards every path except the operations routes (``/health``, ``/ready``,
``/metrics``), in this order:

1. API key — when keys are configured, ``Authorization: Bearer <key>`` or
   ``X-API-Key: <key>`` must match one of them (SHA-256 of both sides compared
   with :func:`hmac.compare_digest`, every key checked, so neither the position
   nor the length of a key leaks through timing); otherwise ``401`` with
   ``WWW-Authenticate``.
2. Rate limit — a token bucket per client (the matched key when keys are
   configured, else the client address); an empty bucket answers ``429`` with
   ``Retry-After``. Behind proxies the client address is taken from
   ``X-Forwarded-For``, counting ``trusted_proxy_hops`` entries from the right
   (:func:`client_address`); with 0 (the default) it is the socket peer.
3. Body size — a declared ``Content-Length`` above the cap answers ``413`` at once;
   a chunked body is counted while the app reads it and cut at the cap.

Keys are :class:`~pydantic.SecretStr` and are never logged: log lines name a key
by its position (``key#0``), never by its value. Settings come from
``TEXTPULSE_API_*`` (shared by every service) overridden per service by
``TEXTPULSE_<SERVICE>_API_*`` (see :meth:`ApiSecuritySettings.for_service`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from cachetools import LRUCache
from fastapi import HTTPException
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from textpulse.contracts.errors import PROBLEM_JSON, ErrorCode, error, message, problem

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPS_PATHS = ("/health", "/ready", "/metrics")
REALM = "textpulse"


class ApiSecuritySettings(BaseSettings):
    """API keys and limits of one HTTP API (env ``TEXTPULSE_API_*``, per service ``TEXTPULSE_<SERVICE>_API_*``)."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_API_", extra="ignore")

    keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys, comma-separated. Empty: no key required (local development).",
    )
    keys_file: Path | None = Field(
        None, description="File with one accepted key per line (a mounted secret), added to `keys`."
    )
    rate_per_s: float = Field(0.0, ge=0, description="Sustained requests per second per client; 0 switches it off.")
    rate_burst: int = Field(50, ge=1, description="Requests a client may send at once before the rate applies.")
    rate_max_clients: int = Field(
        10_000, ge=1, description="Buckets kept (least recently seen evicted), so many clients cannot exhaust memory."
    )
    max_body_bytes: int | None = Field(
        16 * 1024 * 1024, ge=1, description="Largest request body on any guarded path (413 above); null: no cap."
    )
    open_paths: Annotated[tuple[str, ...], NoDecode] = Field(
        OPS_PATHS, description="Paths served without key, rate limit or cap (comma-separated)."
    )
    trusted_proxy_hops: int = Field(
        0,
        ge=0,
        le=16,
        description=(
            "Proxies in front of the service that append to X-Forwarded-For (an ingress: 1). The client address "
            "is the entry this many hops from the right; 0: the socket peer (the header is ignored)."
        ),
    )

    @field_validator("keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("open_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def accepted_keys(self) -> list[SecretStr]:
        """``keys`` plus the non-blank lines of ``keys_file``."""
        found = list(self.keys)
        if self.keys_file is not None:
            lines = self.keys_file.read_text(encoding="utf-8").splitlines()
            found.extend(SecretStr(line.strip()) for line in lines if line.strip())
        return found

    @classmethod
    def for_service(cls, service: str) -> ApiSecuritySettings:
        """Shared ``TEXTPULSE_API_*`` values, each overridden by ``TEXTPULSE_<SERVICE>_API_*`` where set."""
        prefix = f"TEXTPULSE_{service.upper()}_API_"
        config = {**cls.model_config, "env_prefix": prefix}
        own_cls = type(f"{cls.__name__}For{service.title()}", (cls,), {"model_config": config})
        shared, own = cls(), own_cls()
        values = {name: getattr(shared, name) for name in shared.model_fields_set}
        values.update({name: getattr(own, name) for name in own.model_fields_set})
        return cls.model_validate(values)


class TokenBuckets:
    """One token bucket per client: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(
        self, rate: float, burst: int, *, max_clients: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0:
            msg = "rate must be positive"
            raise ValueError(msg)
        self.rate, self.burst, self.max_clients, self.clock = rate, float(burst), max_clients, clock
        # The least recently seen client's bucket goes first when full (it would be full again by now).
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max(1, max_clients))

    def take(self, client: str) -> float:
        """Spend one token: 0.0 when allowed, else the seconds until a token is available."""
        now = self.clock()
        tokens, stamp = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class Rejection:
    """Why a request was refused: status, error code, detail and response headers."""

    status: int
    error: str
    detail: str
    headers: tuple[tuple[str, str], ...] = ()

    limit: int | None = None

    def body(self, instance: str | None = None) -> bytes:
        """The RFC 9457 problem body every HTTP API answers errors with (``textpulse.contracts.errors``)."""
        codes = {401: ErrorCode.UNAUTHORIZED, 413: ErrorCode.BODY_TOO_LARGE, 429: ErrorCode.RATE_LIMITED}
        code = codes.get(self.status)
        # The item carries the vocabulary's sentence; ``detail`` says more (missing vs invalid key, the wait).
        items = [error(code, limit=self.limit)] if code is not None else []
        body = problem(self.status, items, code=self.error, detail=self.detail, instance=instance)
        return json.dumps(body).encode()


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return None


def _forwarded_for(scope: Scope) -> list[str]:
    """Every ``X-Forwarded-For`` entry, all such headers in order (a proxy may add a header or append)."""
    hops: list[str] = []
    for key, value in scope.get("headers", ()):
        if key.lower() == b"x-forwarded-for":
            hops.extend(part.strip() for part in bytes(value).decode("latin-1").split(",") if part.strip())
    return hops


def client_address(scope: Scope, trusted_hops: int = 0) -> str:
    """The client's address: the socket peer, or with ``trusted_hops`` proxies in front the
    ``X-Forwarded-For`` entry that many hops from the right.

    Only the entries the trusted proxies appended are believed: anything to their left was sent
    by the client and may be forged. With fewer entries than trusted hops the request did not
    come through all proxies, and the socket peer is used.
    """
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    if trusted_hops <= 0:
        return peer
    hops = _forwarded_for(scope)
    return hops[-trusted_hops] if len(hops) >= trusted_hops else peer


def presented_key(scope: Scope) -> bytes | None:
    """The key a request carries: ``Authorization: Bearer …`` first, else ``X-API-Key``."""
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(b" ")
        if scheme.lower() == b"bearer" and token.strip():
            return token.strip()
    api_key = _header(scope, b"x-api-key")
    return api_key.strip() if api_key is not None and api_key.strip() else None


class ApiGuard:
    """The checks themselves (keys, buckets, cap), shared by the middleware and the dependency."""

    def __init__(self, settings: ApiSecuritySettings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        # Only digests are kept: the key values never live on this object or reach a log line.
        self._digests = [_digest(key.get_secret_value().encode()) for key in settings.accepted_keys()]
        self.buckets = (
            TokenBuckets(settings.rate_per_s, settings.rate_burst, max_clients=settings.rate_max_clients, clock=clock)
            if settings.rate_per_s > 0
            else None
        )
        self.open_paths = frozenset(settings.open_paths)
        self.trusted_hops = settings.trusted_proxy_hops

    @property
    def keys_required(self) -> bool:
        return bool(self._digests)

    @property
    def key_count(self) -> int:
        return len(self._digests)

    def is_open(self, path: str) -> bool:
        return path in self.open_paths

    def match(self, presented: bytes | None) -> int | None:
        """Index of the matching key, comparing against every key in constant time."""
        if presented is None:
            return None
        digest = _digest(presented)
        found: int | None = None
        for index, expected in enumerate(self._digests):
            if hmac.compare_digest(digest, expected) and found is None:
                found = index
        return found

    def authenticate(self, scope: Scope) -> tuple[str | None, Rejection | None]:
        """The client identity for the rate limit, or a 401."""
        if not self._digests:
            return f"addr:{client_address(scope, self.trusted_hops)}", None
        presented = presented_key(scope)
        index = self.match(presented)
        if index is not None:
            return f"key#{index}", None
        challenge = f'Bearer realm="{REALM}"'
        if presented is not None:
            challenge += ', error="invalid_token"'
        detail = "invalid API key" if presented is not None else "an API key is required"
        log.info(
            "request refused: %s",
            detail,
            extra={"path": scope.get("path"), "client": client_address(scope, self.trusted_hops), "reason": "api_key"},
        )
        return None, Rejection(401, "unauthorized", detail, (("www-authenticate", challenge),))

    def throttle(self, client: str, scope: Scope) -> Rejection | None:
        if self.buckets is None:
            return None
        wait = self.buckets.take(client)
        if wait <= 0:
            return None
        retry_after = max(1, math.ceil(wait))
        log.info(
            "request refused: rate limit",
            extra={"path": scope.get("path"), "client": client, "reason": "rate_limit", "retry_after_s": retry_after},
        )
        return Rejection(
            429, "rate_limited", f"too many requests; retry after {retry_after} s", (("retry-after", str(retry_after)),)
        )

    def check(self, scope: Scope) -> Rejection | None:
        """Key then rate limit for one request (the body cap is applied while reading)."""
        client, rejection = self.authenticate(scope)
        if rejection is not None or client is None:
            return rejection
        return self.throttle(client, scope)


async def send_rejection(send: Send, rejection: Rejection, scope: Scope | None = None) -> None:
    body = rejection.body(instance=str(scope.get("path", "")) if scope is not None else None)
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers.extend((name.encode(), value.encode()) for name, value in rejection.headers)
    await send({"type": "http.response.start", "status": rejection.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the cap.

    An ``HTTPException`` so that FastAPI's body parsing lets it through (it turns any other
    exception into a 400) and the problem handlers answer 413 with :attr:`problem_errors`.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, message(ErrorCode.BODY_TOO_LARGE, limit=limit))
        self.problem_errors = [error(ErrorCode.BODY_TOO_LARGE, limit=limit)]


class ApiGuardMiddleware:
    """ASGI middleware applying :class:`ApiGuard` to every HTTP request outside the open paths."""

    def __init__(self, app: ASGIApp, guard: ApiGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.guard.is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        rejection = self.guard.check(scope)
        if rejection is None:
            rejection = _declared_too_large(scope, self.guard.settings.max_body_bytes)
        if rejection is not None:
            await send_rejection(send, rejection, scope)
            return
        limit = self.guard.settings.max_body_bytes
        if limit is None:
            await self.app(scope, receive, send)
            return
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await send_rejection(send, _too_large(limit), scope)


def _declared_too_large(scope: Scope, limit: int | None) -> Rejection | None:
    if limit is None:
        return None
    declared = _header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return _too_large(limit)
    return None


def _too_large(limit: int) -> Rejection:
    return Rejection(413, "too_large", message(ErrorCode.BODY_TOO_LARGE, limit=limit), limit=limit)


def install_api_guard(
    app: Any, settings: ApiSecuritySettings, *, clock: Callable[[], float] = time.monotonic
) -> ApiGuard:
    """Add the guard to a FastAPI/Starlette app (before the metrics middleware, so refusals are counted)."""
    guard = ApiGuard(settings, clock=clock)
    app.add_middleware(ApiGuardMiddleware, guard=guard)
    app.state.api_guard = guard
    if guard.keys_required:
        log.info("API keys required", extra={"keys": guard.key_count, "open_paths": sorted(guard.open_paths)})
    else:
        log.info("no API keys configured: the HTTP API is open (set TEXTPULSE_API_KEYS)")
    return guard
