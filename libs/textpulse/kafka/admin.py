"""Topic administration and broker readiness, on either broker flavour."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from textpulse.contracts.topics import ALL_TOPICS, TopicSpec
from textpulse.settings import KafkaSettings

# Defined beside KafkaSettings (observability needs it without importing kafka); kept importable
# from here, where every client of the library looks for it (explicit re-export for mypy --strict).
from textpulse.settings import client_options as client_options  # noqa: PLC0414

log = logging.getLogger(__name__)


async def wait_for_broker(settings: KafkaSettings, timeout_s: float = 60.0) -> None:
    """Block until the broker answers a metadata request, or raise TimeoutError (with the last error)."""

    async def probe() -> None:
        consumer = AIOKafkaConsumer(**client_options(settings))  # type: ignore[arg-type]
        try:
            await consumer.start()
            await consumer.topics()
        finally:
            await consumer.stop()

    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_delay(timeout_s), wait=wait_fixed(0.5), retry=retry_if_exception_type((KafkaError, OSError))
        ):
            with attempt:
                await probe()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        msg = f"Kafka at {settings.bootstrap_servers} did not answer within {timeout_s:.0f}s: {last!r}"
        raise TimeoutError(msg) from last


async def broker_default_replication(admin: AIOKafkaAdminClient) -> int:
    """The replication factor the broker gives a topic created without one (``default.replication.factor``).

    A single-broker cluster can only hold one replica, so it is not asked. aiokafka's
    CreateTopics (v3 at most) cannot send -1 ("the broker's default", KIP-464, v4+),
    hence the DescribeConfigs round trip on a larger cluster.
    """
    cluster = await admin.describe_cluster()
    brokers = cluster["brokers"]
    if len(brokers) == 1:
        return 1
    broker = str(cluster["controller_id"] if cluster["controller_id"] >= 0 else brokers[0]["node_id"])
    [response] = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, broker, {"default.replication.factor": None})]
    )
    for resource in response.to_object()["resources"]:
        for entry in resource["config_entries"]:
            if entry["config_names"] == "default.replication.factor":
                return int(entry["config_value"])
    msg = f"broker {broker} did not report default.replication.factor"
    raise KafkaError(msg)


async def create_topics(
    settings: KafkaSettings,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
    *,
    rename: dict[str, str] | None = None,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
) -> list[str]:
    """Create the declared topics that do not exist yet; returns the names created.

    ``rename`` maps declared names to other names (tests run on topics of their own).
    ``replication_factor`` None takes the broker's ``default.replication.factor``;
    ``min_insync_replicas`` None leaves the topic on the broker's ``min.insync.replicas``.
    Existing topics are left as they are (neither setting is changed on them). A topic
    the broker refuses (e.g. more replicas than brokers) raises :class:`KafkaError`.
    """
    if replication_factor is not None and replication_factor < 1:
        msg = f"replication_factor must be at least 1, got {replication_factor}"
        raise ValueError(msg)
    if min_insync_replicas is not None:
        if min_insync_replicas < 1:
            msg = f"min_insync_replicas must be at least 1, got {min_insync_replicas}"
            raise ValueError(msg)
        if replication_factor is not None and min_insync_replicas > replication_factor:
            # Every acks=all write (the services' idempotent producers) would then fail.
            msg = f"min_insync_replicas={min_insync_replicas} is above replication_factor={replication_factor}"
            raise ValueError(msg)
    specs = list(specs)
    names = [(rename or {}).get(s.name, s.name) for s in specs]
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        todo_specs = [(name, s) for name, s in zip(names, specs, strict=True) if name not in existing]
        if todo_specs:
            replicas = replication_factor or await broker_default_replication(admin)
            if min_insync_replicas is not None and min_insync_replicas > replicas:
                msg = f"min_insync_replicas={min_insync_replicas} is above the broker's replication factor {replicas}"
                raise ValueError(msg)
            extra = {} if min_insync_replicas is None else {"min.insync.replicas": str(min_insync_replicas)}
            todo = [
                NewTopic(
                    name,
                    num_partitions=s.partitions,
                    replication_factor=replicas,
                    topic_configs={**s.topic_configs(), **extra},
                )
                for name, s in todo_specs
            ]
            response = await admin.create_topics(todo)
            # aiokafka returns per-topic errors instead of raising them.
            failed = {
                topic: f"{for_code(code).__name__}: {rest[0] if rest and rest[0] else ''}".rstrip(": ")
                for topic, code, *rest in response.topic_errors
                if code not in (0, TopicAlreadyExistsError.errno)  # created concurrently: fine
            }
            if failed:
                msg = f"could not create {len(failed)} topic(s) with replication factor {replicas}: {failed}"
                raise KafkaError(msg)
    finally:
        await admin.close()
    await wait_for_leaders(settings, names)
    return [name for name, _ in todo_specs]


async def list_topics(settings: KafkaSettings, prefix: str = "") -> list[str]:
    """The topics on the broker whose name starts with ``prefix``, sorted; internal ``__*`` topics left out."""
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    return sorted(n for n in names if n.startswith(prefix) and not n.startswith("__"))


async def delete_topics(
    settings: KafkaSettings, names: Iterable[str], *, timeout_s: float = 30.0, batch: int = 100
) -> list[str]:
    """Delete ``names``; returns the names the broker deleted.

    A topic that is already gone is not an error (two cleanups may race); any other
    per-topic error raises :class:`KafkaError` after every batch was tried.
    ``batch`` bounds one request: the broker answers a DeleteTopics request only
    once every topic in it is gone, and a few hundred at once can outlast ``timeout_s``.
    """
    todo = list(dict.fromkeys(names))
    if not todo:
        return []
    deleted: list[str] = []
    failed: dict[str, str] = {}
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        for i in range(0, len(todo), batch):
            response = await admin.delete_topics(todo[i : i + batch], timeout_ms=int(timeout_s * 1000))
            for topic, code in response.topic_error_codes:
                if code == 0:
                    deleted.append(topic)
                elif code != UnknownTopicOrPartitionError.errno:
                    failed[topic] = for_code(code).__name__
    finally:
        await admin.close()
    if failed:
        msg = f"could not delete {len(failed)} topic(s): {dict(list(failed.items())[:5])}"
        raise KafkaError(msg)
    return deleted


async def wait_for_leaders(settings: KafkaSettings, topics: Iterable[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of ``topics`` has a leader (a new topic has none for a moment)."""
    names = list(topics)
    consumer = AIOKafkaConsumer(**client_options(settings))  # type: ignore[arg-type]
    await consumer.start()

    async def leaderless() -> list[str]:
        await consumer._client.force_metadata_update()
        cluster = consumer._client.cluster
        return [
            t
            for t in names
            if not cluster.partitions_for_topic(t)
            or any(
                cluster.leader_for_partition(TopicPartition(t, p)) in (None, -1)
                for p in cluster.partitions_for_topic(t) or ()
            )
        ]

    try:
        # Polled until none is pending; metadata errors are not retried (as before: they propagate).
        await AsyncRetrying(
            stop=stop_after_delay(timeout_s), wait=wait_fixed(0.2), retry=retry_if_result(bool), reraise=True
        )(leaderless)
    except RetryError as exc:
        msg = f"topics without leaders after {timeout_s}s: {exc.last_attempt.result()[:5]}"
        raise TimeoutError(msg) from None
    finally:
        await consumer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """All partitions of ``topics`` from fresh cluster metadata.

    ``AIOKafkaConsumer.partitions_for_topic`` only knows topics the consumer
    subscribed to, so an assign-based reader would silently see none.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]


async def end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    """High-water mark per partition of ``topic``."""
    consumer = AIOKafkaConsumer(**client_options(settings))  # type: ignore[arg-type]
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        offsets = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in offsets.items()}
    finally:
        await consumer.stop()
