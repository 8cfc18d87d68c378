"""What a consuming service does around inference: wait out outages, isolate poison inputs.

- :func:`until_available` retries a call that raises :class:`BackendUnavailable`
  with exponential backoff for up to ``max_wait_s`` (kept below the consumer's
  ``max.poll.interval``), then re-raises so the batch is not committed and is
  redelivered. Consumption is paused meanwhile: the handler does not return.
- :func:`isolate_rejects` runs a batch; when the backend rejects it
  (:class:`InputRejected`), it bisects to find the offending items, so one bad
  record costs ``O(log n)`` extra calls and the rest of the batch proceeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from textpulse.observability import tracing

from .errors import BackendUnavailable, InputRejected

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


async def until_available(
    call: Callable[[], Awaitable[T]],
    *,
    max_wait_s: float = 240.0,
    initial_s: float = 0.5,
    max_backoff_s: float = 10.0,
    on_retry: Callable[[BackendUnavailable, float], None] | None = None,
) -> T:
    """``await call()``, retrying while the backend is unavailable (at most ``max_wait_s`` in all).

    Waits ``initial_s`` doubling up to ``max_backoff_s``, never past the deadline; the last
    :class:`BackendUnavailable` is re-raised when the time is up.
    """
    deadline = time.monotonic() + max_wait_s
    backoff = wait_exponential(multiplier=initial_s, max=max_backoff_s)

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(backoff(state), deadline - time.monotonic()))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        pause = state.upcoming_sleep
        if on_retry is not None and isinstance(exc, BackendUnavailable):
            on_retry(exc, pause)
        log.warning("inference unavailable; retrying", extra={"error": str(exc)[:300], "retry_in_s": pause})

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(BackendUnavailable),
        stop=lambda _state: time.monotonic() >= deadline,
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        # The batch's inference, retries included, as one span of the consume trace (no-op untraced).
        with attempt, tracing.span("infer"):
            return await call()
    msg = "unreachable: AsyncRetrying returns or re-raises"
    raise AssertionError(msg)  # pragma: no cover


async def isolate_rejects(
    run: Callable[[Sequence[T]], Awaitable[list[R]]], items: Sequence[T]
) -> tuple[list[R | None], list[tuple[int, InputRejected]]]:
    """Results per item (None where rejected) and the rejected indices with their errors."""
    results: list[R | None] = [None] * len(items)
    rejected: list[tuple[int, InputRejected]] = []

    async def go(indices: list[int]) -> None:
        if not indices:
            return
        try:
            out = await run([items[i] for i in indices])
        except InputRejected as exc:
            if len(indices) == 1:
                rejected.append((indices[0], exc))
                return
            middle = len(indices) // 2
            await go(indices[:middle])
            await go(indices[middle:])
            return
        for index, value in zip(indices, out, strict=True):
            results[index] = value

    await go(list(range(len(items))))
    rejected.sort(key=lambda pair: pair[0])
    return results, rejected
