"""A small circuit breaker: stop hammering a server that keeps failing.

Closed: calls go through. After ``failure_threshold`` consecutive failures
it opens: calls fail at once with :class:`BackendUnavailable` for
``reset_s`` seconds. Then it is half-open: calls go through again; one
success closes it, one failure re-opens it for another ``reset_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from .errors import BackendUnavailable


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive-failure circuit breaker (not thread-safe: one event loop)."""

    def __init__(
        self, failure_threshold: int = 5, reset_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return State.HALF_OPEN
        return State.OPEN

    def before(self, what: str) -> None:
        """Raise BackendUnavailable while open."""
        if self.state is State.OPEN:
            remaining = self.reset_s - (self._clock() - (self._opened_at or 0.0))
            msg = f"circuit open for {what}: {self._failures} consecutive failures; retry in {remaining:.1f}s"
            raise BackendUnavailable(msg)

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def failure(self) -> None:
        self._failures += 1
        if self.state is State.HALF_OPEN or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
