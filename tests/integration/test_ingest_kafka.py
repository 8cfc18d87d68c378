"""Ingest against the real Apache Kafka: round trips, bad input, idempotency, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from textpulse.kafka.admin import client_options
from textpulse.kafka.tansu import free_port
from textpulse.settings import KafkaSettings

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import REPO
from tests.helpers import headers, read_all, running
from tests.ingest_cases import HTTP_CASES, JSON, KAFKA_CASES, ev, js

pytestmark = [pytest.mark.kafka]


def ingest_settings(kafka: KafkaSettings, topics: dict[str, str], **kw: object) -> IngestSettings:
    return IngestSettings(
        kafka=kafka,
        topic_in=topics["text.in"],
        topic_out=topics["text.raw"],
        topic_dlq=topics["dlq.ingest"],
        group_id=f"g-{topics['text.in']}",
        **kw,
    )


async def produce(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


@pytest.mark.timeout(120)
async def test_round_trip_http_and_text_in(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = ingest_settings(kafka_settings, kafka_topics)
    app = create_app(settings)
    async with running(app) as client:
        resp = await client.post(
            "/v1/events", content=js(ev(id="h-1", conversation_id="conv-1")), headers={"content-type": JSON}
        )
        assert resp.status_code == 202, resp.text
        resp = await client.post(
            "/v1/events/batch",
            content=js([ev(id=f"h-b{i}", entity_key="AAPL") for i in range(20)]),
            headers={"content-type": JSON},
        )
        assert resp.json()["accepted"] == 20
        await produce(kafka_settings, kafka_topics["text.in"], [js(ev(id=f"k-{i}", user_id="u7")) for i in range(10)])
        records = await read_all(kafka_settings, kafka_topics["text.raw"], expect=31, timeout_s=60)
    assert len(records) == 31
    by_id = {orjson.loads(r.value)["id"]: r for r in records}
    assert by_id["h-1"].key == b"conv:conv-1"
    assert by_id["h-b3"].key == b"entity:AAPL"
    assert by_id["k-4"].key == b"user:u7"
    # one key → one partition: per-entity order kept
    assert len({r.partition for r in records if r.key == b"entity:AAPL"}) == 1
    for rec in records:
        h = headers(rec)
        body = orjson.loads(rec.value)
        assert h["event-id"] == body["id"]
        assert h["schema-version"] == "1" == str(body["schema_version"])
        assert h["content-type"] == "application/json"
        assert body["ingest_time"].endswith("Z") or "+00:00" in body["ingest_time"]


@pytest.mark.timeout(180)
async def test_bad_input_suite_counts_add_up(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = ingest_settings(kafka_settings, kafka_topics)
    app = create_app(settings)
    sent = accepted = rejected = 0
    async with running(app) as client:
        for _name, body, ctype, status in HTTP_CASES:
            resp = await client.post("/v1/events", content=body, headers={"content-type": ctype} if ctype else {})
            assert resp.status_code == status, (_name, resp.text)
            sent += 1
            accepted += resp.status_code == 202
            rejected += resp.status_code != 202
        dup = await client.post("/v1/events", content=js(ev(id="ok-1")), headers={"content-type": JSON})
        assert dup.json()["duplicates"] == 1
        await produce(kafka_settings, kafka_topics["text.in"], [c[1] for c in KAFKA_CASES])
        await produce(kafka_settings, kafka_topics["text.in"], [js(ev(id="k-ok-1"))])  # duplicate id
        want_raw = accepted + sum(c[2] == "raw" for c in KAFKA_CASES)
        want_dlq = sum(c[2] == "dlq" for c in KAFKA_CASES)
        raw = await read_all(kafka_settings, kafka_topics["text.raw"], expect=want_raw, timeout_s=60)
        dlq = await read_all(kafka_settings, kafka_topics["dlq.ingest"], expect=want_dlq, timeout_s=60)
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/ready")).status_code == 200
    assert len(raw) == want_raw
    assert len(dlq) == want_dlq
    assert accepted + rejected == sent
    assert len(raw) + len(dlq) + rejected == sent + len(KAFKA_CASES)
    assert len({orjson.loads(r.value)["id"] for r in raw}) == len(raw)
    for rec in dlq:
        h = headers(rec)
        assert h["x-dlq-reason"]
        # The shared vocabulary (textpulse.contracts.errors): the reason starts with the code.
        assert h["x-dlq-reason"].startswith(h["x-dlq-code"])
        assert h["x-dlq-source-topic"] == kafka_topics["text.in"]
        assert int(h["x-dlq-source-offset"]) >= 0


@pytest.mark.timeout(120)
async def test_idempotency_survives_restart(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    settings = ingest_settings(kafka_settings, kafka_topics, consume_text_in=False)
    async with running(create_app(settings)) as client:
        assert (await client.post("/v1/events", content=js(ev(id="once")), headers={"content-type": JSON})).json()[
            "accepted"
        ] == 1
    # a new instance rebuilds the id window from text.raw
    async with running(create_app(settings)) as client:
        again = await client.post("/v1/events", content=js(ev(id="once")), headers={"content-type": JSON})
        assert again.json()["duplicates"] == 1
    assert len(await read_all(kafka_settings, kafka_topics["text.raw"], expect=1)) == 1


def _start_ingest(kafka: KafkaSettings, topics: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TEXTPULSE_INGEST_HTTP_PORT": str(port),
        "TEXTPULSE_INGEST_TOPIC_IN": topics["text.in"],
        "TEXTPULSE_INGEST_TOPIC_OUT": topics["text.raw"],
        "TEXTPULSE_INGEST_TOPIC_DLQ": topics["dlq.ingest"],
        "TEXTPULSE_INGEST_GROUP_ID": f"g-{topics['text.in']}",
        "TEXTPULSE_INGEST_PUBLISH_TIMEOUT_S": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.ingest.app"],
        env=env,
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def _wait_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(url)


def _kafka_script(name: str) -> None:
    proc = subprocess.run(
        ["bash", str(REPO / "deploy" / "kafka" / name)], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_durability_kill9_and_broker_restart(kafka_settings: KafkaSettings, kafka_topics: dict[str, str]) -> None:
    """202 means written: the events survive kill -9 of ingest and a broker restart; a down broker → 503."""
    log = REPO / ".run" / "test-ingest-durability.log"
    log.parent.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start_ingest(kafka_settings, kafka_topics, port, log)
    try:
        await _wait_ready(url)
        async with httpx.AsyncClient(timeout=30) as client:
            batch = [ev(id=f"dur-{i}") for i in range(50)]
            resp = await client.post(f"{url}/v1/events/batch", content=js(batch), headers={"content-type": JSON})
            assert resp.status_code == 202
            single = await client.post(f"{url}/v1/events", content=js(ev(id="dur-x")), headers={"content-type": JSON})
            assert single.status_code == 202
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = _start_ingest(kafka_settings, kafka_topics, port, log)
        await _wait_ready(url)
        _kafka_script("stop.sh")
        async with httpx.AsyncClient(timeout=30) as client:
            down = await client.post(f"{url}/v1/events", content=js(ev(id="dur-down")), headers={"content-type": JSON})
            assert down.status_code == 503
            assert int(down.headers["retry-after"]) > 0
            assert (await client.get(f"{url}/health")).status_code == 200
        _kafka_script("start.sh")
        records = await read_all(kafka_settings, kafka_topics["text.raw"], expect=51, timeout_s=90)
        ids = {orjson.loads(r.value)["id"] for r in records}
        assert {f"dur-{i}" for i in range(50)} | {"dur-x"} <= ids
        # the service recovered by itself: a retry of the refused event is accepted now
        await _wait_ready(url, 90)
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(30):
                retry = await client.post(
                    f"{url}/v1/events", content=js(ev(id="dur-down")), headers={"content-type": JSON}
                )
                if retry.status_code == 202:
                    break
                await asyncio.sleep(1)
            assert retry.status_code == 202
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
