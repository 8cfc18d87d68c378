"""The route service against the real Apache Kafka: every rule path, order per conversation, DLQ, bad rules."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from textpulse.contracts.events import Channel, EnrichedEvent, encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.dlq import H_REASON
from textpulse.settings import KafkaSettings

from services.route.app import create_app
from services.route.rules import DEFAULT_RULES, load_rules
from services.route.settings import RouteSettings
from tests.conftest import REPO
from tests.helpers import headers, read_all
from tests.support.route_synth import support_event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def _settings(kafka_settings: KafkaSettings, names: dict[str, str]) -> RouteSettings:
    prefix = names["support.routed"].removesuffix("support.routed")
    settings = RouteSettings(
        kafka=kafka_settings,
        topic_in=names["text.enriched"],
        topic_out=names["support.routed"],
        topic_dlq=names["dlq.route"],
        queue_topic_prefix=f"{prefix}support.queue.",
        group_id=f"{prefix}route",
        kafka_batch_timeout_ms=50,
    )
    specs = [
        TopicSpec(f"{settings.queue_topic_prefix}{q}", STREAM_PARTITIONS, key="conversation id", description="test")
        for q in load_rules().queues
    ]
    await create_topics(kafka_settings, specs)
    return settings


@asynccontextmanager
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(**client_options(kafka_settings), acks="all")  # type: ignore[arg-type]
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


#: (event, expected queue, expected priority, expected triage reason)
CASES: list[tuple[EnrichedEvent, str, str, str | None]] = [
    (
        support_event(
            "fraud1",
            "Someone used my card in a shop I've never been to, I'm furious",
            "card_payment_not_recognised",
            0.93,
            conversation="c-fraud",
            sentiment=("negative", 0.8),
        ),
        "fraud-and-security",
        "p1",
        None,
    ),
    (
        support_event("cards1", "When will my new card arrive?", "card_arrival", 0.91, conversation="c-cards"),
        "cards",
        "p4",
        None,
    ),
    (
        support_event(
            "pay1",
            "Why was my card payment declined again?",
            "declined_card_payment",
            0.88,
            conversation="c-pay",
            sentiment=("negative", 0.7),
        ),
        "payments",
        "p3",
        None,
    ),
    (
        support_event("gen1", "book me a flight to Lisbon", "book_flight", 0.9, conversation="c-gen"),
        "general",
        "p4",
        None,
    ),
    (
        support_event("oos1", "what is the meaning of rain", "oos", 0.97, conversation="c-oos"),
        "human-triage",
        "p4",
        "out_of_scope",
    ),
    (
        support_event("low1", "my thing is not doing the thing", "card_not_working", 0.31, conversation="c-low"),
        "human-triage",
        "p4",
        "low_confidence",
    ),
    (support_event("none1", "hello?", None, conversation="c-none"), "human-triage", "p4", "no_intent"),
]


async def test_every_rule_path(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = await _settings(kafka_settings, kafka_topics)
    app = create_app(settings)
    news = support_event("news1", "Markets rally", None, channel=Channel.NEWS)
    async with app.start_lifespan_context(), producer(kafka_settings) as prod:
        for event, *_ in CASES:
            await prod.send_and_wait(settings.topic_in, encode(event), key=event.event.conversation_id.encode())  # type: ignore[union-attr]
        await prod.send_and_wait(settings.topic_in, encode(news), key=b"news1")
        await prod.send_and_wait(settings.topic_in, b'{"schema_version": 2}', key=b"bad")
        routed = await read_all(kafka_settings, settings.topic_out, expect=len(CASES))
        dlq = await read_all(kafka_settings, settings.topic_dlq, expect=1)
        queues = {
            q: await read_all(kafka_settings, f"{settings.queue_topic_prefix}{q}", idle_s=0.3)
            for q in load_rules().queues
        }
    by_id = {orjson.loads(r.value)["event_id"]: r for r in routed}
    assert sorted(by_id) == sorted(e.event.id for e, *_ in CASES)  # the news event is skipped
    for event, queue, priority, reason in CASES:
        rec = by_id[event.event.id]
        body = orjson.loads(rec.value)
        assert rec.key == f"conv:{event.event.conversation_id}".encode()
        assert (body["queue"], body["priority"], body["triaged"]) == (queue, priority, reason is not None), body
        rules = [r["rule"] for r in body["reasons"]]
        assert (f"triage:{reason}" in rules) if reason else rules[0].startswith("route:")
        assert body["event"]["text"] == event.event.text
        assert [orjson.loads(r.value)["event_id"] for r in queues[queue]].count(event.event.id) == 1
    assert sum(len(v) for v in queues.values()) == len(CASES)
    assert len(dlq) == 1
    assert "EnrichedEvent" in headers(dlq[0])[H_REASON]


async def test_order_per_conversation(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = await _settings(kafka_settings, kafka_topics)
    app = create_app(settings)
    events = [support_event(f"m{i}", f"message {i}", "card_arrival", 0.9, conversation=f"c{i % 3}") for i in range(60)]
    async with app.start_lifespan_context(), producer(kafka_settings) as prod:
        for e in events:
            await prod.send(settings.topic_in, encode(e), key=f"conv:{e.event.conversation_id}".encode())
        await prod.flush()
        routed = await read_all(kafka_settings, settings.topic_out, expect=len(events))
    for conv in ("c0", "c1", "c2"):
        got = [orjson.loads(r.value)["event_id"] for r in routed if r.key == f"conv:{conv}".encode()]
        want = [e.event.id for e in events if e.event.conversation_id == conv]
        assert got == want
        assert len({r.partition for r in routed if r.key == f"conv:{conv}".encode()}) == 1


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["routes"][0]["intents"].append("teleport_me"), "unknown intent 'teleport_me'"),
        (lambda d: d["routes"][1].update(queue="plastic"), "unknown queue 'plastic'"),
    ],
)
def test_bad_rules_file_fails_startup(tmp_path: Path, mutate, fragment: str) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(DEFAULT_RULES.read_text())
    mutate(doc)
    bad = tmp_path / "rules.yaml"
    bad.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "TEXTPULSE_ROUTE_RULES_PATH": str(bad), "TEXTPULSE_ROUTE_LOG_JSON": "false"}
    env["PYTHONPATH"] = f"{REPO / 'libs'}:{REPO}"
    proc = subprocess.run(
        [sys.executable, "-m", "services.route.app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid routing rules" in proc.stderr
    assert fragment in proc.stderr
    assert str(bad) in proc.stderr
