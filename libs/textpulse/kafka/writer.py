"""Write many records and wait until the broker acknowledged all of them.

A caller answers its client, or commits its input offsets, only after
:meth:`RecordWriter.write` returned. Two paths, same semantics:

- the fast path groups records by partition (an :class:`OutRecord`'s explicit
  ``partition``, else Kafka's murmur2 partitioner, so keys land where any other
  Kafka client would put them) and hands each
  partition's records to the producer as one batch (``create_batch`` /
  ``send_batch`` of the aiokafka producer that FastStream connected, so the
  idempotent producer id and settings are the broker's own). This saves the
  per-record cost of FastStream's ``publish`` and of aiokafka's ``send``,
  which was most of the Kafka edge's CPU in ``make bench``;
- without a connected aiokafka producer (e.g. under ``TestKafkaBroker``)
  each record goes through the broker's ``publish``. FastStream does not
  expose its producer publicly: if an upgrade moves it, the fallback is loud
  (a WARNING once, and :func:`check_fast_path` fails start-up), never silent.

Inside an exactly-once transaction (:mod:`.transactions`) the fast path runs on
the transaction's producer instead, so the records commit or abort with the
input offsets.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from textpulse.observability import tracing

from .transactions import active_producer

log = logging.getLogger(__name__)


class WriteTimeout(TimeoutError):
    """The acks did not come in time, but the records may still be delivered: they stay queued in the producer.

    ``undecided`` are the delivery futures of the records still queued; they settle (a result or an
    error) when the broker answers or the producer gives up on them. A caller that must not write an
    event twice (ingest's idempotency window) waits for them before letting a retry write it again.
    """

    def __init__(self, topic: str, undecided: Sequence[asyncio.Future[Any]]) -> None:
        super().__init__(f"write to {topic} not acknowledged in time ({len(undecided)} batches still queued)")
        self.undecided = list(undecided)


class WriteError(Exception):
    """The broker did not acknowledge every record in time; nothing can be assumed written.

    Transient (an outage), unless raised from a size or corruption error of one record
    (:func:`~textpulse.kafka.dlq.is_transient` looks at the cause).
    """

    transient = True


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to write.

    ``partition``: write to this partition of the topic (e.g. a changelog co-partitioned with
    its input); None lets the partitioner choose (murmur2 of the key, spread when keyless).
    """

    value: bytes
    key: bytes | None
    headers: dict[str, str]
    partition: int | None = None


PublishFn = Callable[..., Awaitable[Any]]
ProducerGetter = Callable[[], AIOKafkaProducer | None]


#: Where the fast path finds FastStream's aiokafka producer: not public API, pinned by
#: tests/unit/test_package_boundaries.py (it fails when a FastStream upgrade moves it).
PRODUCER_PATH = "broker.config.producer._producer.producer"


class FastPathUnavailable(RuntimeError):
    """A connected FastStream broker whose aiokafka producer is no longer where :data:`PRODUCER_PATH` says."""


_warned_slow_path = False


def _producer_wrapper(broker: Any) -> Any:
    return getattr(getattr(broker, "config", None), "producer", None)


def _under_test(wrapper: Any) -> bool:
    """``TestKafkaBroker``'s in-memory producer: the slow path is the expected one there."""
    from faststream.kafka.testing import FakeProducer

    return isinstance(wrapper, FakeProducer)


def _find_producer(wrapper: Any) -> AIOKafkaProducer | None:
    state = getattr(wrapper, "_producer", None)
    try:
        producer = getattr(state, "producer", None)
    except Exception:  # noqa: BLE001 - FastStream's "not connected" state raises on access
        return None
    return producer if isinstance(producer, AIOKafkaProducer) else None


def _moved(broker: Any) -> bool:
    """Connected to a real broker, yet no aiokafka producer at :data:`PRODUCER_PATH`."""
    wrapper = _producer_wrapper(broker)
    if _under_test(wrapper) or (wrapper is not None and not wrapper):  # fake, or not connected yet
        return False
    return _find_producer(wrapper) is None


def faststream_producer(broker: Any) -> AIOKafkaProducer | None:
    """The aiokafka producer a connected FastStream ``KafkaBroker`` writes with (None when fake).

    None sends :class:`RecordWriter` down the slow path (one ``publish`` per record): expected
    under ``TestKafkaBroker`` and before the broker connects. A connected broker without the
    producer at :data:`PRODUCER_PATH` (FastStream moved it) is never silent: a WARNING, once per
    process, and :func:`check_fast_path` refuses to start.
    """
    global _warned_slow_path  # noqa: PLW0603 - one warning per process, not one per write
    producer = _find_producer(_producer_wrapper(broker))
    if producer is None and not _warned_slow_path and _moved(broker):
        _warned_slow_path = True
        log.warning(
            "FastStream's aiokafka producer is not at %s: every write takes the slow path (one publish per "
            "record, several times the CPU). FastStream's internals moved: update kafka/writer.py",
            PRODUCER_PATH,
            extra={"faststream_producer": type(_producer_wrapper(broker)).__name__},
        )
    return producer


def check_fast_path(broker: Any) -> None:
    """At start-up, once the broker is connected: raise :class:`FastPathUnavailable` if the fast path is gone.

    An explicit error, not a metric: a moved producer is a build defect (a FastStream version the
    pin test did not pass), fixed for the whole life of the process, not an operational state. Refusing
    to start stops a rolling upgrade at its first pod while the old ones keep serving; a metric would
    need its own alert before anyone noticed the CPU cost. No-op under ``TestKafkaBroker``.
    """
    if _moved(broker):
        msg = (
            f"FastStream's aiokafka producer is not at {PRODUCER_PATH} (its wrapper is "
            f"{type(_producer_wrapper(broker)).__name__}): the batched write path cannot run. "
            "FastStream's internals moved; update textpulse/kafka/writer.py (the pin test in "
            "tests/unit/test_package_boundaries.py shows where)"
        )
        raise FastPathUnavailable(msg)


class RecordWriter:
    """Writes batches of records to one topic, all-or-error."""

    def __init__(
        self, publish: PublishFn, topic: str, *, timeout_s: float = 10.0, producer: ProducerGetter | None = None
    ) -> None:
        self._publish = publish
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._next = 0
        self.topic = topic
        self.timeout_s = timeout_s

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Write ``records``; raise :class:`WriteError` unless all were acknowledged."""
        if not records:
            return
        producer = active_producer() or (self._producer() if self._producer else None)
        futures: list[asyncio.Future[Any]] = []
        # Traced: a send span, and each record carries its event's traceparent (as is when off).
        with tracing.publish(self.topic, records) as traced:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if producer is not None:
                        await self._write_batches(producer, traced, futures)
                    else:
                        await self._write_each(traced)
            except TimeoutError as exc:
                # Queued batches are still delivered once the broker is back: say which are undecided.
                raise WriteTimeout(self.topic, [f for f in futures if not f.done()]) from exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                msg = f"write to {self.topic} failed: {exc!r}"
                raise WriteError(msg) from exc

    async def _write_each(self, records: Sequence[OutRecord]) -> None:
        pending = []
        for rec in records:
            # ``partition`` only when chosen: publish functions of other callers need not know it.
            extra = {} if rec.partition is None else {"partition": rec.partition}
            result = await self._publish(
                rec.value, self.topic, key=rec.key, headers=rec.headers, no_confirm=True, **extra
            )
            if inspect.isawaitable(result):
                pending.append(result)
        if pending:
            await asyncio.gather(*pending)

    async def _write_batches(
        self, producer: AIOKafkaProducer, records: Sequence[OutRecord], futures: list[asyncio.Future[Any]]
    ) -> None:
        """Send ``records`` in one batch per partition; ``futures`` collects their delivery futures."""
        partitions = sorted(await producer.partitions_for(self.topic))
        by_partition: dict[int, list[OutRecord]] = defaultdict(list)
        keyless = [rec for rec in records if rec.key is None and rec.partition is None]
        for rec in records:
            if rec.partition is not None:
                if rec.partition not in partitions:
                    msg = f"partition {rec.partition} of {self.topic} does not exist (partitions: {len(partitions)})"
                    raise ValueError(msg)
                by_partition[rec.partition].append(rec)
            elif rec.key is not None:
                by_partition[self._partitioner(rec.key, partitions, partitions)].append(rec)
        if keyless:
            # Keyless records: equal contiguous runs, one batch per partition, starting where the
            # previous write stopped so small writes still spread evenly.
            run = -(-len(keyless) // len(partitions))
            for i in range(0, len(keyless), run):
                self._next = (self._next + 1) % len(partitions)
                by_partition[partitions[self._next]].extend(keyless[i : i + run])
        for part, recs in by_partition.items():
            batch = producer.create_batch()
            for rec in recs:
                headers = [(k, v.encode()) for k, v in rec.headers.items()]
                if batch.append(key=rec.key, value=rec.value, timestamp=None, headers=headers) is None:
                    futures.append(await producer.send_batch(batch, self.topic, partition=part))
                    batch = producer.create_batch()
                    if batch.append(key=rec.key, value=rec.value, timestamp=None, headers=headers) is None:
                        # Larger than a whole batch: the producer's own send handles big records.
                        futures.append(
                            await producer.send(self.topic, rec.value, key=rec.key, partition=part, headers=headers)
                        )
            if batch.record_count():
                futures.append(await producer.send_batch(batch, self.topic, partition=part))
        # Shielded: a time-out must not cancel the delivery futures, which say later whether the records landed.
        await asyncio.gather(*(asyncio.shield(f) for f in futures))
