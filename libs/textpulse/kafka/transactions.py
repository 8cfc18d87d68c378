"""Exactly-once consume → transform → produce with Kafka transactions (Apache Kafka only).

One consumed batch becomes one transaction **per input partition**: the outputs
and dead letters written for that partition's records, and the partition's next
offset (``send_offsets_to_transaction``), are committed atomically, or nothing
is. Readers of the outputs must use ``isolation_level=read_committed``.

Why one transactional id per input partition (``<group>.<topic>.<partition>``)
and not one per instance: aiokafka commits offsets in a transaction with the
pre-KIP-447 protocol, which does not check the consumer-group generation. The
only zombie fencing left is the transactional id itself: whoever owns a
partition now calls ``InitProducerId`` with that partition's id, which bumps
the epoch (a zombie still processing the partition after a rebalance is fenced
on its next write or commit) and aborts any transaction a SIGKILLed predecessor
left open. A per-instance id would fence only a restart of the *same* instance,
not a partition moved to another replica. The cost: one producer (and one
transaction per poll) per assigned input partition, and an inference batch
no larger than one partition's share of a poll.

The handler code does not change: while a transaction is open, the
:class:`~textpulse.kafka.writer.RecordWriter` and
:class:`~textpulse.kafka.dlq.DeadLetters` of the service write through its
producer (:func:`active_producer`).

On any error the transaction is aborted, the partition's producer is dropped
(the next one re-initialises the id, which also cleans up after a broker
restart), every partition of the batch not yet committed is rewound to the
batch start, and the batch is polled and retried as a whole after a backoff.
Before the first transaction on a partition (after an assignment, a restart or
a failure) the position is checked against the committed offset read *after*
the producer's initialisation, so a commit whose answer was lost is never
processed twice. After a failure, or when that offset is behind a commit this process
saw succeed, an aborted transaction without records first closes what a transaction
the broker completed without its markers left open (:meth:`ExactlyOnce._fence_orphans`).
Offsets are never committed outside a transaction in this mode.

Every rebalance counts as an assignment, also one that hands this process the
same partitions again: the consumer resets their fetch positions to the committed
offsets it reads during the rebalance, which can be *before* the transaction of
the batch still being handled commits. Without a re-check the next poll would
re-read that batch and write its outputs a second time
(tests/integration/test_exactly_once_runner.py forces it). So after any assignment
(:data:`~textpulse.observability.progress.ASSIGNMENTS`) the producers of the held
partitions are re-initialised — ``InitProducerId`` waits until the last
transaction is complete, so the committed offset read next includes it — and
each partition is checked again. Waiting for the batch in flight in
``on_partitions_revoked`` would not be enough on its own: ``commit_transaction``
returns once the commit is decided, before its markers (and so the offset commit)
are written, and the offsets fetched right after the join can still be the old
ones; ``InitProducerId`` is the barrier. A partition moved to another member while
a transaction is open is tests/integration/test_exactly_once_rebalance.py.

Writes decided without consuming input (alert's timer, :meth:`ExactlyOnce.run_alone`)
run in a transaction of the producer of the lowest input partition this process
holds, so they are fenced like the rest: whoever holds that partition next
aborts a timer transaction a SIGKILLed predecessor left open, instead of the
open transaction holding every reader's last stable offset back until the
broker's transaction timeout. A process runs one transaction at a time, so a
predecessor's open transaction is always its last one and the committed
records before it are all a restart (restoring state ``read_committed``) sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaProducer, TopicPartition
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from textpulse.contracts.services import consumer_group
from textpulse.observability.logging import configure_logging
from textpulse.observability.progress import ASSIGNMENTS
from textpulse.settings import KafkaSettings, validation_problems

from .admin import client_options
from .broker import batch_records, producer_options

log = logging.getLogger(__name__)

Delivery = Literal["at_least_once", "exactly_once"]
Handle = Callable[[Sequence[Any]], Awaitable[None]]
Work = Callable[[], Awaitable[None]]

_ACTIVE: ContextVar[AIOKafkaProducer | None] = ContextVar("textpulse_txn_producer", default=None)


def active_producer() -> AIOKafkaProducer | None:
    """The producer of the transaction open in this task (None outside exactly-once processing)."""
    return _ACTIVE.get()


def _transaction_manager(producer: AIOKafkaProducer) -> Any:
    # aiokafka 0.14 keeps a transaction's partitions in its transaction manager only;
    # test_transactions.py fails if that changes.
    return getattr(producer, "_txn_manager", None)


def transaction_partitions(producer: AIOKafkaProducer) -> set[TopicPartition]:
    """The partitions the producer's open transaction has written to (added or being added)."""
    manager = _transaction_manager(producer)
    if manager is None:
        return set()
    return set(manager._txn_partitions) | set(manager._pending_txn_partitions)


