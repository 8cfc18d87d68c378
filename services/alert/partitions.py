"""Entity state follows the partitions of ``entity.mentions`` across rebalances (as in Kafka Streams).

The changelog is co-partitioned with ``entity.mentions``: an entity key fed from
input partition p writes its changelog records to changelog partition p (the
partition is kept in :attr:`~.engine.KeyState.partition`). :class:`PartitionState`
is the consumer's rebalance listener and keeps the engine in step with the
group's assignment:

- revocation: wait for the batch in flight (``processor.lock``), so its state is
  in the changelog before the group moves the partitions on;
- assignment, under the lock: forget the entity keys of the partitions no longer
  owned (and their watermark sources), make every assigned partition hold the
  watermark until it delivers or shows empty, restore the changelog partitions of the
  newly owned ones (``read_committed``, the newest copy of a key wins), publish
  restored outboxes, refresh the gauges.

The per-key applied offsets travel with the state: records the previous owner
applied but did not commit (revoked or killed between its changelog write and
its offset commit) come again to the new owner, which skips them.

Topic keys (``topic:<label>``, fed from ``text.enriched``, which is not keyed by
topic) are not co-partitioned: they are written by key hash and restored whole
at start-up; topic alerting runs on one replica (README, "Scaling and limits").

Changelog records from before the partition field existed (*legacy*) are also
restored at start-up; their partition is inferred the way every producer of
``entity.mentions`` places the entity key (murmur2 of the key, see the topic
contract), so an assignment drops them where another replica owns them and
rewrites them to their changelog partition where this one does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from textpulse.contracts.alerts import KeyKind
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.kafka.writer import WriteError

from .engine import Engine, KeyState
from .processor import Processor, restore
from .settings import AlertSettings

log = logging.getLogger(__name__)

#: Reads changelog partitions (None: all) into an engine, installing the states a filter accepts.
Reader = Callable[[Engine, Collection[int] | None, Callable[[KeyState], bool]], Awaitable[int]]


class PartitionsMoving(RuntimeError):
    """A batch arrived while the group is rebalancing, or from a partition no longer assigned: not applied."""

    #: Not the records' fault: never counted towards ``retries exhausted``.
    transient = True


def entity_partition(entity_key: str, partitions: Sequence[int]) -> int:
    """The ``entity.mentions`` partition a producer keyed by ``entity_key`` writes to (Kafka's murmur2)."""
    ordered = sorted(partitions)
    return int(DefaultPartitioner()(entity_key.encode(), ordered, ordered))


def startup_state(state: KeyState) -> bool:
    """Restored at start-up: topic keys, and entity keys whose partition is not recorded (legacy)."""
    return state.kind is not KeyKind.ENTITY or state.partition is None


def owned_by(partitions: Collection[int]) -> Callable[[KeyState], bool]:
    """Restored on assignment: entity keys of ``partitions``."""
    return lambda s: s.kind is KeyKind.ENTITY and s.partition is not None and s.partition in partitions


async def partition_counts(settings: AlertSettings) -> dict[str, int]:
    """Partitions of the mentions and changelog topics (0: the topic does not exist)."""
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    try:
        return {t: len(await topic_partitions(consumer, t)) for t in (settings.topic_mentions, settings.topic_state)}
    finally:
        await consumer.stop()


class PartitionState(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Which ``entity.mentions`` partitions this replica owns, and their entity state in the engine."""

    def __init__(self, processor: Processor, settings: AlertSettings, *, reader: Reader | None = None) -> None:
        """``reader`` replaces the changelog reader (tests)."""
        self.processor = processor
        self.topic = settings.topic_mentions
        self._settings = settings
        self._read = reader or self._read_changelog
        #: Every partition of ``entity.mentions`` (set by :meth:`start`).
        self.partitions: list[int] = []
        #: Partitions whose entity state is in the engine.
        self.owned: set[int] = set()
        #: The group's current assignment (every input topic); None while a rebalance runs.
        self.assigned: set[TopicPartition] | None = None

    async def _read_changelog(
        self, engine: Engine, partitions: Collection[int] | None, select: Callable[[KeyState], bool]
    ) -> int:
        s = self._settings
        return await restore(s.kafka, s.topic_state, engine, s.restore_timeout_s, partitions=partitions, select=select)

    def hook(self) -> None:
        """Make the processor check each batch against the assignment and pause its timer while rebalancing."""
        self.processor.before_batch = self.before_batch
        self.processor.may_tick = lambda: self.assigned is not None

    # -- start-up and rebuild ------------------------------------------------------

    async def check_topics(self) -> None:
        """Fail fast unless the changelog has a partition for every ``entity.mentions`` partition."""
        counts = await partition_counts(self._settings)
        mentions, changelog = counts[self.topic], counts[self._settings.topic_state]
        if not mentions:
            msg = f"input topic {self.topic!r} does not exist (create it: textpulse topics create)"
            raise RuntimeError(msg)
        if changelog < mentions:
            msg = (
                f"changelog topic {self._settings.topic_state!r} has {changelog} partitions, fewer than the "
                f"{mentions} of {self.topic!r}: entity state is co-partitioned with its input, so the "
                f"changelog needs at least as many (create it with the same count)"
            )
            raise RuntimeError(msg)
        self.partitions = list(range(mentions))

    async def start(self, engine: Engine) -> int:
        """Start-up: check the topics, restore topic keys and legacy entity keys; returns the records read.

        Entity keys with a recorded partition come with the assignment (:meth:`on_partitions_assigned`).
        """
        await self.check_topics()
        records = await self._read(engine, None, startup_state)
        self.adopt_legacy(engine)
        return records

    def adopt_legacy(self, engine: Engine) -> int:
        """Give legacy entity keys the partition their entity key lands on; returns how many."""
        legacy = [s for s in engine.keys.values() if s.kind is KeyKind.ENTITY and s.partition is None]
        for state in legacy:
            state.partition = entity_partition(state.subject, self.partitions)
        return len(legacy)

    async def rebuild(self, engine: Engine) -> int:
        """Fill a fresh engine with what this replica owns (after an aborted transaction); returns records read."""
        records = await self._read(engine, None, startup_state)
        self.adopt_legacy(engine)
        keep_only(engine, self.owned)
        if self.assigned is not None:
            engine.hold_sources(sources(self.assigned))
        if self.owned:
            records += await self._read(engine, self.owned, owned_by(self.owned))
        return records

    # -- rebalance -------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Let the batch in flight finish, so its state is written before the partitions move."""
        self.assigned = None
        async with self.processor.lock:
            pass
        log.info("alert partitions revoked", extra={"revoked": _names(revoked)})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Drop what left, restore what came (aiokafka only logs a listener's exception: none escapes)."""
        async with self.processor.lock:
            self.assigned = set(assigned)
            mine = {tp.partition for tp in assigned if tp.topic == self.topic}
            lost, new = self.owned - mine, mine - self.owned
            engine = self.processor.engine
            # Not only the lost partitions: legacy keys adopted at start-up may belong to any partition.
            dropped = keep_only(engine, mine)
            self.owned -= lost
            # Input partitions (either topic) read before and not assigned now no longer hold the watermark;
            # the assigned ones hold it from now on, before their first record (a backlog's first fetches
            # may come from a few partitions only: the others' records must not be late by then).
            now = sources(assigned)
            engine.forget_sources([s for s in engine.source_max if s not in now])
            engine.hold_sources(now)
            restored = keys = 0
            if new:
                try:
                    restored, keys = await self._restore(new)
                except Exception:
                    # The partitions stay un-owned: their first batch restores them (before_batch) or fails.
                    log.exception("restoring assigned partitions failed", extra={"partitions": sorted(new)})
                    new = set()
            await self._publish_restored()
            self.processor.refresh_gauges()
            self.processor.metrics.partitions.labels("alert").set(len(self.owned))
        extra = {
            "partitions": sorted(new),
            "released": sorted(lost),
            "owned": sorted(self.owned),
            "records": restored,
            "restored_keys": keys,
            "dropped_keys": dropped,
            "keys": len(engine.keys),
            "open": len(engine.open_alerts()),
        }
        log.info("alert state restored" if new else "alert partitions assigned", extra=extra)

    async def _restore(self, partitions: set[int]) -> tuple[int, int]:
        """Read the changelog partitions ``partitions`` into the engine; (records read, keys restored)."""
        engine = self.processor.engine
        # Entity keys of these partitions already here are legacy ones (adopted at start-up): the
        # changelog partition's copy, if any, is newer; the others are rewritten to their partition.
        legacy = {k: engine.keys[k] for k in engine.partition_keys(partitions)}
        records = await self._read(engine, partitions, owned_by(partitions))
        for key, state in legacy.items():
            if engine.keys.get(key) is state:
                engine.dirty.add(key)
        self.owned |= partitions
        return records, len(engine.partition_keys(partitions))

    async def _publish_restored(self) -> None:
        """Publish outboxes a previous owner decided but did not confirm (nothing new is decided here)."""
        if self.processor.outputs is None:
            return
        try:
            await self.processor.flush(evaluate=False)
        except (WriteError, TimeoutError):
            log.exception("restored outboxes not published; the next batch publishes them")

    # -- per batch -------------------------------------------------------------------

    async def before_batch(self, records: Sequence[Any]) -> None:
        """Under the processor's lock: refuse stale batches, restore partitions whose restore failed.

        A batch polled before a revocation may reach the handler during or after the rebalance:
        it is not applied (the exception makes the consumer rewind; whoever owns the partition
        now processes it).
        """
        tps = {TopicPartition(r.topic, r.partition) for r in records}
        if self.assigned is None or not tps <= self.assigned:
            log.warning("batch from partitions not assigned now; not applied", extra={"partitions": _names(tps)})
            msg = f"partitions {_names(tps)} are being reassigned"
            raise PartitionsMoving(msg)
        missing = {tp.partition for tp in tps if tp.topic == self.topic} - self.owned
        if missing:
            restored, keys = await self._restore(missing)
            self.processor.metrics.partitions.labels("alert").set(len(self.owned))
            log.warning(
                "partition state restored on its first batch",
                extra={"partitions": sorted(missing), "records": restored, "restored_keys": keys},
            )


def keep_only(engine: Engine, partitions: Collection[int]) -> int:
    """Drop the entity keys of every other partition; returns how many were dropped."""
    others = {s.partition for s in engine.keys.values() if s.kind is KeyKind.ENTITY and s.partition is not None}
    return engine.drop_partitions(others - set(partitions))


def sources(tps: Collection[TopicPartition]) -> set[str]:
    """Watermark source names (``topic:partition``, as the processor names them) of partitions."""
    return {f"{tp.topic}:{tp.partition}" for tp in tps}


def _names(tps: Collection[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}:{tp.partition}" for tp in tps)
