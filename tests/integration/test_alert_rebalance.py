"""Alert replicas in one consumer group: the entity state follows its ``entity.mentions`` partition.

Two entities, one on each partition of a 2-partition ``entity.mentions``, each
go through a negative surge (real Bearish tweets) on replica A, which owns both
partitions and fires one alert per entity. Then:

- a second replica B joins (at-least-once and exactly-once delivery): the group moves one partition to B, which restores
  that changelog partition only (A drops its keys); the surge continues and ends
  — each entity has exactly one alert (firing, sequence 1; resolved, sequence 2),
  the moved one resolved by B from the state A left;
- or A is SIGKILLed right after its entity fired: B takes A's partition over
  (restoring it, skipping records A applied) — still one alert per entity.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from textpulse.contracts.events import encode
from textpulse.contracts.topics import TopicSpec
from textpulse.datasets import data_dir, load_text_examples
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.settings import KafkaSettings

from services.alert.partitions import entity_partition
from tests.conftest import REPO, missing
from tests.integration.test_alert_kafka import T0, _free_port, _wait_ready, producer
from tests.support.alert_synth import Planned, surge_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

PARTITIONS = 2
SURGE = 'detector="negative_surge"'
#: Short session: a SIGKILLed replica's partitions move after ~6 s, not 30.
SESSION_MS = 6000


@pytest.fixture(scope="module")
def tweets() -> list[Any]:
    if not (data_dir() / "twitter_fin_sentiment").exists():
        missing("twitter_fin_sentiment", f"not staged under {data_dir()}")
    return load_text_examples("twitter_fin_sentiment/sent_train.csv")


class Replica:
    """One ``python -m services.alert.app`` process with its own port and log."""

    def __init__(self, env: dict[str, str], name: str, tmp: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log = tmp / f"alert-{name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "services.alert.app"],
                cwd=REPO,
                env={**env, "TEXTPULSE_ALERT_HTTP_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def lines(self, message: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{") and message in line:
                rec = orjson.loads(line)
                if rec.get("msg") == message:
                    out.append(rec)
        return out

    async def wait_line(self, message: str, count: int = 1, timeout_s: float = 60) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(found := self.lines(message)) < count:
            assert self.proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, f"{self.name}: no {message!r} x{count}\n{self.tail()}"
            await asyncio.sleep(0.2)
        return found

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
        return sum(values)

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
async def setup(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]], tmp_path: Path
) -> dict[str, Any]:
    """Topics of their own (2 partitions for the mentions and the changelog), two entities, one per partition."""
    names = topic_names()
    prefix = names["entity.mentions"].removesuffix("entity.mentions")
    topics = {
        "mentions": (names["entity.mentions"], PARTITIONS),
        "enriched": (names["text.enriched"], PARTITIONS),
        "out": (names["alerts.financial"], 1),
        "state": (f"{prefix}alerts.state", PARTITIONS),
        "dlq": (names["dlq.alert"], 1),
    }
    await create_topics(
        kafka_settings,
        [
            TopicSpec(name, n, key="test", description="test", compacted=role == "state")
            for role, (name, n) in topics.items()
        ],
    )
    tag = uuid.uuid4().hex[:5].upper()
    entities: dict[int, str] = {}
    i = 0
    while len(entities) < PARTITIONS:
        name = f"RB{tag}{i}"
        entities.setdefault(entity_partition(name, range(PARTITIONS)), name)
        i += 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTPULSE_")}
    env.update(
        PYTHONPATH=f"{REPO / 'libs'}:{REPO}",
        TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
        TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_MS),
        TEXTPULSE_ALERT_TOPIC_MENTIONS=topics["mentions"][0],
        TEXTPULSE_ALERT_TOPIC_ENRICHED=topics["enriched"][0],
        TEXTPULSE_ALERT_TOPIC_OUT=topics["out"][0],
        TEXTPULSE_ALERT_TOPIC_STATE=topics["state"][0],
        TEXTPULSE_ALERT_TOPIC_DLQ=topics["dlq"][0],
        TEXTPULSE_ALERT_GROUP_ID=f"{prefix}alert",
        TEXTPULSE_ALERT_ALERTMANAGER_URL="",
        TEXTPULSE_ALERT_KAFKA_BATCH_TIMEOUT_MS="50",
    )
    return {"env": env, "entities": entities, "mentions": topics["mentions"][0], "out": topics["out"][0]}


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        r.stop()


def _plans(tweets: list[Any], entities: dict[int, str]) -> dict[int, tuple[list[Planned], list[Planned]]]:
    """Per partition: the mentions up to shortly after the surge fires, and the rest."""
    out = {}
    for p, entity in entities.items():
        plan = surge_scenario(tweets, entity=entity, start=T0, seed=p)
        first = [m for m in plan if m.mention.event_time < T0.replace(hour=10, minute=5)]
        out[p] = (first, plan[len(first) :])
    return out


async def _send(kafka: KafkaSettings, topic: str, plans: list[list[Planned]]) -> None:
    """All entities as one stream in event-time order: a replica's watermark is the slowest partition's
    event time, and events behind it are late (a partition sent whole before the other would leave the
    other's events behind)."""
    async with producer(kafka) as prod:
        for m in sorted((m for plan in plans for m in plan), key=lambda m: m.mention.event_time):
            await prod.send(topic, encode(m.mention), key=m.mention.entity_key.encode())
        await prod.flush()


async def _committed_values(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """Every committed record of ``topic`` (``read_committed``: aborted transactions' writes are not alerts)."""
    consumer = AIOKafkaConsumer(
        **client_options(kafka),  # type: ignore[arg-type]
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(r.value or b"" for r in records)
    finally:
        await consumer.stop()
    return out


async def _surge_alerts(
    kafka: KafkaSettings, topic: str, *, until: int, reps: list[Replica], timeout_s: float = 60
) -> list[dict[str, Any]]:
    """Negative-surge notifications once ``until`` exist and no more arrive for 3 s."""
    deadline = time.monotonic() + timeout_s
    settled = None
    while True:
        values = await _committed_values(kafka, topic)
        alerts = [a for a in (orjson.loads(v) for v in values) if a["detector"] == "negative_surge"]
        if len(alerts) >= until:
            if settled is not None and len(alerts) == settled[0] and time.monotonic() - settled[1] >= 3:
                return alerts
            if settled is None or len(alerts) != settled[0]:
                settled = (len(alerts), time.monotonic())
        assert time.monotonic() < deadline, (alerts, "\n".join(r.tail() for r in reps))
        await asyncio.sleep(0.5)


def _one_alert_each(alerts: list[dict[str, Any]], entities: dict[int, str]) -> None:
    """Per entity one alert id, firing as sequence 1 and resolved as sequence 2 (a re-publish of the
    same pair after a SIGKILL is the documented at-least-once case; a new alert never is)."""
    for entity in entities.values():
        mine = [a for a in alerts if a["subject"] == entity]
        pairs = sorted({(a["alert_id"], a["sequence"], a["status"]) for a in mine}, key=lambda x: x[1])
        assert [(seq, status) for _id, seq, status in pairs] == [(1, "firing"), (2, "resolved")], (entity, mine)
        assert len({a["alert_id"] for a in mine}) == 1


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
async def test_partition_moved_to_a_running_replica_keeps_one_alert(
    kafka_settings: KafkaSettings,
    setup: dict[str, Any],
    tweets: list[Any],
    replicas: list[Replica],
    tmp_path: Path,
    delivery: str,
) -> None:
    entities, env = setup["entities"], {**setup["env"], "TEXTPULSE_ALERT_DELIVERY": delivery}
    plans = _plans(tweets, entities)
    a = Replica(env, "a", tmp_path)
    replicas.append(a)
    await _wait_ready(a.port, a.proc, a.log)
    [restored_a] = await a.wait_line("alert state restored")
    assert restored_a["partitions"] == [0, 1]
    await _send(kafka_settings, setup["mentions"], [plans[p][0] for p in entities])
    fired = await _surge_alerts(kafka_settings, setup["out"], until=2, reps=replicas)
    assert sorted((a["subject"], a["status"], a["sequence"]) for a in fired) == sorted(
        (e, "firing", 1) for e in entities.values()
    )

    b = Replica(env, "b", tmp_path)
    replicas.append(b)
    await _wait_ready(b.port, b.proc, b.log)
    [restored_b] = await b.wait_line("alert state restored")
    [released_a] = await a.wait_line("alert partitions assigned")
    (moved,) = restored_b["partitions"]
    # B restored exactly the partition it was given: one key, whose alert is open; A let it go.
    assert restored_b["owned"] == [moved]
    assert (restored_b["restored_keys"], restored_b["keys"], restored_b["open"]) == (1, 1, 1)
    assert released_a["released"] == [moved]
    assert released_a["owned"] == [1 - moved]
    assert released_a["dropped_keys"] == 1

    await _send(kafka_settings, setup["mentions"], [plans[p][1] for p in entities])
    alerts = await _surge_alerts(kafka_settings, setup["out"], until=4, reps=replicas)
    assert len(alerts) == 4, alerts  # no copy at all: the move happened between batches
    _one_alert_each(alerts, entities)
    # A fired both; the moved entity was resolved by B from A's state, the other one by A.
    assert await a.metric(f"textpulse_alerts_fired_total{{{SURGE}") == 2
    assert await b.metric(f"textpulse_alerts_fired_total{{{SURGE}") == 0
    assert await a.metric(f"textpulse_alerts_resolved_total{{{SURGE}") == 1
    assert await b.metric(f"textpulse_alerts_resolved_total{{{SURGE}") == 1
    assert await a.metric("textpulse_alert_partitions") == 1
    assert await b.metric("textpulse_alert_partitions") == 1
    assert await b.metric("textpulse_alert_keys") == 1


async def test_kill9_owner_other_replica_takes_over_with_one_alert(
    kafka_settings: KafkaSettings, setup: dict[str, Any], tweets: list[Any], replicas: list[Replica], tmp_path: Path
) -> None:
    entities, env = setup["entities"], setup["env"]
    plans = _plans(tweets, entities)
    a = Replica(env, "a", tmp_path)
    replicas.append(a)
    await _wait_ready(a.port, a.proc, a.log)
    await a.wait_line("alert state restored")
    b = Replica(env, "b", tmp_path)
    replicas.append(b)
    await _wait_ready(b.port, b.proc, b.log)
    [first_b] = await b.wait_line("alert state restored")
    (mine_b,) = first_b["partitions"]
    mine_a = 1 - mine_b
    await a.wait_line("alert partitions assigned")

    await _send(kafka_settings, setup["mentions"], [plans[p][0] for p in entities])
    await _surge_alerts(kafka_settings, setup["out"], until=2, reps=replicas)
    # At once, no grace: the batch that fired may be uncommitted (B skips it by offset) and its
    # outbox not yet emptied in the changelog (B then re-publishes the same pair, never a new alert).
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    restores = await b.wait_line("alert state restored", count=2, timeout_s=SESSION_MS / 1000 + 30)
    takeover = restores[1]
    assert takeover["partitions"] == [mine_a]
    assert takeover["owned"] == [0, 1]
    assert (takeover["restored_keys"], takeover["keys"], takeover["open"]) == (1, 2, 2)

    await _send(kafka_settings, setup["mentions"], [plans[p][1] for p in entities])
    alerts = await _surge_alerts(kafka_settings, setup["out"], until=4, reps=replicas)
    _one_alert_each(alerts, entities)
    assert await b.metric("textpulse_alert_partitions") == 2
