"""One event followed through a real Jaeger: ingest → classify → ner → route as one trace.

ingest, classify, ner and route run as their own processes (``python -m services.<name>.app``) on
the shared Apache Kafka with topics unique to this test and in-process inference with the tiny
test models, each exporting spans by OTLP/HTTP (``TEXTPULSE_OTLP_ENDPOINT``) to Jaeger built by
deploy/jaeger/build.sh. The Jaeger on 127.0.0.1:16686/4318 is used when one runs (``make up``);
otherwise deploy/jaeger/start.sh starts one on free ports with a run dir of its own, stopped at
the end.

Two events go in over HTTP:

- a support message whose request carries the client's own W3C ``traceparent``: its trace keeps
  that trace id through every service, and its ``text.enriched`` and ``support.routed`` records
  carry it in their headers;
- a social post without one: ingest starts its trace, found in Jaeger by the event-id tag.

Each hop is a ``process <topic>`` span, child of the previous hop, linked to the batch span of
its service (``consume <topic>`` in a trace of its own, with the batch's ``infer`` and ``send``).
A poison record written straight to ``text.raw`` is dead-lettered by classify: the JSON log line
says so with the trace and span ids of its batch, whose trace links to the poison's.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.settings import KafkaSettings

from tests.conftest import REPO, missing, port_open
from tests.support.inference import build_tiny_repo, tiny_repo_from_env
from tests.support.servers import free_ports, pick_port

pytestmark = [pytest.mark.jaeger, pytest.mark.kafka, pytest.mark.timeout(300)]

JAEGER_DIR = REPO / "deploy" / "jaeger"
RUN_DIR = REPO / ".run" / "test-tracing"
SERVICES = ("ingest", "classify", "ner", "route")
#: Jaeger's ports when this test starts its own (each falls back to a free one when busy).
OWN_PORTS = {
    "JAEGER_OTLP_HTTP_PORT": 24318,
    "JAEGER_OTLP_GRPC_PORT": 24317,
    "JAEGER_QUERY_PORT": 26686,
    "JAEGER_QUERY_GRPC_PORT": 26685,
    "JAEGER_HEALTH_PORT": 23133,
    "JAEGER_METRICS_PORT": 28888,
}


@dataclass
class Jaeger:
    query_url: str
    otlp_url: str

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        response = httpx.get(f"{self.query_url}{path}{query}", timeout=10)
        response.raise_for_status()
        return response.json()

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        response = httpx.get(f"{self.query_url}/api/traces/{trace_id}", timeout=10)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json().get("data") or []
        return data[0] if data else None


def _running_jaeger() -> Jaeger | None:
    """The developer's Jaeger (make up) when its query API answers and its OTLP receiver listens."""
    query = int(os.environ.get("JAEGER_QUERY_PORT", "16686"))
    otlp = int(os.environ.get("JAEGER_OTLP_HTTP_PORT", "4318"))
    if not (port_open(query) and port_open(otlp)):
        return None
    try:
        httpx.get(f"http://127.0.0.1:{query}/api/services", timeout=3).raise_for_status()
    except httpx.HTTPError:
        return None
    return Jaeger(f"http://127.0.0.1:{query}", f"http://127.0.0.1:{otlp}")


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    running = _running_jaeger()
    if running is not None:
        yield running
        return
    env = {
        **os.environ,
        **{name: str(pick_port(port)) for name, port in OWN_PORTS.items()},
        "JAEGER_RUN_DIR": str(RUN_DIR / "jaeger"),
    }
    built = subprocess.run(
        ["bash", "-c", f'source {JAEGER_DIR / "lib.sh"} && echo "$JAEGER_BIN"'],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if not built.stdout.strip():
        missing("Jaeger", "not built: run deploy/jaeger/build.sh (make jaeger-build)")
    started = subprocess.run(
        ["bash", str(JAEGER_DIR / "start.sh")], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if started.returncode != 0:
        missing("Jaeger", f"deploy/jaeger/start.sh failed: {started.stderr[-2000:]}")
    try:
        yield Jaeger(f"http://127.0.0.1:{env['JAEGER_QUERY_PORT']}", f"http://127.0.0.1:{env['JAEGER_OTLP_HTTP_PORT']}")
    finally:
        subprocess.run(["bash", str(JAEGER_DIR / "stop.sh")], env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def model_repo() -> Path:
    try:
        return build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("tiny model repository (datasets + base model)", repr(exc))
        raise


def _service_env(
    service: str, topics: dict[str, str], kafka: KafkaSettings, port: int, repo: Path, otlp: str
) -> dict[str, str]:
    p = f"TEXTPULSE_{service.upper()}_"
    prefix = topics["support.routed"].removesuffix("support.routed")
    per_service = {
        "ingest": {"TOPIC_IN": topics["text.in"], "TOPIC_OUT": topics["text.raw"]},
        "classify": {"TOPIC_IN": topics["text.raw"], "TOPIC_OUT": topics["text.classified"]},
        "ner": {
            "TOPIC_IN": topics["text.classified"],
            "TOPIC_OUT": topics["text.enriched"],
            "TOPIC_MENTIONS": topics["entity.mentions"],
        },
        "route": {
            "TOPIC_IN": topics["text.enriched"],
            "TOPIC_OUT": topics["support.routed"],
            "QUEUE_TOPIC_PREFIX": f"{prefix}support.queue.",
        },
    }
    return {
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TEXTPULSE_KAFKA_FLAVOR": "apache",
        "TEXTPULSE_MODEL_REPO": str(repo),
        "TEXTPULSE_LOCAL_THREADS": "1",
        "TEXTPULSE_OTLP_ENDPOINT": otlp,
        # Export within a fraction of a second (the default batches spans for 5 s).
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        f"{p}HTTP_PORT": str(port),
        f"{p}GROUP_ID": f"{prefix}{service}",
        f"{p}TOPIC_DLQ": topics[f"dlq.{service}"],
        f"{p}KAFKA_BATCH_TIMEOUT_MS": "50",
        **{f"{p}{k}": v for k, v in per_service[service].items()},
    }


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # uvicorn exits cleanly on SIGTERM: the span exporter flushes at exit
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Pipeline:
    urls: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]


async def _wait_ready(pipeline: Pipeline) -> None:
    procs, logs = pipeline.procs, pipeline.logs
    pending = dict(pipeline.urls)
    deadline = time.monotonic() + 150
    async with httpx.AsyncClient(timeout=3.0) as client:
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                if procs[name].poll() is not None:
                    pytest.fail(f"{name} exited with {procs[name].returncode}: {logs[name].read_text()[-3000:]}")
                try:
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.5)
    assert not pending, {n: logs[n].read_text()[-2000:] for n in pending}


async def _records_of(kafka: KafkaSettings, topic: str, event_ids: set[str], timeout_s: float = 90) -> dict[str, Any]:
    """The first record of each of ``event_ids`` on ``topic`` (by its ``event-id`` header)."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        while set(found) != event_ids and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    headers = {k: v.decode() for k, v in rec.headers}
                    if headers.get("event-id") in event_ids:
                        found.setdefault(headers["event-id"], headers)
    finally:
        await consumer.stop()
    assert set(found) == event_ids, (topic, set(found))
    return found


def _trace_id(traceparent: str) -> str:
    version, trace_id, _span, _flags = traceparent.split("-")
    assert version == "00"
    return trace_id


def _services(trace: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """serviceName → its spans in ``trace``."""
    out: dict[str, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        out.setdefault(trace["processes"][span["processID"]]["serviceName"], []).append(span)
    return out


def _tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def _wait_trace(jaeger: Jaeger, trace_id: str, services: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    trace: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        trace = jaeger.trace(trace_id)
        if trace is not None and services <= set(_services(trace)):
            return trace
        time.sleep(0.5)
    pytest.fail(f"trace {trace_id} lacks services {services}: {sorted(_services(trace)) if trace else 'absent'}")


def _hop(trace: dict[str, Any], service: str, topic: str, event_id: str) -> dict[str, Any]:
    """The ``process <topic>`` span of ``event_id`` in ``service``."""
    spans = [
        s
        for s in _services(trace).get(f"textpulse-{service}", [])
        if s["operationName"] == f"process {topic}" and _tag(s, "textpulse.event_id") == event_id
    ]
    assert len(spans) == 1, (service, topic, [s["operationName"] for s in trace["spans"]])
    return spans[0]


def _parent(span: dict[str, Any]) -> str | None:
    return next((r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"), None)


@contextmanager
def _pipeline(topics: dict[str, str], kafka: KafkaSettings, repo: Path, otlp: str) -> Iterator[Pipeline]:
    """ingest, classify, ner and route as processes exporting to ``otlp``; stopped (spans flushed) at exit."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    pipeline = Pipeline({name: f"http://127.0.0.1:{port}" for name, port in ports.items()}, {}, {})
    try:
        for name in SERVICES:
            pipeline.logs[name] = RUN_DIR / f"{name}.log"
            with pipeline.logs[name].open("wb") as out:
                pipeline.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}.app"],
                    cwd=REPO,
                    env={**os.environ, **_service_env(name, topics, kafka, ports[name], repo, otlp)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        yield pipeline
    finally:
        for proc in pipeline.procs.values():
            _stop(proc)


def _check_support_trace(
    jaeger: Jaeger, topics: dict[str, str], event_id: str, client: tuple[str, str], records: dict[str, Any]
) -> None:
    """One trace, with the client's trace id, from ingest's request through route; hops linked to batches."""
    client_trace, client_span = client
    trace = _wait_trace(jaeger, client_trace, {f"textpulse-{s}" for s in SERVICES})
    ingest = _services(trace)["textpulse-ingest"]
    server = [s for s in ingest if _parent(s) == client_span]
    assert len(server) == 1, [s["operationName"] for s in trace["spans"]]
    assert _tag(server[0], "textpulse.event_id") == event_id
    send = [s for s in ingest if s["operationName"] == f"send {topics['text.raw']}"]
    assert len(send) == 1
    assert _parent(send[0]) == server[0]["spanID"]
    classify = _hop(trace, "classify", topics["text.raw"], event_id)
    ner = _hop(trace, "ner", topics["text.classified"], event_id)
    route = _hop(trace, "route", topics["text.enriched"], event_id)
    assert _parent(classify) == send[0]["spanID"]
    assert _parent(ner) == classify["spanID"]
    assert _parent(route) == ner["spanID"]
    # text.enriched continues from ner's span, support.routed from route's.
    assert records["text.enriched"]["traceparent"].split("-")[2] == ner["spanID"]
    assert records["support.routed"]["traceparent"].split("-")[2] == route["spanID"]

    # ner's hop links to its batch: consume → infer → send, in a trace of its own that links back.
    batch_ref = next(r for r in ner["references"] if r["refType"] == "FOLLOWS_FROM")
    assert batch_ref["traceID"] != client_trace
    batch = _wait_trace(jaeger, batch_ref["traceID"], {"textpulse-ner"})
    operations = {s["operationName"] for s in batch["spans"]}
    assert {f"consume {topics['text.classified']}", "infer", f"send {topics['text.enriched']}"} <= operations
    consume = next(s for s in batch["spans"] if s["operationName"] == f"consume {topics['text.classified']}")
    assert any(r["traceID"] == client_trace for r in consume["references"] if r["refType"] == "FOLLOWS_FROM")


async def test_one_event_is_one_trace_from_ingest_to_routed(
    jaeger: Jaeger, model_repo: Path, kafka_settings: KafkaSettings, kafka_topics: dict[str, str]
) -> None:
    topics = kafka_topics
    tag = secrets.token_hex(4)
    support_id, social_id = f"trace-{tag}-support", f"trace-{tag}-social"
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    support = {
        "id": support_id,
        "source": "test-tracing",
        "channel": "support",
        "text": "I lost my card yesterday and need a replacement",
        "conversation_id": f"conv-{tag}",
    }
    social = {"id": social_id, "source": "test-tracing", "channel": "social", "text": "$AAPL jumps after earnings"}
    with _pipeline(topics, kafka_settings, model_repo, jaeger.otlp_url) as pipeline:
        await _wait_ready(pipeline)
        async with httpx.AsyncClient(timeout=30) as client:
            # The caller's own trace: ingest continues it (W3C trace context).
            traceparent = {"traceparent": f"00-{client_trace}-{client_span}-01"}
            r = await client.post(f"{pipeline.urls['ingest']}/v1/events", json=support, headers=traceparent)
            assert r.status_code == 202, r.text
            r = await client.post(f"{pipeline.urls['ingest']}/v1/events", json=social)
            assert r.status_code == 202, r.text
        # A poison record behind ingest's back, in a trace of its producer: classify dead-letters it.
        poison_trace = secrets.token_hex(16)
        poison_headers = [
            ("event-id", f"trace-{tag}-poison".encode()),
            ("traceparent", f"00-{poison_trace}-{secrets.token_hex(8)}-01".encode()),
        ]
        producer = AIOKafkaProducer(**client_options(kafka_settings))  # type: ignore[arg-type]
        await producer.start()
        try:
            await producer.send_and_wait(topics["text.raw"], b'{"schema_version": 1}', headers=poison_headers)
        finally:
            await producer.stop()
        # The records themselves carry each event's trace: text.enriched (both) and support.routed.
        enriched = await _records_of(kafka_settings, topics["text.enriched"], {support_id, social_id})
        routed = await _records_of(kafka_settings, topics["support.routed"], {support_id})
        await _records_of(kafka_settings, topics["dlq.classify"], {f"trace-{tag}-poison"})
        classify_log = pipeline.logs["classify"]
    assert _trace_id(enriched[support_id]["traceparent"]) == client_trace
    assert _trace_id(routed[support_id]["traceparent"]) == client_trace
    social_trace = _trace_id(enriched[social_id]["traceparent"])
    assert social_trace != client_trace

    records = {"text.enriched": enriched[support_id], "support.routed": routed[support_id]}
    _check_support_trace(jaeger, topics, support_id, (client_trace, client_span), records)

    # The social post: ingest started its trace; Jaeger finds it by the event-id tag.
    found = jaeger.get(
        "/api/traces",
        service="textpulse-ingest",
        tags=json.dumps({"textpulse.event_id": social_id}),
        lookback="1h",
        limit="5",
    )["data"]
    assert [t["traceID"] for t in found] == [social_trace]
    doc = _wait_trace(jaeger, social_trace, {"textpulse-ingest", "textpulse-classify", "textpulse-ner"})
    _hop(doc, "ner", topics["text.classified"], social_id)

    # The dead-letter log line names its batch's trace and span; that batch links to the poison's trace.
    lines = [json.loads(line) for line in classify_log.read_text().splitlines() if line.startswith("{")]
    dead = [line for line in lines if line["msg"] == "dead-lettered record"]
    assert len(dead) == 1, lines[-5:]
    assert len(dead[0]["span_id"]) == 16
    batch = _wait_trace(jaeger, dead[0]["trace_id"], {"textpulse-classify"})
    consume = next(s for s in batch["spans"] if s["operationName"] == f"consume {topics['text.raw']}")
    assert poison_trace in {r["traceID"] for r in consume["references"] if r["refType"] == "FOLLOWS_FROM"}
    if dead[0].get("event_id") is not None:  # a batch of one names its event
        assert dead[0]["event_id"] == f"trace-{tag}-poison"
