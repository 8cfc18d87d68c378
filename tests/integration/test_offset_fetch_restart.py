"""Right after a broker restart, a committed offset is read as itself, never as "nothing committed".

While a restarted Apache Kafka becomes the group coordinator and loads ``__consumer_offsets``
it answers OffsetFetch (v2+) with a group-level ``NOT_COORDINATOR`` or
``COORDINATOR_LOAD_IN_PROGRESS`` and no partitions. aiokafka 0.14 alone reads that as "this
group never committed": the exactly-once runner then reprocessed a committed batch
(``test_exactly_once_broker_restart.py`` saw two copies of some events in CI), and a consumer
rejoining resets to ``auto_offset_reset``. ``textpulse.kafka.offset_fetch`` makes such an
answer an error that aiokafka retries; this test asks for the offset through a real
consumer the whole time a real broker comes back, and watches the raw answers beside it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.commit import OffsetFetchRequest
from aiokafka.structs import OffsetAndMetadata
from textpulse.contracts.topics import TopicSpec
from textpulse.kafka.admin import client_options, create_topics, wait_for_broker
from textpulse.settings import KafkaSettings

from tests.private_kafka import PrivateKafka

pytestmark = [pytest.mark.kafka, pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]

# Enough offset records that loading them keeps the coordinator busy for a while after the restart
# (300,000 records answered NOT_COORDINATOR for ~4 s and COORDINATOR_LOAD_IN_PROGRESS for ~0.6 s here).
PARTITIONS = 200
ROUNDS = 300
COMMITTED = 4242


async def _watch(bootstrap: str, group: str, topic: str, answers: Counter[int], stable: asyncio.Event) -> None:
    """The top-level error code of every raw OffsetFetch v3 answer, until the committed offset comes back."""
    while not stable.is_set():
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await client.bootstrap()
            for broker in client.cluster.brokers():
                response = await client.send(broker.nodeId, OffsetFetchRequest(group, [(topic, [0])]))
                answers[response.error_code] += 1
                offsets = [p[1] for _, parts in response.topics for p in parts]
                if response.error_code == 0 and offsets == [COMMITTED]:
                    stable.set()
        except Exception:  # the broker is down or starting: ask again
            answers[-1] += 1
        finally:
            await client.close()
        await asyncio.sleep(0.05)


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_committed_offset_is_read_through_a_broker_restart(private_kafka: PrivateKafka) -> None:
    kafka = KafkaSettings(bootstrap_servers=private_kafka.bootstrap, flavor="apache")
    await wait_for_broker(kafka, 90)
    topic = f"t.offset-fetch-{uuid.uuid4().hex[:6]}"
    group = f"g.offset-fetch-{uuid.uuid4().hex[:6]}"
    await create_topics(kafka, [TopicSpec(topic, PARTITIONS, key="k", description="test")])
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    try:
        consumer.assign(tps)
        for r in range(ROUNDS):
            await consumer.commit({tp: OffsetAndMetadata(r, "") for tp in tps})
        await consumer.commit({tps[0]: OffsetAndMetadata(COMMITTED, "")})
        assert await consumer.committed(tps[0]) == COMMITTED
    finally:
        await consumer.stop()

    private_kafka.kill()
    starting = private_kafka.start_in_background()
    answers: Counter[int] = Counter()
    stable = asyncio.Event()
    watcher = asyncio.create_task(_watch(private_kafka.bootstrap, group, topic, answers, stable))
    read: list[int | None] = []
    deadline = time.monotonic() + 150
    try:
        # Ask as a consumer the whole time the broker comes back, and once more after it answers.
        while time.monotonic() < deadline:
            done = stable.is_set()
            try:
                read.append(await asyncio.wait_for(_committed(private_kafka.bootstrap, group, tps[0]), 60))
            except Exception:  # not up yet: the broker refuses connections
                await asyncio.sleep(0.2)
                continue
            if done:
                break
    finally:
        watcher.cancel()
        starting.wait(120)
    print(f"\nraw OffsetFetch answers by top-level error (-1: no connection): {dict(answers)}; consumer read {read}")
    assert stable.is_set(), "the restarted broker never answered the committed offset"
    assert read, "no consumer could ask the restarted broker"
    assert set(read) == {COMMITTED}, f"a committed offset was read as {set(read) - {COMMITTED}}"
