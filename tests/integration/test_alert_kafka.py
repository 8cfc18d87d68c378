"""The alert service against the real Apache Kafka and the real Alertmanager.

A surge of real Bearish tweets about one entity produces exactly one alert
with the right evidence, pushed to Alertmanager and the webhook, and resolves
when the surge ends; ``kill -9`` mid-surge and a restart keep exactly one
alert; a start on a backlog loses no mention as late; malformed records go to
the DLQ; a bad detector file stops start-up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from textpulse.contracts.events import encode
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.datasets import data_dir, load_text_examples
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.dlq import H_REASON
from textpulse.settings import KafkaSettings

from services.alert.app import create_app
from services.alert.config import ConfigError
from services.alert.partitions import entity_partition
from services.alert.settings import AlertSettings
from tests.conftest import REPO, missing, port_open
from tests.helpers import headers, read_all
from tests.support.alert_synth import Planned, surge_scenario

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus, pytest.mark.timeout(300)]

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AM_PORT = int(os.environ.get("ALERT_TEST_AM_PORT", "19093"))


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[str]:
    """A private Alertmanager (deploy/alertmanager/start.sh on its own port and run dir)."""
    script = REPO / "deploy" / "alertmanager" / "start.sh"
    if not script.exists():
        missing("Alertmanager", "deploy/alertmanager/start.sh is absent")
    env = {**os.environ, "AM_PORT": str(AM_PORT), "AM_RUN_DIR": str(REPO / ".run" / "alertmanager-alert-tests")}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        missing("Alertmanager", f"deploy/alertmanager/start.sh failed: {proc.stderr[-2000:]}")
    yield f"http://127.0.0.1:{AM_PORT}"
    subprocess.run(["bash", str(REPO / "deploy" / "alertmanager" / "stop.sh")], env=env, timeout=60, check=False)


class _Hook(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append(orjson.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


@pytest.fixture(scope="module")
def tweets() -> list[Any]:
    if not (data_dir() / "twitter_fin_sentiment").exists():
        missing("twitter_fin_sentiment", f"not staged under {data_dir()}")
    return load_text_examples("twitter_fin_sentiment/sent_train.csv")


async def _settings(kafka_settings: KafkaSettings, names: dict[str, str], **kw: Any) -> AlertSettings:
    prefix = names["alerts.financial"].removesuffix("alerts.financial")
    settings = AlertSettings(
        kafka=kafka_settings,
        topic_mentions=names["entity.mentions"],
        topic_enriched=names["text.enriched"],
        topic_out=names["alerts.financial"],
        topic_state=f"{prefix}alerts.state",
        topic_dlq=names["dlq.alert"],
        group_id=f"{prefix}alert",
        kafka_batch_timeout_ms=50,
        **kw,
    )
    state = TopicSpec(settings.topic_state, STREAM_PARTITIONS, key="alert key", description="test", compacted=True)
    await create_topics(kafka_settings, [state])
    return settings


@asynccontextmanager
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(**client_options(kafka_settings), acks="all", linger_ms=5)  # type: ignore[arg-type]
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


async def _send(prod: AIOKafkaProducer, topic: str, plan: list[Planned]) -> None:
    for p in plan:
        await prod.send(topic, encode(p.mention), key=p.mention.entity_key.encode())
    await prod.flush()


async def _alerts(settings: AlertSettings, *, until: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Surge notifications read back until ``until`` of them exist (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_all(settings.kafka, settings.topic_out, idle_s=0.3, timeout_s=10)
        surge = [orjson.loads(r.value) for r in records]
        surge = [a for a in surge if a["detector"] == "negative_surge"]
        if len(surge) >= until or time.monotonic() > deadline:
            return surge
        await asyncio.sleep(0.5)


async def _am_alerts(am_url: str, entity: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(
            f"{am_url}/api/v2/alerts", params={"filter": [f'entity="{entity}"', 'source="textpulse-alert"']}
        )
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]


async def test_surge_alert_evidence_push_and_resolution(
    kafka_settings: KafkaSettings,
    kafka_topics: dict[str, str],
    alertmanager: str,
    webhook: tuple[str, list[dict[str, Any]]],
    tweets: list[Any],
) -> None:
    entity = f"ACME{uuid.uuid4().hex[:6].upper()}"
    hook_url, hook_received = webhook
    settings = await _settings(kafka_settings, kafka_topics, alertmanager_url=alertmanager, webhook_url=hook_url)
    plan = surge_scenario(tweets, entity=entity, start=T0)
    firing_part = [p for p in plan if p.mention.event_time < T0.replace(hour=10, minute=5)]
    rest = plan[len(firing_part) :]
    app = create_app(settings)
    async with app.start_lifespan_context(), producer(kafka_settings) as prod:
        await _send(prod, settings.topic_mentions, firing_part)
        fired = await _alerts(settings, until=1)
        assert [a["status"] for a in fired] == ["firing"]
        am = await _am_alerts(alertmanager, entity)
        assert len(am) == 1
        assert am[0]["labels"]["detector"] == "negative_surge"
        assert am[0]["annotations"]["alert_id"] == fired[0]["alert_id"]
        await _send(prod, settings.topic_mentions, rest)
        surge = await _alerts(settings, until=2)
        for _ in range(20):
            if not await _am_alerts(alertmanager, entity):
                break
            await asyncio.sleep(0.5)
        assert await _am_alerts(alertmanager, entity) == []
        metrics = (await httpx.AsyncClient(transport=httpx.ASGITransport(app=app)).get("http://a/metrics")).text
    assert [a["status"] for a in surge] == ["firing", "resolved"]
    first, resolved = surge
    assert first["alert_id"] == resolved["alert_id"]
    assert first["key"] == f"entity:{entity}"
    ev = first["evidence"]
    assert ev["current"]["counts"]["negative"] >= 5
    assert ev["current"]["negative_share"] >= 0.5
    assert ev["baseline"]["negative_share_mean"] < 0.35
    assert ev["score"] >= ev["threshold"]
    burst_ids = {p.mention.event_id for p in plan if p.burst}
    assert sum(e["event_id"] in burst_ids for e in ev["top_events"]) >= 3
    window_start = datetime.fromisoformat(ev["current"]["start"])
    window_end = datetime.fromisoformat(ev["current"]["end"])
    assert all(window_start <= datetime.fromisoformat(e["event_time"]) < window_end for e in ev["top_events"])
    assert {h["alert_id"] for h in hook_received} == {first["alert_id"]}
    assert 'textpulse_alerts_fired_total{detector="negative_surge",service="alert"} 1.0' in metrics
    assert 'textpulse_alerts_resolved_total{detector="negative_surge",service="alert"} 1.0' in metrics
    assert "textpulse_alert_detection_delay_seconds_count" in metrics


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(settings: AlertSettings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TEXTPULSE_ALERT_HTTP_PORT": str(port),
        "TEXTPULSE_ALERT_TOPIC_MENTIONS": settings.topic_mentions,
        "TEXTPULSE_ALERT_TOPIC_ENRICHED": settings.topic_enriched,
        "TEXTPULSE_ALERT_TOPIC_OUT": settings.topic_out,
        "TEXTPULSE_ALERT_TOPIC_STATE": settings.topic_state,
        "TEXTPULSE_ALERT_TOPIC_DLQ": settings.topic_dlq,
        "TEXTPULSE_ALERT_GROUP_ID": settings.group_id or "",
        "TEXTPULSE_ALERT_ALERTMANAGER_URL": "",
        "TEXTPULSE_ALERT_KAFKA_BATCH_TIMEOUT_MS": "50",
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.alert.app"], cwd=REPO, env=env, stdout=out, stderr=out)


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if port_open(port):
            async with httpx.AsyncClient(timeout=2) as client:
                if (await client.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
        await asyncio.sleep(0.3)
    pytest.fail(f"alert service did not become ready: {log.read_text()[-3000:]}")


@pytest.mark.slow
async def test_kill9_mid_surge_keeps_exactly_one_alert(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], tweets: list[Any], tmp_path: Path
) -> None:
    entity = f"KILL{uuid.uuid4().hex[:6].upper()}"
    settings = await _settings(kafka_settings, kafka_topics)
    plan = surge_scenario(tweets, entity=entity, start=T0)
    first = [p for p in plan if p.mention.event_time < T0.replace(hour=10, minute=4)]
    rest = plan[len(first) :]
    log = tmp_path / "alert.log"
    port = _free_port()
    proc = _spawn(settings, port, log)
    try:
        await _wait_ready(port, proc, log)
        async with producer(kafka_settings) as prod:
            await _send(prod, settings.topic_mentions, first)
            fired = await _alerts(settings, until=1)
            assert [a["status"] for a in fired] == ["firing"], log.read_text()[-3000:]
            await asyncio.sleep(1.0)  # let the changelog write that empties the outbox land
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc = _spawn(settings, port, log)
            await _wait_ready(port, proc, log)
            await _send(prod, settings.topic_mentions, rest)
            surge = await _alerts(settings, until=2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    assert [a["status"] for a in surge] == ["firing", "resolved"], surge
    assert surge[0]["alert_id"] == surge[1]["alert_id"]
    restored = [line for line in log.read_text().splitlines() if "alert state restored" in line]
    assert len(restored) == 2
    assert orjson.loads(restored[1])["open"] == 1  # the second start found the open alert in the changelog


async def test_backlog_on_start_loses_no_mention_as_late(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], tweets: list[Any]
) -> None:
    """The service starts on a backlog whose partitions are hours apart in event time.

    Calm entities on other partitions run two hours ahead of the surge entity: whichever
    partitions the first fetches bring, none may push the watermark past the others'
    records (every assigned partition holds it until it delivers or shows empty), and the
    timer closes the last windows once the backlog is read.
    """
    entity = f"LAG{uuid.uuid4().hex[:6].upper()}"
    surge_part = entity_partition(entity, range(STREAM_PARTITIONS))
    calm = [
        e
        for e in (f"CALM{i}{uuid.uuid4().hex[:4].upper()}" for i in range(40))
        if entity_partition(e, range(STREAM_PARTITIONS)) != surge_part
    ][:5]
    settings = await _settings(kafka_settings, kafka_topics, alertmanager_url=None)
    plan = surge_scenario(tweets, entity=entity, start=T0)
    ahead = T0.replace(hour=11)
    for i, name in enumerate(calm):
        plan += surge_scenario(tweets, entity=name, start=ahead, minutes=(86, 0, 0), seed=100 + i)
    async with producer(kafka_settings) as prod:
        await _send(prod, settings.topic_mentions, plan)
    app = create_app(settings)
    async with app.start_lifespan_context():
        surge = await _alerts(settings, until=2)
        metrics = (await httpx.AsyncClient(transport=httpx.ASGITransport(app=app)).get("http://a/metrics")).text
    assert [(a["status"], a["subject"]) for a in surge] == [("firing", entity), ("resolved", entity)]
    outcomes = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "textpulse_alert_mentions_total" and sample.labels.get("kind") == "mention"
    }
    assert outcomes == {"added": len(plan)}


async def test_malformed_records_go_to_dlq(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = await _settings(kafka_settings, kafka_topics, alertmanager_url=None)
    app = create_app(settings)
    async with app.start_lifespan_context(), producer(kafka_settings) as prod:
        await prod.send_and_wait(settings.topic_mentions, b"\xff\xfe not json", key=b"X")
        await prod.send_and_wait(settings.topic_mentions, b'{"schema_version": 2, "event_id": "e"}', key=b"X")
        await prod.send_and_wait(settings.topic_enriched, b"[]", key=b"Y")
        dlq = await read_all(kafka_settings, settings.topic_dlq, expect=3)
    reasons = sorted(headers(r)[H_REASON].split(":")[0] for r in dlq)
    assert reasons == ["not a valid enriched record", "not a valid mention record", "not a valid mention record"]


def test_bad_detector_file_fails_startup(tmp_path: Path) -> None:
    bad = tmp_path / "alert.yaml"
    bad.write_text("window: {size_s: 300, slide_s: 70}\n")
    with pytest.raises(ConfigError, match=r"multiple of window\.slide_s"):
        create_app(AlertSettings(config_path=bad))
    env = {**os.environ, "TEXTPULSE_ALERT_CONFIG_PATH": str(bad), "TEXTPULSE_ALERT_LOG_JSON": "false"}
    env["PYTHONPATH"] = f"{REPO / 'libs'}:{REPO}"
    proc = subprocess.run(
        [sys.executable, "-m", "services.alert.app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "invalid alert configuration" in proc.stderr
    assert str(bad) in proc.stderr
