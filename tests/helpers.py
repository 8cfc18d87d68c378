"""Test helpers: run an app's lifespan in-process, read whole topics back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.settings import KafkaSettings


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``app``'s lifespan and yield an HTTP client bound to it (no sockets)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest.test") as client:
            yield client


async def read_all(
    settings: KafkaSettings, topic: str, *, expect: int | None = None, timeout_s: float = 30.0, idle_s: float = 1.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the beginning; waits for ``expect`` records (then ``idle_s`` more)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        tps: list[TopicPartition] = []
        while not tps and time.monotonic() < deadline:
            tps = await topic_partitions(consumer, topic)
            if not tps:
                await asyncio.sleep(0.2)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(records)
                last_new = time.monotonic()
            enough = expect is None or len(out) >= expect
            if enough and time.monotonic() - last_new >= idle_s:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}