def add_partitions(producer: AIOKafkaProducer, partitions: set[TopicPartition]) -> None:
    """Put ``partitions`` in the open transaction without writing to them (its end marker reaches them)."""
    manager = _transaction_manager(producer)
    for tp in sorted(partitions):
        manager.maybe_add_partition_to_txn(tp)


def chunks(records: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``records`` in order, at most ``size`` at a time (``size`` < 1: all at once)."""
    if size < 1 or len(records) <= size:
        return [records]
    return [records[i : i + size] for i in range(0, len(records), size)]


def by_partition(records: Sequence[Any]) -> dict[TopicPartition, list[Any]]:
    """Records grouped by input partition, each group in offset order (the poll's order)."""
    out: dict[TopicPartition, list[Any]] = {}
    for rec in records:
        out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
    return out


class AtLeastOnce:
    """The default runner: the handler sees the batch a chunk at a time; FastStream commits after the last.

    Chunks hand work to the next stage sooner: its first input is written after one chunk,
    not after the whole poll (measured on the 2-core bench, a 256-record poll kept NER idle
    for ~1.1 s at the start of a burst). A crash mid-batch redelivers the whole batch, as before.
    """

    delivery: Delivery = "at_least_once"

    def __init__(self, chunk_records: int = 0) -> None:
        self.chunk_records = chunk_records

    async def process(self, msg: Any, handle: Handle) -> None:
        for chunk in chunks(batch_records(msg.raw_message), self.chunk_records):
            await handle(chunk)

    async def run_alone(self, work: Work) -> None:
        """Writes decided without input (e.g. a timer): plain acknowledged writes."""
        await work()

    async def close(self) -> None:
        return None


class ExactlyOnce:
    """Runs each input partition's share of a batch inside its own Kafka transactions.

    A share longer than ``chunk_records`` is split into consecutive transactions, each
    committing the offsets up to its own last record: read_committed readers see the first
    outputs after one chunk, and a failure rewinds only to the failed chunk.
    """

    delivery: Delivery = "exactly_once"

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        group_id: str,
        service: str,
        timeout_s: float = 60.0,
        transaction_timeout_ms: int = 60_000,
        backoff_s: tuple[float, float] = (0.5, 10.0),
        on_abort: Callable[[], Awaitable[None]] | None = None,
        chunk_records: int = 0,
    ) -> None:
        """``on_abort`` rolls back in-memory state (e.g. alert's engine) after an aborted transaction."""
        if settings.flavor != "apache":
            msg = "exactly-once needs Kafka transactions: Apache Kafka only (TEXTPULSE_KAFKA_FLAVOR=apache)"
            raise ValueError(msg)
        self.settings = settings
        self.group_id = group_id
        self.service = service
        self.timeout_s = timeout_s
        self.transaction_timeout_ms = transaction_timeout_ms
        self.backoff_s = backoff_s
        self.on_abort = on_abort
        self.chunk_records = chunk_records
        self.committed_transactions = 0
        self.aborted_transactions = 0
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        # Partitions whose position was checked against the committed offset since their producer started.
        self._verified: set[TopicPartition] = set()
        # Per input partition, since its committed offset was last checked: the output partitions its
        # transactions wrote, the end offset of the last one seen committed, and whether one failed.
        self._unconfirmed: dict[TopicPartition, set[TopicPartition]] = {}
        self._seen_committed: dict[TopicPartition, int] = {}
        self._failed: set[TopicPartition] = set()
        self.fenced_transactions = 0
        self._failures = 0
        self._consumer: Any = None
        # ASSIGNMENTS[group] when the held partitions were last verified (see the module docstring).
        self._assignments_seen = 0
        # One transaction at a time: a timer transaction may share a partition's producer.
        self._lock = asyncio.Lock()
        # Only before this process holds any partition: an id of its own, which nothing fences
        # (a restart starts a new one; Kafka expires unused ids).
        self._own_tp = TopicPartition(f"{service}-alone-{uuid.uuid4().hex[:12]}", 0)

    async def run_alone(self, work: Work) -> None:
        """Run ``work`` (writes decided without consuming input, e.g. a timer) in one transaction.

        No offsets are part of it. On failure the transaction is aborted, ``on_abort`` rolls
        the in-memory state back to the committed one, and the error is raised.
        """
        tp = self._own_tp
        try:
            async with asyncio.timeout(self.timeout_s), self._lock:
                tp = self._alone_partition()
                await self._transaction(tp, work)
        except Exception:
            self.aborted_transactions += 1
            async with self._lock:
                await self._drop(tp)
            if self.on_abort is not None:
                await self.on_abort()
            raise
        self.committed_transactions += 1

    def _alone_partition(self) -> TopicPartition:
        """The partition whose producer runs a transaction without input: the lowest held now.

        The consumer's live assignment, not the last batch's: a partition revoked since would
        re-initialise its id and fence the new owner.
        """
        assigned = self._consumer.assignment() if self._consumer is not None else ()
        return min(assigned, default=self._own_tp)

    def transactional_id(self, tp: TopicPartition) -> str:
        """Stable per input partition, so the next owner of the partition fences the previous one."""
        return f"{self.group_id}.{tp.topic}.{tp.partition}"

    async def _producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._producers.get(tp)
        if producer is None:
            opts = producer_options(self.settings)
            # A transactional producer is idempotent by definition; the rest (acks=all, lz4, linger) stays.
            opts["enable_idempotence"] = True
            producer = AIOKafkaProducer(
                **client_options(self.settings),  # type: ignore[arg-type]
                **opts,
                client_id=f"textpulse-{self.service}-txn",
                transactional_id=self.transactional_id(tp),
                transaction_timeout_ms=self.transaction_timeout_ms,
            )
            try:
                # InitProducerId happens here: it fences older holders of the id and aborts their open transaction.
                await producer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            self._producers[tp] = producer
        return producer

    async def _drop(self, tp: TopicPartition) -> None:
        self._verified.discard(tp)
        producer = self._producers.pop(tp, None)
        if producer is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await producer.stop()

    async def _transaction(
        self, tp: TopicPartition, work: Work, offsets: dict[TopicPartition, int] | None = None
    ) -> None:
        """``work`` and the consumed ``offsets`` (None: none) in one transaction of ``tp``'s producer."""
        producer = await self._producer(tp)
        await producer.begin_transaction()
        token = _ACTIVE.set(producer)
        touched = self._unconfirmed.setdefault(tp, set())
        try:
            try:
                await work()
            finally:
                touched |= transaction_partitions(producer)
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self.group_id)
            await producer.commit_transaction()
            if offsets:
                self._seen_committed[tp] = max(offsets.values())
        except BaseException:
            self._failed.add(tp)
            # Abort explicitly when possible so read_committed readers move on at once; when the producer
            # is broken (fenced, broker gone) dropping it is enough: the next InitProducerId aborts.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await producer.abort_transaction()
            raise
        finally:
            _ACTIVE.reset(token)

    async def process(self, msg: Any, handle: Handle) -> None:
        """Process one polled batch; never raises (a failed batch is rewound and polled again)."""
        consumer = self._consumer = msg.consumer
        groups = by_partition(batch_records(msg.raw_message))
        assigned = set(consumer.assignment())
        rebalanced = ASSIGNMENTS.get(self.group_id, 0) != self._assignments_seen
        async with self._lock:
            self._assignments_seen = ASSIGNMENTS.get(self.group_id, 0)
            for tp in [tp for tp in self._producers if tp != self._own_tp and (rebalanced or tp not in assigned)]:
                # Revoked: its new owner re-initialises the id; ours would only be fenced. Re-assigned
                # after a rebalance: the position may predate our last commit, so verify it again.
                await self._drop(tp)
        pending = [(tp, part) for tp in groups if tp in assigned for part in chunks(groups[tp], self.chunk_records)]
        while pending:
            tp, records = pending[0]
            try:
                async with asyncio.timeout(self.timeout_s), self._lock:
                    # Checked once per producer, as a seek's next batch may start past the committed
                    # offset (a transaction marker there, or aborted records read_committed skips).
                    fresh = tp not in self._verified
                    self._verified.add(tp)
                    if not fresh or await self._at_committed(consumer, tp, records[0].offset):
                        await self._transaction(tp, partial(handle, records), {tp: records[-1].offset + 1})
                        self.committed_transactions += 1
                    else:
                        # Sought to the committed offset: this partition's later chunks come again.
                        pending = [(p, r) for p, r in pending if p != tp]
                        continue
            except Exception as exc:
                self.aborted_transactions += 1
                self._failures += 1
                async with self._lock:
                    await self._drop(tp)
                for p in dict.fromkeys(p for p, _ in pending):
                    # Never run ahead of what is committed; the next poll re-checks the committed offset.
                    first = next(r[0].offset for q, r in pending if q == p)
                    with contextlib.suppress(Exception):
                        consumer.seek(p, first)
                if self.on_abort is not None:
                    await self.on_abort()
                delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** (self._failures - 1))
                log.warning(
                    "transaction aborted; the batch will be polled again",
                    exc_info=exc,
                    extra={"partition": f"{tp.topic}:{tp.partition}", "retry_in_s": delay},
                )
                await asyncio.sleep(delay)
                return
            self._failures = 0
            pending.pop(0)

    async def _at_committed(self, consumer: Any, tp: TopicPartition, first: int) -> bool:
        """Before the first transaction on a partition (after an assignment, a restart or a failure).

        Initialising the partition's producer first waits until a transaction the previous
        holder of the id left behind is completed or aborted, so the committed offset read next
        is final (aiokafka's offset fetch predates KIP-447's ``require_stable``; a coordinator
        still loading after a broker restart is asked again, see :mod:`.offset_fetch`). A batch that
        does not start there (a commit whose answer was lost, a stale position) is not
        processed: the partition is sought to the committed offset and polled again.
        """
        await self._producer(tp)
        committed = await consumer.committed(tp)
        await self._fence_orphans(tp, committed)
        if committed is None or committed == first:
            return True
        consumer.seek(tp, committed)
        log.info(
            "position moved to the committed offset before processing",
            extra={"partition": f"{tp.topic}:{tp.partition}", "batch_start": first, "committed": committed},
        )
        return False

    async def _fence_orphans(self, tp: TopicPartition, committed: int | None) -> None:
        """Abort what a lost transaction marker left open on the output partitions of ``tp``'s transactions.

        A broker that restarts while a transaction is between PrepareCommit and its markers may
        complete the transaction *without writing the markers*: its transaction coordinator,
        before its metadata names the partitions' leaders, logs "Couldn't find leader endpoint
        … likely deleted already and hence can be skipped" (Kafka 4.4; KAFKA-5202's rule for
        deleted topics). The records stay open on each partition until the producer id's next
        marker there decides them, and the transaction's offsets never reach
        ``__consumer_offsets``: the batch is processed again, and the next COMMIT of the same id
        would make the first copies visible as well (``test_exactly_once_broker_restart.py``
        found 10 such duplicates in the queues, the broker log naming the skipped partitions).

        So after a failure on ``tp``, or when its committed offset is behind a commit this
        process saw succeed, a transaction of the new epoch adds every output partition written
        since the offset was last checked (and the group's offsets) and is *aborted*, with no
        record: the ABORT markers close whatever the lost transaction left open. Nothing
        committed is aborted — with the markers lost, the offsets were lost too and the batch
        is written again — and readers see no record at all (markers are control batches).
        """
        touched = self._unconfirmed.get(tp, set())
        seen = self._seen_committed.get(tp)
        lost = seen is not None and (committed is None or committed < seen)
        if touched and (lost or tp in self._failed):
            producer = await self._producer(tp)
            # Only partitions that exist now: aiokafka retries adding a deleted one for ever.
            cluster = await producer.client.fetch_all_metadata()
            touched = {out for out in touched if out.partition in (cluster.partitions_for_topic(out.topic) or ())}
            await producer.begin_transaction()
            try:
                add_partitions(producer, touched)
                if committed is not None:
                    # A lost transaction's pending offsets on __consumer_offsets are closed the same way.
                    await producer.send_offsets_to_transaction({tp: committed}, self.group_id)
            finally:
                # aiokafka adds the partitions before it ends the transaction, so each gets the marker.
                await producer.abort_transaction()
            self.fenced_transactions += 1
            log.warning(
                "closed what a failed or lost transaction may have left open on %d output partitions",
                len(touched),
                extra={"partition": f"{tp.topic}:{tp.partition}", "committed": committed, "seen_committed": seen},
            )
        self._unconfirmed.pop(tp, None)
        self._failed.discard(tp)

    async def close(self) -> None:
        """Stop every producer (an open transaction is aborted by the next owner's InitProducerId)."""
        async with self._lock:
            for tp in list(self._producers):
                await self._drop(tp)


