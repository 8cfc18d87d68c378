"""Lag measured once, against the real Apache Kafka (issue #23, "lag from one place").

One consumer group with two members (two replicas of a service) on a 4-partition topic of its
own, each member committing offset 4 of the 10 records of every partition it holds: the group's
lag is 24 records (a second group, of index, without members, committed at offset 8: 8 records).
The lag exporter (:mod:`textpulse.observability.lag_exporter`) reports 24, not 48, and 2 members;
the replicas' own ``textpulse_consumer_lag`` (each only for the partitions it holds) also sums to
24. With both members stopped the exporter still reports 24 records, 0 members, and an age in
seconds that grows with the clock; its HTTP ``/metrics`` (prometheus_client's server, as
``textpulse lag-exporter`` serves it) says the same while no consumer runs. Own topic and
groups, deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.protocol.admin import DeleteGroupsRequest
from prometheus_client import CollectorRegistry, start_http_server
from textpulse.kafka.admin import client_options
from textpulse.observability.lag import LagMonitor
from textpulse.observability.lag_exporter import LagExporter
from textpulse.observability.metrics import ServiceMetrics
from textpulse.settings import KafkaSettings

from tests.conftest import TEST_TOPICS
from tests.support.servers import free_ports

pytestmark = [pytest.mark.kafka]

PARTITIONS = 4
PER_PARTITION = 10
COMMITTED = 4
EXPECTED = PARTITIONS * (PER_PARTITION - COMMITTED)
OTHER_COMMITTED = 8
OTHER_EXPECTED = PARTITIONS * (PER_PARTITION - OTHER_COMMITTED)


@pytest.fixture
async def world(kafka_settings: KafkaSettings) -> AsyncIterator[tuple[str, str, str]]:
    """(topic, group prefix, group): a topic with records and a group name, both deleted afterwards."""
    tag = uuid.uuid4().hex[:8]
    prefix = TEST_TOPICS.track(f"t.lag-exporter-{tag}.")
    topic = f"{prefix}text.raw"
    group_prefix = f"lagtest-{tag}-"
    group = f"{group_prefix}classify"
    opts = client_options(kafka_settings)
    admin = AIOKafkaAdminClient(**opts)  # type: ignore[arg-type]
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        producer = AIOKafkaProducer(**opts)  # type: ignore[arg-type]
        await producer.start()
        try:
            for p in range(PARTITIONS):
                for i in range(PER_PARTITION):
                    await producer.send(topic, f"r{p}-{i}".encode(), partition=p)
            await producer.flush()
        finally:
            await producer.stop()
        yield topic, group_prefix, group
    finally:
        with contextlib.suppress(Exception):
            for name in (group, f"{group_prefix}index-routes"):
                coordinator = await admin.find_coordinator(name)
                await admin._send_request(DeleteGroupsRequest([name]), coordinator)
        await admin.close()
        await TEST_TOPICS.cleanup(kafka_settings, [prefix])


async def join(settings: KafkaSettings, topic: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),  # type: ignore[arg-type]
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10_000,
        heartbeat_interval_ms=1_000,
    )
    await consumer.start()
    return consumer


async def commit_as(settings: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` without joining it (manual assignment)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def until_split(consumers: list[AIOKafkaConsumer], timeout_s: float = 30.0) -> None:
    """Poll until the group's 4 partitions are split over both members (the second join rebalances)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.gather(*(c.getmany(timeout_ms=200) for c in consumers))
        held = [c.assignment() for c in consumers]
        if all(held) and sum(len(h) for h in held) == PARTITIONS:
            return
    pytest.fail(f"group did not settle on 2 members: {[c.assignment() for c in consumers]}")


def samples(registry: CollectorRegistry, name: str, **match: str) -> list[float]:
    return [
        s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
    ]


