"""Replay a labelled data set file into the platform at a steady rate.

Events go to the ingest HTTP batch endpoint (default) or straight to the
``text.in`` topic, each with a stable id derived from the data set row, so a
replay repeated is de-duplicated rather than doubled. The label, when the file
has one, travels in ``metadata.label`` for later evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from textpulse.datasets import detect_dataset, load_text_examples, load_token_examples, resolve_path
from textpulse.datasets.labels import TOKEN_DATASETS
from textpulse.kafka.admin import client_options
from textpulse.kafka.broker import producer_options
from textpulse.settings import KafkaSettings

log = logging.getLogger(__name__)
_UNSAFE_ID = re.compile(r"[^\x21-\x7E]")


@dataclass
class ReplayStats:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class Retryable(Exception):
    """The ingest service asked us to come back later (503/429) or was unreachable."""


def build_events(
    path: Path | str,
    *,
    channel: str,
    source: str | None = None,
    dataset: str | None = None,
    limit: int | None = None,
    spread: timedelta | None = None,
    start: datetime | None = None,
) -> list[dict[str, Any]]:
    """Events (as JSON-ready dicts) from a data set file; event times spread over ``spread``."""
    resolved = resolve_path(path)
    name = (dataset or detect_dataset(resolved)).split(":")[0]
    rows: list[tuple[str, str, str | None]]
    if name in TOKEN_DATASETS:
        rows = [(t.id, t.text(), None) for t in load_token_examples(resolved, dataset)]
    else:
        rows = [(t.id, t.text, t.label) for t in load_text_examples(resolved, dataset)]
    if limit is not None:
        rows = rows[:limit]
    start = start or datetime.now(UTC)
    step = (spread / max(1, len(rows))) if spread else timedelta(0)
    events = []
    for i, (row_id, text, label) in enumerate(rows):
        metadata: dict[str, Any] = {"dataset": name}
        if label is not None:
            metadata["label"] = label
        events.append(
            {
                "id": _UNSAFE_ID.sub("_", f"replay:{row_id}")[:128],
                "source": source or f"replay:{name}",
                "channel": channel,
                "text": text,
                "event_time": (start + i * step).isoformat(),
                "metadata": metadata,
            }
        )
    return events


def _chunks(items: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _post_batch(client: httpx.AsyncClient, url: str, batch: Sequence[dict[str, Any]], stats: ReplayStats) -> None:
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(30),
        wait=wait_exponential(multiplier=0.2, max=10),
        retry=retry_if_exception_type(Retryable),
        reraise=True,
    ):
        with attempt:
            if attempt.retry_state.attempt_number > 1:
                stats.retries += 1
            try:
                resp = await client.post(url, content=orjson.dumps(batch), headers={"content-type": "application/json"})
            except httpx.TransportError as exc:
                raise Retryable(repr(exc)) from exc
            if resp.status_code in {HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE}:
                raise Retryable(f"{resp.status_code}")
            if resp.status_code == HTTPStatus.ACCEPTED:
                body = resp.json()
                stats.accepted += body["accepted"]
                stats.duplicates += body["duplicates"]
            else:
                stats.rejected += len(batch)
                stats.errors.append(f"{resp.status_code}: {resp.text[:300]}")


async def replay(
    events: Sequence[dict[str, Any]],
    *,
    target: Literal["http", "kafka"] = "http",
    url: str = "http://127.0.0.1:8080",
    kafka: KafkaSettings | None = None,
    topic: str = "text.in",
    rate: float = 200.0,
    batch_size: int = 100,
    progress: bool = True,
) -> ReplayStats:
    """Send ``events`` at ``rate`` events/s (0 = as fast as possible)."""
    stats = ReplayStats()
    batch_size = max(1, min(batch_size, int(rate / 5) or 1)) if rate > 0 else batch_size
    columns = (
        TextColumn("[bold]replay[/]"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} events"),
        TextColumn("{task.fields[rate]:>8.0f} ev/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    producer: AIOKafkaProducer | None = None
    client: httpx.AsyncClient | None = None
    if target == "kafka":
        settings = kafka or KafkaSettings()
        producer = AIOKafkaProducer(**client_options(settings), **producer_options(settings))  # type: ignore[arg-type]
        await producer.start()
    else:
        client = httpx.AsyncClient(timeout=30.0)
    started = time.perf_counter()
    try:
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("replay", total=len(events), rate=0.0)
            for batch in _chunks(events, batch_size):
                if producer is not None:
                    futures = [await producer.send(topic, orjson.dumps(e), key=e["id"].encode()) for e in batch]
                    await asyncio.gather(*futures)
                    stats.accepted += len(batch)
                else:
                    assert client is not None
                    await _post_batch(client, f"{url.rstrip('/')}/v1/events/batch", batch, stats)
                stats.sent += len(batch)
                elapsed = time.perf_counter() - started
                if rate > 0:
                    ahead = stats.sent / rate - elapsed
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                bar.update(task, advance=len(batch), rate=stats.sent / max(1e-9, time.perf_counter() - started))
    finally:
        stats.seconds = time.perf_counter() - started
        if producer is not None:
            await producer.stop()
        if client is not None:
            await client.aclose()
    return stats
