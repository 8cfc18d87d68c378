"""Test helpers: run an app's lifespan in-process, read whole topics back (ports, tritonserver: tests.support)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiokafka import ConsumerRecord
from textpulse.kafka.read import read_to_end as read_topics_to_end
from textpulse.kafka.read import read_until
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
    return await read_until(settings, topic, expect=expect, timeout_s=timeout_s, idle_s=idle_s)


async def read_to_end(
    settings: KafkaSettings, topic: str, *, isolation: str = "read_uncommitted"
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` up to its end offsets now, read with ``isolation``.

    Unlike :func:`read_all` it does not wait for more: for topics whose writers are done
    (a committed transaction's records are then all below the end offsets).
    """
    return (await read_topics_to_end(settings, topic, isolation=isolation))[topic]


def headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def route_env(
    kafka: KafkaSettings, names: dict[str, str], prefix: str, *, delivery: str, **overrides: str
) -> dict[str, str]:
    """Environment of a route process on the test topics ``names`` (``overrides``: more or other variables)."""
    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    env.update(
        PYTHONPATH=f"{repo / 'libs'}:{repo}",
        TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        TEXTPULSE_KAFKA_FLAVOR="apache",
        TEXTPULSE_ROUTE_DELIVERY=delivery,
        TEXTPULSE_ROUTE_TOPIC_IN=names["text.enriched"],
        TEXTPULSE_ROUTE_TOPIC_OUT=names["support.routed"],
        TEXTPULSE_ROUTE_TOPIC_DLQ=names["dlq.route"],
        TEXTPULSE_ROUTE_QUEUE_TOPIC_PREFIX=f"{prefix}support.queue.",
        TEXTPULSE_ROUTE_GROUP_ID=f"{prefix}route",
        TEXTPULSE_ROUTE_KAFKA_BATCH_TIMEOUT_MS="20",
        TEXTPULSE_ROUTE_HTTP_PORT="0",
        **overrides,
    )
    return env


def start_service(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A service process (``python -m services.<name>.app``) with ``env``, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}.app"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def start_route(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A route process with ``env`` (:func:`start_service`)."""
    return start_service("route", env, log)
