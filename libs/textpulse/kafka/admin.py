"""Topic administration and broker readiness, on either broker flavour."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from textpulse.contracts.topics import ALL_TOPICS, TopicSpec
from textpulse.settings import KafkaSettings

from .broker import ssl_context

log = logging.getLogger(__name__)


def client_options(settings: KafkaSettings) -> dict[str, object]:
    """Connection options for raw aiokafka clients (admin, lag probe, replay readers)."""
    opts: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    return opts


async def wait_for_broker(settings: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Block until the broker answers a metadata request, or raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        consumer = AIOKafkaConsumer(**client_options(settings))  # type: ignore[arg-type]
        try:
            await consumer.start()
            await consumer.topics()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await consumer.stop()
    msg = f"Kafka at {settings.bootstrap_servers} did not answer within {timeout_s:.0f}s: {last!r}"
    raise TimeoutError(msg)


async def create_topics(
    settings: KafkaSettings, specs: Iterable[TopicSpec] = ALL_TOPICS, *, rename: dict[str, str] | None = None
) -> list[str]:
    """Create the declared topics that do not exist yet; returns the names created.

    ``rename`` maps declared names to other names (tests run on topics of their own).
    """
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                (rename or {}).get(s.name, s.name),
                num_partitions=s.partitions,
                replication_factor=1,
                topic_configs=s.topic_configs(),
            )
            for s in specs
        ]
        todo = [t for t in wanted if t.name not in existing]
        if todo:
            try:
                await admin.create_topics(todo)
            except TopicAlreadyExistsError:
                log.info("some topics were created concurrently")
        return [t.name for t in todo]
    finally:
        await admin.close()


async def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """High-water mark per partition of ``topic``."""
    consumer = AIOKafkaConsumer(**client_options(settings))  # type: ignore[arg-type]
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer.topics()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in offsets.items()}
    finally:
        await consumer.stop()