BatchRunner = AtLeastOnce | ExactlyOnce


def batch_runner(
    settings: Any,
    *,
    service: str,
    group_id: str | None = None,
    on_abort: Callable[[], Awaitable[None]] | None = None,
) -> BatchRunner:
    """The runner for ``settings.delivery`` (a :class:`~textpulse.settings.ServiceSettings`)."""
    chunk = int(getattr(settings, "chunk_records", 0))
    if getattr(settings, "delivery", "at_least_once") != "exactly_once":
        return AtLeastOnce(chunk)
    return ExactlyOnce(
        settings.kafka,
        group_id=group_id or consumer_group(service, settings.group_id),
        service=service,
        on_abort=on_abort,
        chunk_records=chunk,
    )


S = TypeVar("S", bound=BaseSettings)


def settings_or_exit(cls: type[S], service: str) -> S:
    """The service's settings, or exit with status 2 and the reason logged (no traceback).

    Invalid settings (e.g. ``delivery=exactly_once`` on the Tansu broker, which has no
    transactions) must stop a service before it connects, with the message an operator
    can act on.
    """
    try:
        return cls()
    except ValidationError as exc:
        configure_logging(service, "INFO", json=os.environ.get(f"TEXTPULSE_{service.upper()}_LOG_JSON") != "false")
        reasons = validation_problems(exc, root="settings")
        log.critical("invalid %s settings, refusing to start: %s", service, reasons)
        raise SystemExit(2) from None
