"""classify as a real process (tiny in-process models) in exactly-once mode, SIGKILLed mid-stream.

The ``read_committed`` ``text.classified`` holds every event exactly once after the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from textpulse.contracts import ClassifiedEvent
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.settings import KafkaSettings

from tests.integration.test_classify_ner_kafka import (
    model_repo,  # noqa: F401 - the fixture, trained once and cached
    produce,
    replay_events,
    start_worker,
    stop,
    worker_env,
)

# ~95 s on the shared 2-core machine (two model loads, CPU inference): slow.
pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(180)]

EVENTS = 240


async def _ids(kafka: KafkaSettings, topic: str, isolation: str) -> Counter[str]:
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False, isolation_level=isolation)  # type: ignore[arg-type]
    await consumer.start()
    found: Counter[str] = Counter()
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.update(ClassifiedEvent.model_validate_json(r.value).event.id for r in records if r.value)
    finally:
        await consumer.stop()
    return found


async def _wait(kafka: KafkaSettings, topic: str, count: int, timeout_s: float) -> Counter[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        ids = await _ids(kafka, topic, "read_committed")
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        await asyncio.sleep(0.3)


async def test_classify_sigkill_exactly_once(
    kafka_settings: KafkaSettings,
    kafka_topics: dict[str, str],
    model_repo: Path,  # noqa: F811 - the imported fixture
    tmp_path: Path,
) -> None:
    events = replay_events(EVENTS)
    env = worker_env(kafka_settings, kafka_topics, model_repo, "classify")
    env.update(
        TEXTPULSE_CLASSIFY_DELIVERY="exactly_once",
        TEXTPULSE_CLASSIFY_KAFKA_BATCH_RECORDS="8",
        TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS="6000",
    )
    log = tmp_path / "classify.log"
    await produce(kafka_settings, kafka_topics["text.raw"], events)
    topic = kafka_topics["text.classified"]
    proc = start_worker("services.classify.app", env, log)
    try:
        before = await _wait(kafka_settings, topic, EVENTS // 4, 90)
        assert len(before) >= EVENTS // 4, log.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc = start_worker("services.classify.app", env, log)
        classified = await _wait(kafka_settings, topic, EVENTS, 90)
        uncommitted = await _ids(kafka_settings, topic, "read_uncommitted")
    finally:
        stop(proc)
    print(
        f"\nclassify exactly_once: killed after {len(before)}; {len(classified)}/{EVENTS} ids, "
        f"max copies {max(classified.values())}, aborted records seen read_uncommitted "
        f"{sum(uncommitted.values()) - sum(classified.values())}"
    )
    assert set(classified) == {e.id for e in events}, log.read_text()[-3000:]
    assert set(classified.values()) == {1}
