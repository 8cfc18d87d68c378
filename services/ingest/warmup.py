"""Rebuild the idempotency window from the tail of ``text.raw`` at start-up."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.settings import KafkaSettings

from .core import H_EVENT_ID
from .dedup import IdempotencyStore

log = logging.getLogger(__name__)


async def warm_up(
    settings: KafkaSettings, topic: str, store: IdempotencyStore, *, per_partition: int, timeout_s: float = 60.0
) -> int:
    """Read the last ``per_partition`` records of each partition; remember their event ids."""
    if per_partition <= 0:
        return 0
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    loaded = 0
    try:
        tps = await topic_partitions(consumer, topic)
        if not tps:
            return 0
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > begins[tp]}
        for tp in todo:
            consumer.seek(tp, max(begins[tp], ends[tp] - per_partition))
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                store.add_many(v.decode() for r in records for k, v in (r.headers or ()) if k == H_EVENT_ID)
                loaded += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            await asyncio.sleep(0)
        if todo:
            log.warning("idempotency warm-up stopped at its time limit", extra={"records": loaded})
    finally:
        await consumer.stop()
    log.info("idempotency window warmed up", extra={"records": loaded, "ids": len(store)})
    return loaded
