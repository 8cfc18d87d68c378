"""Run an async harness (an app on FastStream's in-memory broker) on its own event loop thread.

Hypothesis drives synchronous test functions; FastStream's lifespan must be entered
and left in one task. :class:`LoopThread` enters the harness once in a task of a
background loop and runs each example's coroutine on that loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LoopThread(Generic[T]):
    def __init__(self, factory: Callable[[], AbstractAsyncContextManager[T]], *, timeout_s: float = 60.0) -> None:
        self.factory = factory
        self.timeout_s = timeout_s
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="property-loop", daemon=True)
        self._ready: asyncio.Future[Any] | None = None
        self._stop: asyncio.Event | None = None
        self._main: Any = None

    def __enter__(self) -> T:
        self._thread.start()

        async def main(ready: asyncio.Future[T], stop: asyncio.Event) -> None:
            try:
                async with self.factory() as harness:
                    ready.set_result(harness)
                    await stop.wait()
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                raise

        async def setup() -> tuple[asyncio.Future[T], asyncio.Event]:
            return self.loop.create_future(), asyncio.Event()

        ready, stop = asyncio.run_coroutine_threadsafe(setup(), self.loop).result(self.timeout_s)
        self._stop = stop
        self._main = asyncio.run_coroutine_threadsafe(main(ready, stop), self.loop)

        async def wait_ready() -> T:
            return await ready

        return asyncio.run_coroutine_threadsafe(wait_ready(), self.loop).result(self.timeout_s)

    def run(self, coro: Awaitable[R]) -> R:
        """Run ``coro`` on the harness's loop and return its result (exceptions propagate)."""

        async def wrapper() -> R:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(self.timeout_s)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._stop is not None:
                self.loop.call_soon_threadsafe(self._stop.set)
            if self._main is not None:
                self._main.result(self.timeout_s)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(self.timeout_s)
            self.loop.close()
