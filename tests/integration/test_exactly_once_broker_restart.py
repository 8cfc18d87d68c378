"""Route in exactly-once mode while its (private) Apache Kafka is SIGKILLed and restarted mid-stream.

A broker of its own (free ports, a temporary run dir) so the shared one on 9092 is never
disturbed. The service keeps running through the outage: its transactions fail, are
aborted or dropped with their producers, the batches are rewound to the committed
offsets and retried; the ``read_committed`` output ends with every event exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from textpulse.contracts.events import encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.kafka.admin import client_options, create_topics, wait_for_broker
from textpulse.settings import KafkaSettings

from services.route.rules import load_rules
from tests.helpers import start_route as _start
from tests.integration.test_exactly_once_route import INTENTS, _env, _ids, _wait_for
from tests.private_kafka import PrivateKafka
from tests.support.route_synth import support_event

pytestmark = [pytest.mark.kafka, pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(300)]

EVENTS = 1200


async def test_broker_sigkill_and_restart(private_kafka: PrivateKafka, tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{private_kafka.port}", flavor="apache")
    await wait_for_broker(kafka, 90)
    prefix = f"t.broker-restart-{uuid.uuid4().hex[:6]}."
    names = {n: f"{prefix}{n}" for n in ("text.enriched", "support.routed", "dlq.route")}
    queues = [f"{prefix}support.queue.{q}" for q in load_rules().queues]
    await create_topics(
        kafka, [TopicSpec(t, STREAM_PARTITIONS, key="k", description="test") for t in [*names.values(), *queues]]
    )
    events = [
        support_event(f"b{i}", f"message {i}", INTENTS[i % len(INTENTS)], 0.9, conversation=f"c{i % 40}")
        for i in range(EVENTS)
    ]
    producer = AIOKafkaProducer(**client_options(kafka), acks="all")  # type: ignore[arg-type]
    await producer.start()
    try:
        for e in events:
            await producer.send(names["text.enriched"], encode(e), key=f"conv:{e.event.conversation_id}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    env = _env(kafka, names, "exactly_once", prefix)
    log = tmp_path / "route.log"
    service = _start(env, log)
    try:
        before = await _wait_for(kafka, [names["support.routed"]], EVENTS // 4, 60)
        assert len(before) >= EVENTS // 4, log.read_text()[-3000:]
        private_kafka.kill()
        await asyncio.sleep(3)
        private_kafka.start()
        await wait_for_broker(kafka, 90)
        routed = await _wait_for(kafka, [names["support.routed"]], EVENTS, 120)
        in_queues = await _ids(kafka, queues, "read_committed")
        assert service.poll() is None, log.read_text()[-3000:]
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
    aborted = log.read_text().count("transaction aborted")
    print(
        f"\nbroker restart: killed after {len(before)} routed; routed ids {len(routed)}/{EVENTS}, "
        f"max copies {max(routed.values())}, queue records {sum(in_queues.values())}, aborted transactions {aborted}"
    )
    assert set(routed) == {e.event.id for e in events}, log.read_text()[-3000:]
    assert set(routed.values()) == {1}
    assert set(in_queues.values()) == {1}
    assert len(in_queues) == EVENTS