async def served_page_says_the_same(settings: KafkaSettings, group_prefix: str, group: str) -> None:
    """The exporter as deployed: its own loop and /metrics, while the group has no member."""
    port = free_ports(1)[0]
    served = LagExporter(settings, prefix=group_prefix, interval_s=0.5)
    server, thread = start_http_server(port, addr="127.0.0.1", registry=served.registry)
    task = asyncio.create_task(served.run())
    try:
        page = ""
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "textpulse_consumer_group_lag{" not in page:
                await asyncio.sleep(0.3)
                page = (await http.get("/metrics")).text
        lines = [
            ln
            for ln in page.splitlines()
            if ln.startswith("textpulse_consumer_group_lag{") and f'group="{group}"' in ln
        ]
        assert len(lines) == PARTITIONS, page
        assert sum(float(ln.rsplit(" ", 1)[1]) for ln in lines) == EXPECTED
        assert all('service="classify"' in ln for ln in lines)
        assert "textpulse_lag_exporter_last_success_timestamp_seconds" in page
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        server.shutdown()
        thread.join(timeout=5)


@pytest.mark.timeout(90)
async def test_two_replicas_one_lag_that_survives_the_consumers(
    kafka_settings: KafkaSettings, world: tuple[str, str, str]
) -> None:
    topic, group_prefix, group = world
    opts = client_options(kafka_settings)
    admin = AIOKafkaAdminClient(**opts)  # type: ignore[arg-type]
    reader = AIOKafkaConsumer(**opts, isolation_level="read_committed", enable_auto_commit=False)  # type: ignore[arg-type]
    await admin.start()
    await reader.start()
    replicas = [await join(kafka_settings, topic, group), await join(kafka_settings, topic, group)]
    try:
        await until_split(replicas)
        for consumer in replicas:
            await consumer.commit(dict.fromkeys(consumer.assignment(), COMMITTED))
        # A second group of another service on the same partitions (several groups: one DescribeGroups
        # each, and two committed offsets per partition to read timestamps at).
        other = f"{group_prefix}index-routes"
        await commit_as(kafka_settings, other, {TopicPartition(topic, p): OTHER_COMMITTED for p in range(PARTITIONS)})

        # Each replica's own probe exports only the partitions it holds: the sum is the group's lag.
        replica_metrics = [ServiceMetrics("classify", enabled=True) for _ in replicas]
        for consumer, metrics in zip(replicas, replica_metrics, strict=True):
            monitor = LagMonitor(kafka_settings, metrics, group, [topic], 3600, held=consumer.assignment)
            await monitor.probe(admin, reader)
        per_replica = [sum(samples(m.registry, "textpulse_consumer_lag", topic=topic)) for m in replica_metrics]
        assert per_replica == [EXPECTED / 2, EXPECTED / 2]

        exporter = LagExporter(kafka_settings, prefix=group_prefix, interval_s=0.5)
        measured = await exporter.probe(admin, reader)
        assert {(m.group, m.service) for m in measured} == {(group, "classify"), (other, "index")}
        assert sum(m.records for m in measured if m.group == group) == EXPECTED
        assert sum(samples(exporter.registry, "textpulse_consumer_group_lag", group=group)) == EXPECTED
        assert sum(samples(exporter.registry, "textpulse_consumer_group_lag", group=other)) == OTHER_EXPECTED
        assert samples(exporter.registry, "textpulse_consumer_group_members", group=group) == [2.0]
        assert samples(exporter.registry, "textpulse_consumer_group_members", group=other) == [0.0]
        assert all(m.oldest_ms is not None for m in measured), "the oldest unconsumed record of every partition"
    finally:
        for consumer in replicas:
            await consumer.stop()

    try:
        # No consumer runs: the lag is still there, and its age grows with the clock.
        first = await exporter.probe(admin, reader)
        ages = samples(exporter.registry, "textpulse_consumer_group_lag_seconds", group=group)
        await asyncio.sleep(1.5)
        second = await exporter.probe(admin, reader)
        later = samples(exporter.registry, "textpulse_consumer_group_lag_seconds", group=group)
        assert sum(m.records for m in first if m.group == group) == EXPECTED
        assert sum(m.records for m in second if m.group == group) == EXPECTED
        assert samples(exporter.registry, "textpulse_consumer_group_members", group=group) == [0.0]
        assert len(ages) == len(later) == PARTITIONS
        assert min(ages) > 0
        assert all(b - a >= 1.0 for a, b in zip(sorted(ages), sorted(later), strict=True)), (ages, later)

        await served_page_says_the_same(kafka_settings, group_prefix, group)
    finally:
        await reader.stop()
        await admin.close()
