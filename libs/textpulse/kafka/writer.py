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
  each record goes through the broker's ``publish``.

Inside an exactly-once transaction (:mod:`.transactions`) the fast path runs on
the transaction's producer instead, so the records commit or abort with the
input offsets.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from textpulse.observability import tracing

from .transactions import active_producer


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


def faststream_producer(broker: Any) -> AIOKafkaProducer | None:
    """The aiokafka producer a connected FastStream ``KafkaBroker`` writes with (None when fake)."""
    state = getattr(getattr(broker.config, "producer", None), "_producer", None)
    producer = getattr(state, "producer", None)
    return producer if isinstance(producer, AIOKafkaProducer) else None


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
        # Traced: a send span, and each record carries its event's traceparent (as is when off).
        with tracing.publish(self.topic, records) as traced:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if producer is not None:
                        await self._write_batches(producer, traced)
                    else:
                        await self._write_each(traced)
            except (TimeoutError, asyncio.CancelledError):
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

    async def _write_batches(self, producer: AIOKafkaProducer, records: Sequence[OutRecord]) -> None:
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
        futures: list[asyncio.Future[Any]] = []
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
        await asyncio.gather(*futures)
