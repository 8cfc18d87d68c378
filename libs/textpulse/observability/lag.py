"""Consumer lag probe: end offset − committed offset per topic-partition, refreshed periodically.

Each probe also feeds the group's progress (:mod:`.progress`): committed offset and stall
time per partition, and whether a partition is stuck (``/ready`` then answers 503).

``textpulse_consumer_lag`` of a replica covers only the partitions it holds now (the group's
assignment, :data:`~.progress.ASSIGNED`): every partition is reported by exactly one replica, so
``sum by (service)`` is the group's lag whatever the replica count (when each replica reported
the whole group's lag, the sum was multiplied by it). The lag of a group whose consumers are
down, and its age in seconds, come from the lag exporter (:mod:`.lag_exporter`), which the
recording rules prefer where it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from textpulse.settings import KafkaSettings

from .metrics import ServiceMetrics
from .progress import ASSIGNED, progress_of

log = logging.getLogger(__name__)


async def measure_offsets(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group_id: str, topics: Sequence[str]
) -> dict[TopicPartition, tuple[int, int]]:
    """``(committed, end)`` offsets of ``group_id`` on ``topics`` (partitions without a commit count from 0)."""
    committed = await admin.list_consumer_group_offsets(group_id)
    # Metadata of these topics only: a full metadata fetch parses every topic of the cluster
    # (150 ms of CPU per probe with 3,000 topics), which made the probe most of the metrics overhead.
    described = await admin.describe_topics(list(topics))
    tps = [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if d.get("error_code", 0) == 0
        for p in sorted(d.get("partitions", ()), key=lambda p: p["partition"])
    ]
    if not tps:
        return {}
    ends = await consumer.end_offsets(tps)
    out: dict[TopicPartition, tuple[int, int]] = {}
    for tp in tps:
        meta = committed.get(tp)
        out[tp] = (meta.offset if meta is not None and meta.offset >= 0 else 0, ends[tp])
    return out


async def measure_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group_id: str, topics: Sequence[str]
) -> dict[TopicPartition, int]:
    """Lag of ``group_id`` on ``topics`` (partitions without a commit count from offset 0)."""
    offsets = await measure_offsets(admin, consumer, group_id, topics)
    return {tp: max(0, end - done) for tp, (done, end) in offsets.items()}


async def records_waiting(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int) -> bool:
    """Whether a readable (``read_committed``) record lies in ``[start, end)`` of ``tp``.

    False when the range holds only transaction markers or aborted records: then the group
    is caught up although its lag is not 0. Undecided after a few seconds counts as waiting.
    """
    if tp not in consumer.assignment():
        # Re-assigning logs at INFO (aiokafka): only when the partition is not assigned yet.
        consumer.assign([*consumer.assignment(), tp])
    consumer.seek(tp, start)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while loop.time() < deadline:
        got = await consumer.getmany(tp, timeout_ms=500, max_records=1)
        if got.get(tp):
            return True
        if await consumer.position(tp) >= end:
            return False
    return True


class LagMonitor:
    """Background task publishing ``textpulse_consumer_lag`` and the progress of one consumer group.

    ``stuck_after_s`` (default: ``settings.stuck_after_s``) is how long a partition may stall
    while records wait before it counts as stuck. ``held``: the partitions of the group this
    process holds now (default: its :data:`~.progress.ASSIGNED` entry, kept by the consumers'
    rebalance listener; none before the first assignment); only their lag is exported.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        metrics: ServiceMetrics,
        group_id: str,
        topics: Sequence[str],
        interval_s: float,
        *,
        stuck_after_s: float | None = None,
        held: Callable[[], Collection[TopicPartition]] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.group_id = group_id
        self.topics = list(topics)
        self.interval_s = interval_s
        self.progress = progress_of(metrics, stuck_after_s or settings.stuck_after_s)
        self.held = held or (lambda: ASSIGNED.get(group_id, set()))
        self._exported: set[TopicPartition] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lag-{self.group_id}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def probe(self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """One measurement: lag gauges (held partitions), progress gauges, stuck decisions; returns the group's lag."""
        offsets = await measure_offsets(admin, consumer, self.group_id, self.topics)
        held = set(self.held())
        lag: dict[TopicPartition, int] = {}
        for tp, (done, end) in offsets.items():
            lag[tp] = max(0, end - done)
            if tp in held:
                self.metrics.consumer_lag.labels(*self._labels(tp)).set(lag[tp])
            self.progress.observe(self.group_id, tp, done, end)
        exported = held & offsets.keys()
        for tp in self._exported - exported:
            # Revoked since the last probe: its new owner reports it now.
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(*self._labels(tp))
        self._exported = exported
        for tp, (done, end) in offsets.items():
            waiting = None
            if self.progress.is_candidate(self.group_id, tp):
                waiting = await records_waiting(consumer, tp, done, end)
            self.progress.settle(self.group_id, tp, waiting=waiting)
        return lag

    def _labels(self, tp: TopicPartition) -> tuple[str, str, str]:
        return self.metrics.service, tp.topic, str(tp.partition)

    async def _run(self) -> None:
        from textpulse.settings import client_options

        opts = client_options(self.settings)
        warned = False
        while True:
            admin = AIOKafkaAdminClient(**opts)  # type: ignore[arg-type]
            # read_committed: end offsets are the last stable ones, and the stuck check skips aborted records.
            consumer = AIOKafkaConsumer(**opts, isolation_level="read_committed", enable_auto_commit=False)  # type: ignore[arg-type]
            try:
                await admin.start()
                await consumer.start()
                while True:
                    await self.probe(admin, consumer)
                    await asyncio.sleep(self.interval_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the probe must never take the service down
                if not warned:
                    log.warning("consumer lag probe failed; retrying", extra={"error": repr(exc)})
                    warned = True
                # A broker outage is not a stall of the consumer: no stall clock runs across the gap.
                self.progress.forget()
                await asyncio.sleep(self.interval_s)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await admin.close()
