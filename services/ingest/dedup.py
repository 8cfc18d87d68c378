"""Idempotency window: event ids already written to ``text.raw``.

An id is *reserved* while its write is in flight and *committed* once the broker
acknowledged it. A concurrent request for an id in flight waits for the first
outcome instead of writing twice; a failed write releases the id so a retry can
succeed. The window is bounded in size and age and is rebuilt at start-up from
the ``event-id`` headers of the tail of ``text.raw`` (see ``warmup``), so a
restart does not forget recent ids. Across several ingest replicas the window
is per replica; downstream consumers de-duplicate by event id as the last line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from cachetools import TTLCache


class Undecided(TimeoutError):
    """The id's earlier write timed out and may still land: retry later (HTTP 503, a redelivered batch)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"the earlier write of event {event_id!r} is not decided yet")
        self.event_id = event_id


class IdempotencyStore:
    """Bounded TTL + LRU window of committed ids (``cachetools.TTLCache``) plus in-flight reservations."""

    def __init__(self, capacity: int = 1_000_000, ttl_s: float = 86_400.0) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        # TTLCache needs maxsize >= 1; capacity 0 (no window) never stores anything (_add).
        self._seen: TTLCache[str, bool] = TTLCache(maxsize=max(1, capacity), ttl=ttl_s, timer=time.monotonic)
        # id → future of its outcome; the future is only created when a second writer waits.
        self._inflight: dict[str, asyncio.Future[bool] | None] = {}
        # Ids whose write timed out while its records stayed queued in the producer (settle()).
        self._undecided: set[str] = set()
        self._settling: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, event_id: str) -> bool:
        """True if ``event_id`` was committed within the TTL (expired ids are gone from the cache)."""
        return event_id in self._seen

    async def reserve(self, event_id: str) -> bool:
        """Claim ``event_id`` for writing. False means it is a duplicate.

        Raises :class:`Undecided` while an earlier write of the id timed out and its records may
        still land (:meth:`settle`): writing it again now could write it twice.
        """
        while True:
            if self.seen(event_id):
                return False
            if event_id in self._undecided:
                raise Undecided(event_id)
            if event_id not in self._inflight:
                self._inflight[event_id] = None
                return True
            # Another writer holds it: its outcome decides.
            pending = self._inflight[event_id]
            if pending is None:
                pending = self._inflight[event_id] = asyncio.get_running_loop().create_future()
            if await asyncio.shield(pending):
                return False

    def commit(self, event_id: str) -> None:
        """The write of ``event_id`` was acknowledged."""
        self._add(event_id)
        fut = self._inflight.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.set_result(True)

    def release(self, event_id: str) -> None:
        """The write failed: let a retry claim the id again."""
        fut = self._inflight.pop(event_id, None)
        if fut is not None and not fut.done():
            fut.set_result(False)

    def settle(self, event_ids: Iterable[str], undecided: Sequence[asyncio.Future[Any]]) -> None:
        """A write of ``event_ids`` timed out with ``undecided`` delivery futures: decide when they do.

        A time-out is not a failure: the producer keeps the records and delivers them when the
        broker is back. Releasing the ids at once (the 503 the client retries) would let the retry
        write each event a second time. So the ids stay reserved — a retry meanwhile gets
        :class:`Undecided` (503 again) — until every future settled: committed if all were
        delivered (the retry then gets ``duplicate``), released if any failed (the retry writes).
        """
        ids = list(event_ids)
        self._undecided.update(ids)

        async def decide() -> None:
            outcomes = await asyncio.gather(*undecided, return_exceptions=True)
            delivered = not any(isinstance(o, BaseException) for o in outcomes)
            for event_id in ids:
                self._undecided.discard(event_id)
                if delivered:
                    self.commit(event_id)
                else:
                    self.release(event_id)

        task = asyncio.get_running_loop().create_task(decide(), name="ingest-settle")
        self._settling.add(task)  # a reference, or the loop may drop the task before it ran
        task.add_done_callback(self._settling.discard)

    @property
    def undecided(self) -> int:
        """Ids waiting for the outcome of a timed-out write."""
        return len(self._undecided)

    def add_many(self, event_ids: Iterable[str]) -> None:
        """Mark ids as committed (warm-up from ``text.raw``)."""
        for event_id in event_ids:
            self._add(event_id)

    def _add(self, event_id: str) -> None:
        if self.capacity <= 0:
            return
        self._seen[event_id] = True  # (re)sets its TTL; the least recently used goes when full
