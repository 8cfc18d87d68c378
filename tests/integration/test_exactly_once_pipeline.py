"""classify → NER in exactly-once mode on Apache Kafka (in-process apps, deterministic fake backend).

Every output topic, and the dead letters, written inside the transactions: ``read_committed``
readers see each event once, poison and model-rejected records once in ``dlq.classify``, and
the input offsets are committed up to the end.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from textpulse.contracts import EnrichedEvent, EntityMention, TextEvent
from textpulse.kafka.admin import client_options, end_offsets, topic_partitions
from textpulse.settings import KafkaSettings

from services.classify.app import create_app as create_classify
from services.classify.settings import ClassifySettings
from services.ner.app import create_app as create_ner
from services.ner.settings import NerSettings
from tests.integration.test_classify_ner_kafka import produce, serving
from tests.support.inference import FakeBackend

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def read_all(kafka: KafkaSettings, topic: str, *, expect: int = 0, timeout_s: float = 30) -> list[Any]:
    """Every ``read_committed`` record of ``topic``; waits until ``expect`` exist, then 1 s of quiet."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline, last = time.monotonic() + timeout_s, time.monotonic()
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
                last = time.monotonic()
            if len(out) >= expect and time.monotonic() - last > 1.0:
                break
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return out


async def _committed(kafka: KafkaSettings, group: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(kafka))  # type: ignore[arg-type]
    await admin.start()
    try:
        return sum(m.offset for m in (await admin.list_consumer_group_offsets(group)).values() if m.offset > 0)
    finally:
        await admin.close()


async def test_classify_ner_exactly_once(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    t = kafka_topics
    events = [
        TextEvent(
            id=f"p{i}",
            source="test",
            channel="news",  # type: ignore[arg-type]
            text=f"Acme Corp shares fall in Paris {i}" if i != 7 else "REJECTME please",
            event_time=NOW,
            ingest_time=NOW,
        )
        for i in range(40)
    ]
    common = {"kafka": kafka_settings, "delivery": "exactly_once", "lag_refresh_s": 3600, "kafka_batch_records": 8}
    classify = create_classify(
        ClassifySettings(
            topic_in=t["text.raw"],
            topic_out=t["text.classified"],
            topic_dlq=t["dlq.classify"],
            group_id=f"c-{t['text.raw']}",
            **common,  # type: ignore[arg-type]
        ),
        backend=FakeBackend(reject="REJECTME"),
    )
    ner = create_ner(
        NerSettings(
            topic_in=t["text.classified"],
            topic_out=t["text.enriched"],
            topic_mentions=t["entity.mentions"],
            topic_dlq=t["dlq.ner"],
            group_id=f"n-{t['text.raw']}",
            **common,  # type: ignore[arg-type]
        ),
        backend=FakeBackend(),
    )
    async with serving(classify), serving(ner):
        await produce(kafka_settings, t["text.raw"], events)
        enriched = await read_all(kafka_settings, t["text.enriched"], expect=len(events) - 1, timeout_s=60)
        mentions = await read_all(kafka_settings, t["entity.mentions"], timeout_s=10)
        dlq = await read_all(kafka_settings, t["dlq.classify"], expect=1, timeout_s=20)
        raw_end = sum((await end_offsets(kafka_settings, t["text.raw"])).values())
        classified_end = sum((await end_offsets(kafka_settings, t["text.classified"])).values())
        committed = (
            await _committed(kafka_settings, f"c-{t['text.raw']}"),
            await _committed(kafka_settings, f"n-{t['text.raw']}"),
        )
    ids = Counter(EnrichedEvent.model_validate_json(r.value).event.id for r in enriched)
    assert set(ids) == {e.id for e in events} - {"p7"}
    assert set(ids.values()) == {1}
    assert mentions
    assert all(EntityMention.model_validate_json(r.value).event_id in ids for r in mentions)
    assert [orjson.loads(r.value)["id"] for r in dlq] == ["p7"]
    # Offsets live in the transactions only; the log ends hold the commit markers after the records.
    assert committed[0] == raw_end
    assert classified_end > len(events) - 1  # transaction markers take offsets too
    assert committed[1] > 0
