"""Delivery modes without a broker process.

- at-least-once consumers skip an event whose outputs they already wrote (a redelivered record);
- every service refuses to start in exactly-once mode on the Tansu broker, with the reason, exit 2;
- the consumer options of each mode (read_committed always; FastStream never commits in exactly-once).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream import AckPolicy
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from textpulse.contracts import ClassifiedEvent, TextEvent, encode
from textpulse.kafka import make_broker
from textpulse.kafka.broker import consumer_options, raw_decoder
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.transactions import AtLeastOnce, ExactlyOnce, batch_runner
from textpulse.settings import KafkaSettings

from services.classify.app import create_app as create_classify
from services.classify.settings import ClassifySettings
from services.route.app import create_app as create_route
from services.route.settings import RouteSettings
from tests.conftest import REPO
from tests.support.inference import FakeBackend
from tests.support.route_synth import support_event

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SERVICES = ["classify", "ner", "alert", "route"]


def test_recent_ids_bounded_and_in_batch() -> None:
    seen = RecentIds(capacity=3)
    assert seen.fresh(["a", "b", "a"]) == [True, True, False]
    seen.add(["a", "b", "c", "d"])
    assert "a" not in seen  # oldest forgotten first
    assert [x in seen for x in "bcd"] == [True, True, True]
    assert len(seen) == 3
    assert seen.fresh(["d", "e"]) == [False, True]
    assert seen.skipped == 2
    with pytest.raises(ValueError, match="positive"):
        RecentIds(0)


async def _collect(broker: Any, topic: str, into: list[Any]) -> None:
    @broker.subscriber(topic, decoder=raw_decoder)
    async def _capture(msg: KafkaMessage) -> None:
        into.append(msg.raw_message)


async def test_route_at_least_once_skips_redelivered_event() -> None:
    settings = RouteSettings()
    broker = make_broker(settings.kafka, service="route")
    app = create_route(settings, broker=broker, real_kafka=False)
    routed: list[Any] = []
    await _collect(broker, settings.topic_out, routed)
    event = support_event("dup1", "When will my card arrive?", "card_arrival", 0.9, conversation="c1")
    async with TestKafkaBroker(broker), app.start_lifespan_context():
        for _ in range(3):
            await broker.publish(encode(event), settings.topic_in, key=b"conv:c1")
        other = support_event("dup2", "Card declined", "declined_card_payment", 0.9, conversation="c1")
        await broker.publish(encode(other), settings.topic_in, key=b"conv:c1")
    ids = [support_event_id(r.value) for r in routed]
    assert ids == ["dup1", "dup2"]


def support_event_id(value: bytes) -> str:
    import orjson

    return str(orjson.loads(value)["event_id"])


@pytest.fixture
async def classify_run() -> AsyncIterator[tuple[Any, list[Any]]]:
    settings = ClassifySettings(unavailable_backoff_s=0.01)
    broker = make_broker(settings.kafka, service="classify")
    app = create_classify(settings, broker=broker, backend=FakeBackend(), real_kafka=False)
    out: list[Any] = []
    await _collect(broker, settings.topic_out, out)
    async with TestKafkaBroker(broker), app.lifespan_context():
        yield broker, out


async def test_classify_at_least_once_skips_redelivered_event(classify_run: tuple[Any, list[Any]]) -> None:
    broker, out = classify_run
    ev = TextEvent(id="e1", source="test", channel="news", text="Stocks fall", event_time=NOW, ingest_time=NOW)  # type: ignore[arg-type]
    for _ in range(2):
        await broker.publish(encode(ev), "text.raw", key=b"event:e1", headers={"event-id": "e1"})
    assert [ClassifiedEvent.model_validate_json(r.value).event.id for r in out] == ["e1"]


def test_runner_per_mode() -> None:
    assert isinstance(batch_runner(RouteSettings(), service="route"), AtLeastOnce)
    eos = batch_runner(RouteSettings(delivery="exactly_once", group_id="g"), service="route")
    assert isinstance(eos, ExactlyOnce)
    assert eos.group_id == "g"
    assert eos.transactional_id(_tp("text.enriched", 3)) == "g.text.enriched.3"
    with pytest.raises(ValueError, match="Apache Kafka only"):
        ExactlyOnce(KafkaSettings(flavor="tansu"), group_id="g", service="route")


def _tp(topic: str, partition: int) -> Any:
    from aiokafka import TopicPartition

    return TopicPartition(topic, partition)


def test_consumer_options_per_mode() -> None:
    alo = consumer_options(KafkaSettings(), group_id="g")
    eos = consumer_options(KafkaSettings(session_timeout_ms=9000), group_id="g", exactly_once=True)
    assert alo["isolation_level"] == eos["isolation_level"] == "read_committed"
    assert alo["ack_policy"] is AckPolicy.NACK_ON_ERROR
    assert eos["ack_policy"] is AckPolicy.MANUAL  # offsets are committed in the transaction only
    assert (alo["session_timeout_ms"], eos["session_timeout_ms"]) == (8_000, 9000)
    assert alo["heartbeat_interval_ms"] == eos["heartbeat_interval_ms"] == 1000


def test_settings_refuse_exactly_once_on_tansu() -> None:
    with pytest.raises(ValidationError, match="does not implement"):
        RouteSettings(kafka=KafkaSettings(flavor="tansu"), delivery="exactly_once")


@pytest.mark.parametrize("service", SERVICES)
def test_service_refuses_to_start_exactly_once_on_tansu(service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    env.update(
        {
            "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
            "TEXTPULSE_KAFKA_FLAVOR": "tansu",
            # Nothing listens there: a service that did not refuse would hang or fail differently.
            "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            f"TEXTPULSE_{service.upper()}_DELIVERY": "exactly_once",
            f"TEXTPULSE_{service.upper()}_LOG_JSON": "false",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-m", f"services.{service}.app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "refusing to start" in proc.stderr
    assert "delivery=exactly_once needs Kafka transactions" in proc.stderr
    assert "Tansu" in proc.stderr
    assert "Traceback" not in proc.stderr
