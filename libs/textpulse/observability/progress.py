"""Per-partition progress of a consumer group, and what counts as stuck.

:class:`~textpulse.observability.lag.LagMonitor` feeds :class:`PartitionProgress` with the
group's committed offset and the partition's end offset at every probe. A partition is
*stalled* while its committed offset does not move and records wait behind it (lag > 0); it
is *stuck* once stalled for ``stuck_after_s`` (``TEXTPULSE_KAFKA_STUCK_AFTER_S``). Exported per
partition: ``textpulse_consumer_committed_offset``, ``textpulse_consumer_stalled_seconds`` and
``textpulse_consumer_stuck`` (0/1, what the ``TextpulseConsumerStuck`` alert reads), and
``/ready`` answers 503 while a partition this process holds is stuck
(:func:`stuck_partitions`).

Why the committed offset and not the handler: it is what the group has really finished, in
both delivery modes (exactly-once commits inside its transactions), and a handler that hangs
for ever never reports anything. Why "records wait" and not only "lag > 0": on a topic written
by transactions the last offset of a partition is a commit marker that no consumer offset ever
passes, so the lag of a caught-up group is 1 there; the monitor checks that a readable record
is really waiting before it calls a long-stalled partition stuck.

Which partitions this process holds comes from :class:`AssignmentListener`, which
:func:`~textpulse.kafka.broker.batch_subscriber` installs on every consumer: a replica is
unready only for its own stuck partitions, while every replica exports the metric for all of
them (the alert takes the max).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition

from .metrics import ServiceMetrics

log = logging.getLogger(__name__)

#: consumer group -> the partitions the consumers of this process hold now (absent: not known).
ASSIGNED: dict[str, set[TopicPartition]] = {}
#: consumer group -> how many assignments this process has received (every rebalance counts,
#: also one that hands back the same partitions: their fetch positions were reset all the same).
ASSIGNMENTS: dict[str, int] = {}


class AssignmentListener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Records the group's assignment in :data:`ASSIGNED`, then calls ``inner`` (the service's own listener)."""

    def __init__(self, group_id: str, inner: ConsumerRebalanceListener | None = None) -> None:
        self.group_id = group_id
        self.inner = inner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        ASSIGNED.setdefault(self.group_id, set()).difference_update(revoked)
        if self.inner is not None:
            await _maybe_await(self.inner.on_partitions_revoked(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        ASSIGNED.setdefault(self.group_id, set()).update(assigned)
        ASSIGNMENTS[self.group_id] = ASSIGNMENTS.get(self.group_id, 0) + 1
        if self.inner is not None:
            await _maybe_await(self.inner.on_partitions_assigned(assigned))


async def _maybe_await(result: Any) -> None:
    # aiokafka accepts plain and coroutine callbacks; so must a wrapper.
    if hasattr(result, "__await__"):
        await result


@dataclass
class _State:
    committed: int
    since: float
    stalled_s: float = 0.0
    stuck: bool = False


class PartitionProgress:
    """Stall clocks of the partitions one service's lag monitors probe."""

    def __init__(
        self, metrics: ServiceMetrics, stuck_after_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.metrics = metrics
        self.stuck_after_s = stuck_after_s
        self.clock = clock
        self._states: dict[tuple[str, TopicPartition], _State] = {}
        self._committed = metrics.consumer_committed_offset
        self._stalled = metrics.consumer_stalled_seconds
        self._stuck = metrics.consumer_stuck

    def _labels(self, tp: TopicPartition) -> tuple[str, str, str]:
        return self.metrics.service, tp.topic, str(tp.partition)

    def observe(self, group: str, tp: TopicPartition, committed: int, end: int) -> _State:
        """One probe of ``tp``: the stall clock restarts when the offset moved or nothing waits."""
        now = self.clock()
        st = self._states.get((group, tp))
        if st is None:
            st = self._states[(group, tp)] = _State(committed, now)
        elif committed != st.committed or end <= committed:
            # Keeps ``stuck``: settle() turns it off and says so.
            st.committed, st.since = committed, now
        st.stalled_s = now - st.since
        self._committed.labels(*self._labels(tp)).set(committed)
        self._stalled.labels(*self._labels(tp)).set(st.stalled_s)
        return st

    def is_candidate(self, group: str, tp: TopicPartition) -> bool:
        """Stalled long enough to be stuck, if a readable record really waits (see :meth:`settle`)."""
        st = self._states.get((group, tp))
        return st is not None and st.stalled_s >= self.stuck_after_s

    def settle(self, group: str, tp: TopicPartition, *, waiting: bool | None) -> bool:
        """Decide after a probe; returns whether ``tp`` is stuck.

        ``waiting``: None for a partition that is no candidate, else whether a readable record
        waits at the committed offset (False: only commit markers or aborted records, i.e. caught up,
        and the stall clock restarts).
        """
        st = self._states.get((group, tp))
        if st is None:
            return False
        if waiting is False:
            st.since, st.stalled_s = self.clock(), 0.0
            self._stalled.labels(*self._labels(tp)).set(0)
        was, st.stuck = st.stuck, bool(waiting) and st.stalled_s >= self.stuck_after_s
        self._stuck.labels(*self._labels(tp)).set(1 if st.stuck else 0)
        if st.stuck and not was:
            log.warning(
                "partition stuck: its committed offset has not moved while records wait",
                extra={
                    "group": group,
                    "partition": f"{tp.topic}:{tp.partition}",
                    "committed": st.committed,
                    "stalled_s": round(st.stalled_s, 1),
                },
            )
        elif was and not st.stuck:
            log.info("partition moves again", extra={"group": group, "partition": f"{tp.topic}:{tp.partition}"})
        return st.stuck

    def forget(self) -> None:
        """The probe lost the broker: no clock may run on across the gap (a broker outage is not a stall)."""
        for st in self._states.values():
            st.since = self.clock()

    def stuck(self) -> list[tuple[str, TopicPartition]]:
        """Stuck partitions this process holds (all stuck ones where the assignment is unknown)."""
        out = []
        for (group, tp), st in self._states.items():
            held = ASSIGNED.get(group)
            if st.stuck and (held is None or tp in held):
                out.append((group, tp))
        return out


_TRACKERS: weakref.WeakKeyDictionary[ServiceMetrics, PartitionProgress] = weakref.WeakKeyDictionary()


def progress_of(metrics: ServiceMetrics, stuck_after_s: float | None = None) -> PartitionProgress:
    """The service's tracker (one per metric set, shared by its lag monitors); created on first use."""
    tracker = _TRACKERS.get(metrics)
    if tracker is None:
        tracker = _TRACKERS[metrics] = PartitionProgress(metrics, stuck_after_s or 60.0)
    elif stuck_after_s is not None:
        tracker.stuck_after_s = stuck_after_s
    return tracker


def stuck_partitions(metrics: ServiceMetrics) -> list[str]:
    """``topic:partition`` of every stuck partition this process holds (empty without a lag monitor)."""
    tracker = _TRACKERS.get(metrics)
    return [] if tracker is None else sorted(f"{tp.topic}:{tp.partition}" for _, tp in tracker.stuck())
