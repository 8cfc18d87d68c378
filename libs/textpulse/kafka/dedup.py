"""Bounded memory of recently processed event ids: the at-least-once consumer's de-duplication.

At-least-once redelivers a batch whose commit did not happen (a handler error
after some outputs were written, a commit lost in a rebalance, a partition that
comes back). A consumer that remembers the event ids whose outputs were
acknowledged skips them on redelivery instead of writing them again. The memory
is per process and bounded (oldest ids forgotten first): a restart forgets it,
so downstream stores stay idempotent by event id (Elasticsearch documents use it
as ``_id``). Exactly-once mode must not use it: an output acknowledged inside a
transaction that is then aborted was never written.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_CAPACITY = 100_000


class RecentIds:
    """Insertion-ordered set of at most ``capacity`` ids."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity <= 0:
            msg = "capacity must be positive"
            raise ValueError(msg)
        self.capacity = capacity
        self._ids: dict[str, None] = {}
        self.skipped = 0

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, ids: Iterable[str]) -> None:
        """Remember ``ids`` (call after their outputs were acknowledged)."""
        for event_id in ids:
            self._ids.pop(event_id, None)
            self._ids[event_id] = None
        while len(self._ids) > self.capacity:
            del self._ids[next(iter(self._ids))]

    def fresh(self, ids: Iterable[str]) -> list[bool]:
        """For each id, whether it was neither remembered nor earlier in ``ids`` (others count in ``skipped``)."""
        batch: set[str] = set()
        out = []
        for event_id in ids:
            out.append(event_id not in self._ids and event_id not in batch)
            batch.add(event_id)
        self.skipped += out.count(False)
        return out
