"""The real pipeline scraped by a real Prometheus: every dashboard panel and every rule, evaluated live.

ingest, classify, ner, alert, route and index run as their own processes
(``python -m services.<name>.app``) on the shared Apache Kafka with topics
unique to this test and in-process inference with the tiny test models; index
writes to the Elasticsearch on 127.0.0.1:9200 (indices and templates under a
prefix unique to this run, deleted afterwards), or to a node of its own when
none runs there. The tiny models are served from a mirror of their repository
(symbolic links) where each version without a ``reference.json`` gets a
uniform one, so the drift gauges exist (a tiny repository built before the
exporter wrote references has none).
deploy/prometheus/start.sh starts a Prometheus (port 29090, run dir
.run/obs-live/prometheus, 2 s scrapes, 1 s rule evaluation) that scrapes them
and the broker's JMX exporter. Real tweets and support messages go in through
ingest's HTTP API, with a few invalid requests and malformed ``text.in``
records so that rejection and dead-letter series exist too, and one poison
record on ``text.raw`` that classify dead-letters and counts as failed.

Then every PromQL expression of every Grafana panel (deploy/grafana/generate.py)
and every recording and alerting rule (deploy/prometheus/rules/) is evaluated
through Prometheus's HTTP API:

- each must parse and evaluate (``status: success``), and every rule must
  report ``health: ok``;
- each must return data, unless a metric it reads is not emitted by this
  pipeline at all, for a reason listed in :data:`NOT_EMITTED` (Triton is not
  part of it, no alert fires in a minute of traffic, ...). A metric that is
  absent without a listed reason fails the test: that is a dead panel or a
  metric name typo.

What returned nothing, and why, is written to .run/obs-live/report.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from textpulse.contracts.topics import STREAM_PARTITIONS, TopicSpec
from textpulse.kafka.admin import client_options, create_topics, end_offsets
from textpulse.settings import KafkaSettings

from services.route.rules import load_rules
from tests.conftest import REPO, in_ci, make_topics, missing, port_open
from tests.support.inference import build_tiny_repo, tiny_repo_from_env
from tests.support.servers import pick_port

pytestmark = [pytest.mark.prometheus, pytest.mark.kafka, pytest.mark.es, pytest.mark.timeout(300)]

PROM_DIR = REPO / "deploy" / "prometheus"
RUN_DIR = REPO / ".run" / "obs-live"
ENV_LABEL = "obs-live"
#: The port plan of this test (a busy port falls back to a free one).
PROM_PORT = 29090
SERVICE_PORTS = {"ingest": 28080, "classify": 28081, "ner": 28082, "alert": 28083, "route": 28084, "index": 28085}
KAFKA_JMX_PORT = int(os.environ.get("KAFKA_JMX_EXPORTER_PORT", "9404"))
#: Jobs of prometheus.yml this pipeline does not run: no target (not "down").
ABSENT_JOBS = ("recommend", "triton", "alertmanager")

#: Metrics the dashboards or rules read that this pipeline does not emit, and
#: why. A panel or rule may return nothing only because of one of these.
NOT_EMITTED: dict[str, str] = {
    **{
        f"nv_inference_{name}": "Triton's own metric: this pipeline infers in-process (no Triton on a CPU-only "
        "machine); the Triton path is covered by test_classify_ner_triton"
        for name in (
            "request_success",
            "request_failure",
            "count",
            "exec_count",
            "queue_duration_us",
            "compute_infer_duration_us",
            "pending_request_count",
        )
    },
    **dict.fromkeys(
        ("nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"),
        "Triton's GPU metric: no Triton here, and a CPU-only Triton has no GPU series either",
    ),
    **{
        f"textpulse_recommend_{name}": "recommend is not part of this pipeline (it needs its embedding model, a "
        "catalogue and interactions; test_recommend_kafka runs it on the real Kafka); the metric names are "
        "checked against the service's metric set by tests/unit/test_dashboards.py"
        for name in (
            "request_seconds_bucket",
            "request_seconds_count",
            "cache_requests_total",
            "popular_fallbacks_total",
            "candidates_scored_total",
            "catalogue_items",
            "profiles",
            "items_embedded_total",
            "cf_refresh_seconds_bucket",
        )
    },
    "textpulse_inference_errors_total": "classify/ner count it per failed inference request (by kind), so it "
    "has no series until a request fails, and none fails in a healthy run; the errors panel falls back to 0 "
    "through its recording rule (test_triton_errors checks the counting)",
    **dict.fromkeys(
        (
            "textpulse_consumer_group_lag",
            "textpulse_consumer_group_lag_seconds",
            "textpulse_consumer_group_members",
            "textpulse_lag_exporter_last_success_timestamp_seconds",
        ),
        "the lag exporter's metric (`textpulse lag-exporter`, one process beside the broker) is not one of "
        "this pipeline's processes; tests/integration/test_lag_exporter.py runs it on the real Kafka and "
        "tests/unit/test_dashboards.py checks its names against the contract",
    ),
    "textpulse_alerts_fired_total": "no alert fires in a minute of replayed tweets (the counter has no series "
    "until a detector fires; test_alert_kafka drives surges)",
    "textpulse_alerts_resolved_total": "no alert resolves in a minute of replayed tweets",
    "textpulse_alert_detection_delay_seconds_bucket": "no alert fires, so no detection delay is observed",
}

#: Scraped metrics by the job that exposes them, for scrape-failure explanations.
JOB_OF_PREFIX = {"kafka_": "kafka"}


# ----------------------------------------------------------------- helpers


def grafana_generator() -> ModuleType:
    """deploy/grafana/generate.py, imported from its path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("textpulse_grafana_generate", REPO / "deploy/grafana/generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Prometheus:
    url: str
    env: dict[str, str]

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=15) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # 400/422: the expression does not parse or cannot be evaluated.
            return json.loads(exc.read() or b"{}") | {"http_status": exc.code}

    def query(self, expr: str) -> dict[str, Any]:
        return dict(self.api("query", query=expr))

    def series_count(self, metric: str) -> int:
        result = self.query(f'count({{__name__="{metric}", env="{ENV_LABEL}"}})')
        rows = result.get("data", {}).get("result", [])
        return int(float(rows[0]["value"][1])) if rows else 0


@dataclass
class Pipeline:
    kafka: KafkaSettings
    topics: dict[str, str]
    urls: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


def _service_env(
    service: str, kafka: KafkaSettings, topics: dict[str, str], port: int, repo: Path, tag: str, es_url: str = ""
) -> dict[str, str]:
    p = f"TEXTPULSE_{service.upper()}_"
    env = {
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TEXTPULSE_KAFKA_FLAVOR": "apache",
        "TEXTPULSE_MODEL_REPO": str(repo),
        "TEXTPULSE_LOCAL_THREADS": "1",
        f"{p}HTTP_PORT": str(port),
        f"{p}LOG_JSON": "false",
        f"{p}GROUP_ID": f"{tag}-{service}",
        # Consumer lag is measured every second so the lag panels have data.
        f"{p}LAG_REFRESH_S": "1",
        f"{p}TOPIC_DLQ": topics[f"dlq.{service}"],
        # The drift gauges become numbers after 20 predictions per head (the run sends ~190 events).
        "TEXTPULSE_DRIFT_MIN_SAMPLES": "20",
    }
    per_service = {
        "ingest": {"TOPIC_IN": topics["text.in"], "TOPIC_OUT": topics["text.raw"]},
        "classify": {"TOPIC_IN": topics["text.raw"], "TOPIC_OUT": topics["text.classified"]},
        "ner": {
            "TOPIC_IN": topics["text.classified"],
            "TOPIC_OUT": topics["text.enriched"],
            "TOPIC_MENTIONS": topics["entity.mentions"],
        },
        "alert": {
            "TOPIC_MENTIONS": topics["entity.mentions"],
            "TOPIC_ENRICHED": topics["text.enriched"],
            "TOPIC_OUT": topics["alerts.financial"],
            "TOPIC_STATE": f"t.{tag}.alerts.state",
            "ALERTMANAGER_URL": "",
            "KAFKA_BATCH_TIMEOUT_MS": "50",
        },
        "route": {
            "TOPIC_IN": topics["text.enriched"],
            "TOPIC_OUT": topics["support.routed"],
            "QUEUE_TOPIC_PREFIX": f"t.{tag}.support.queue.",
            "KAFKA_BATCH_TIMEOUT_MS": "50",
        },
        "index": {
            "TOPIC_ENRICHED": topics["text.enriched"],
            "TOPIC_ALERTS": topics["alerts.financial"],
            "TOPIC_ROUTED": topics["support.routed"],
            "ES_URL": es_url,
            "INDEX_PREFIX": tag,
            "KAFKA_BATCH_TIMEOUT_MS": "50",
        },
    }
    env.update({f"{p}{k}": v for k, v in per_service[service].items()})
    return env


async def _wait_ready(pipeline: Pipeline, timeout_s: float) -> None:
    pending = dict(pipeline.urls)
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=3.0) as client:
        while pending and time.monotonic() < deadline:
            for name, url in list(pending.items()):
                proc = pipeline.procs[name]
                if proc.poll() is not None:
                    pytest.fail(f"{name} exited with {proc.returncode}: {pipeline.logs[name].read_text()[-3000:]}")
                try:
                    if (await client.get(f"{url}/ready")).status_code == 200:
                        del pending[name]
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.5)
    assert not pending, {n: pipeline.logs[n].read_text()[-2000:] for n in pending}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _deploy(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(PROM_DIR / script), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


# ------------------------------------------------------------------ traffic


def _events(tag: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Real financial tweets (social) and real banking support messages, with ids unique to this run."""
    from textpulse.replay import build_events

    tweets = build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=150)
    support = build_events("banking77/train.csv", channel="support", limit=40)
    for i, ev in enumerate(support):
        ev["conversation_id"] = f"{tag}-conv-{i % 10}"
    for ev in (*tweets, *support):
        ev["id"] = f"{ev['id']}-{tag}"[:128]
    return tweets, support


async def _push(pipeline: Pipeline, tag: str) -> int:
    """Send the traffic; returns how many events ingest accepted."""
    tweets, support = _events(tag)
    url = pipeline.urls["ingest"]
    accepted = 0
    async with httpx.AsyncClient(timeout=30.0) as client:
        for start in range(0, len(tweets), 25):
            r = await client.post(f"{url}/v1/events/batch", json=tweets[start : start + 25])
            assert r.status_code == 202, r.text
            accepted += len(tweets[start : start + 25])
        for ev in support:
            r = await client.post(f"{url}/v1/events", json=ev)
            assert r.status_code == 202, r.text
            accepted += 1
        # Rejected requests: the ingest outcome "rejected" and 4xx HTTP statuses.
        assert (await client.post(f"{url}/v1/events", json={"channel": "news"})).status_code == 422
        assert (await client.post(f"{url}/v1/events", content=b"{not json", headers=_JSON)).status_code == 400
        # One search, so the index API's counter has a series.
        found = await client.get(f"{pipeline.urls['index']}/v1/search", params={"q": "stock"})
        assert found.status_code == 200, found.text
    # Malformed records on text.in: ingest's Kafka edge dead-letters them.
    producer = AIOKafkaProducer(**client_options(pipeline.kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        for value in (b'{"source": "obs-live", "channel": "news"', b"\xff\xfe not utf-8"):
            await producer.send_and_wait(pipeline.topics["text.in"], value)
        # A poison record behind ingest's back: classify dead-letters it and counts a failed record.
        await producer.send_and_wait(pipeline.topics["text.raw"], b'{"schema_version": 1, "id": "obs-live-poison"}')
    finally:
        await producer.stop()
    return accepted


_JSON = {"content-type": "application/json"}


async def _count(kafka: KafkaSettings, topic: str) -> int:
    return sum((await end_offsets(kafka, topic)).values())


async def _wait_counts(kafka: KafkaSettings, expected: dict[str, int], timeout_s: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = {t: await _count(kafka, t) for t in expected}
        if all(counts[t] >= n for t, n in expected.items()):
            break
        await asyncio.sleep(1.0)
    return counts


# ------------------------------------------------------------ expressions

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_BY = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """Metric (or recorded series) names an expression reads: identifiers outside strings, matchers and
    grouping clauses that look like metric names (contain an underscore or a colon, or are ``up``)."""
    text = _RANGE.sub(" ", _BY.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))))
    names = set()
    for token in _IDENT.findall(text):
        if token == "up" or ((":" in token or "_" in token) and not token.startswith("histogram_")):
            names.add(token)
    return names - {"label_values", "histogram_quantile", "label_replace", "count_values"}


def recording_rules() -> dict[str, list[str]]:
    """Recorded name → the expressions recording it (percentile names have one per quantile)."""
    out: dict[str, list[str]] = {}
    for group in yaml.safe_load((PROM_DIR / "rules" / "recording.yml").read_text())["groups"]:
        for rule in group["rules"]:
            out.setdefault(rule["record"], []).append(rule["expr"])
    return out


def alert_rules() -> dict[str, str]:
    doc = yaml.safe_load((PROM_DIR / "rules" / "alerts.yml").read_text())
    return {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}


def raw_metrics(expr: str, recorded: dict[str, list[str]]) -> set[str]:
    """The scraped metrics an expression depends on, through the recording rules it reads."""
    out: set[str] = set()
    for name in metric_names(expr):
        if name in recorded:
            for sub in recorded[name]:
                out |= raw_metrics(sub, recorded)
        else:
            out.add(name)
    return out


# ----------------------------------------------------------------- fixture


@pytest.fixture(scope="module")
def model_repo() -> Path:
    try:
        tiny = build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("tiny model repository (datasets + base model)", repr(exc))
        raise
    return _mirror_with_references(tiny, RUN_DIR / "model-repo")


def _mirror_with_references(repo: Path, mirror: Path) -> Path:
    """``repo`` mirrored by symbolic links; a version without reference.json gets a uniform one.

    Never writes into ``repo`` (the shared tiny repository of the other tests).
    """
    from textpulse.ml.drift import REFERENCE_FILE, head_reference, write_reference

    shutil.rmtree(mirror, ignore_errors=True)
    for version in sorted(p for p in repo.glob("*/*") if p.is_dir() and p.name.isdigit()):
        target = mirror / version.parent.name / version.name
        target.mkdir(parents=True)
        for item in version.iterdir():
            (target / item.name).symlink_to(item.resolve())
        if (version / REFERENCE_FILE).is_file():
            continue
        config = json.loads((version / "config.json").read_text())
        meta = config.get("textpulse") or {}
        labels = [
            str(v)
            for _, v in sorted(json.loads((version / "id2label.json").read_text()).items(), key=lambda kv: int(kv[0]))
        ]
        heads: dict[str, list[str]] = {}
        if meta.get("kind") == "token":
            heads[meta.get("task") or version.parent.name] = sorted({x.split("-", 1)[-1] for x in labels if x != "O"})
        else:
            heads[meta.get("task") or version.parent.name] = labels
            heads.update({name: list(names) for name, names in (meta.get("extra_heads") or {}).items()})
        uniform = {
            name: head_reference(names, names * 10, [0.05 + i / 10 for i in range(10)] * len(names))
            for name, names in heads.items()
        }
        write_reference(target, uniform, "obs-live: uniform stand-in (the tiny model was exported without one)")
    for item in repo.iterdir():
        if item.is_file():
            (mirror / item.name).symlink_to(item.resolve())
    return mirror


@pytest.fixture(scope="module")
def es_url(shared_es_url: str) -> str:
    """The session's Elasticsearch; index's indices and templates go under a prefix unique to the run."""
    return shared_es_url


def _delete_indices(es_url: str, prefix: str) -> None:
    """The run's indices and index templates (Elasticsearch refuses wildcard index deletes)."""
    found = httpx.get(f"{es_url}/_cat/indices/{prefix}-*", params={"format": "json", "h": "index"}, timeout=30)
    names = [row["index"] for row in found.json()] if found.status_code == 200 else []
    if names:
        httpx.delete(f"{es_url}/{','.join(names)}", timeout=60)
    httpx.delete(f"{es_url}/_index_template/{prefix}-*", timeout=30)


@dataclass
class Live:
    prom: Prometheus
    pipeline: Pipeline
    accepted: int
    counts: dict[str, int]


@pytest.fixture(scope="module")
def live(kafka_settings: KafkaSettings, model_repo: Path, es_url: str) -> Iterator[Live]:
    for binary in ("prometheus", "promtool"):
        if not any((Path(d) / binary).exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
            missing("Prometheus", f"{binary} not on PATH: run make prom-install")
    tag = f"obslive-{uuid.uuid4().hex[:8]}"
    from textpulse.contracts.topics import ALL_TOPICS

    topics = {spec.name: f"t.{tag}.{spec.name}" for spec in ALL_TOPICS}
    extra = [
        TopicSpec(f"t.{tag}.support.queue.{q}", STREAM_PARTITIONS, key="conversation id", description="test")
        for q in load_rules().queues
    ]
    extra.append(
        TopicSpec(f"t.{tag}.alerts.state", STREAM_PARTITIONS, key="alert key", description="test", compacted=True)
    )

    async def setup_topics() -> None:
        await make_topics(kafka_settings, topics)
        await create_topics(kafka_settings, extra)

    asyncio.run(setup_topics())

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    ports = {name: pick_port(port) for name, port in SERVICE_PORTS.items()}
    pipeline = Pipeline(kafka_settings, topics, {n: f"http://127.0.0.1:{p}" for n, p in ports.items()})
    prom_port = pick_port(PROM_PORT)
    prom_env = {
        **os.environ,
        "PROM_PORT": str(prom_port),
        "PROM_RUN_DIR": str(RUN_DIR / "prometheus"),
        "TEXTPULSE_ENV": ENV_LABEL,
        # 2 s, not 1: a service busy with in-process inference on a loaded 2-core machine can take
        # over a second to answer /metrics, and the scrape timeout cannot exceed the interval.
        "PROM_SCRAPE_INTERVAL": "2s",
        "PROM_EVALUATION_INTERVAL": "1s",
        **{f"PROM_TARGET_{job.upper()}": "" for job in ABSENT_JOBS},
        **{f"PROM_TARGET_{name.upper()}": f"127.0.0.1:{port}" for name, port in ports.items()},
        "PROM_TARGET_KAFKA": f"127.0.0.1:{KAFKA_JMX_PORT}" if port_open(KAFKA_JMX_PORT) else "",
    }
    prom = Prometheus(f"http://127.0.0.1:{prom_port}", prom_env)
    # A fresh TSDB: series of an earlier run would make absent metrics look emitted.
    _deploy("stop.sh", prom_env, "--wipe")
    try:
        for name, port in ports.items():
            env = _service_env(name, kafka_settings, topics, port, model_repo, tag, es_url)
            log = RUN_DIR / f"{name}.log"
            log.write_bytes(b"")
            pipeline.logs[name] = log
            with log.open("ab") as out:
                pipeline.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}.app"],
                    cwd=REPO,
                    env={**os.environ, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        started = _deploy("start.sh", prom_env)
        assert started.returncode == 0, started.stdout + started.stderr
        asyncio.run(_wait_ready(pipeline, timeout_s=150))
        accepted = asyncio.run(_push(pipeline, tag))
        expected = {topics["text.enriched"]: accepted, topics["dlq.ingest"]: 2, topics["dlq.classify"]: 1}
        counts = asyncio.run(_wait_counts(kafka_settings, expected, timeout_s=90))
        assert all(counts[t] >= n for t, n in expected.items()), (counts, expected)
        yield Live(prom, pipeline, accepted, counts)
    finally:
        for proc in pipeline.procs.values():
            _stop(proc)
        _deploy("stop.sh", prom_env)
        _delete_indices(es_url, tag)


def _wait_scraped(live: Live) -> None:
    """Until Prometheus has scraped the final counts of every stage (and evaluated the rules on them)."""
    prom = live.prom
    deadline = time.monotonic() + 60
    want = {"ner": live.accepted, "route": live.accepted}
    while time.monotonic() < deadline:
        done = True
        for service, n in want.items():
            rows = prom.query(f'sum(textpulse_messages_received_total{{env="{ENV_LABEL}", service="{service}"}})')[
                "data"
            ]["result"]
            done &= bool(rows) and float(rows[0]["value"][1]) >= n
        recorded = prom.query(f'env_service:textpulse_messages_processed:rate1m{{env="{ENV_LABEL}", service="ner"}}')
        if done and recorded["data"]["result"]:
            # Two more scrapes and evaluations on the final values.
            time.sleep(3)
            return
        time.sleep(1)
    pytest.fail("Prometheus never saw the pipeline's final counts")


# ------------------------------------------------------------------ tests


def test_every_service_is_scraped(live: Live) -> None:
    """The five services and Prometheus itself answer their scrapes; nothing else is a target.

    The broker's JMX exporter is scraped too, but not required here: on a shared broker holding
    thousands of test topics its scrape can outlast the kafka job's 8 s timeout (then the Kafka panel
    is reported as not scraped, with the error, by the next test).
    """
    jobs = {*SERVICE_PORTS, "prometheus"}
    health: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        targets = live.prom.api("targets", state="active")["data"]["activeTargets"]
        health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
        if all(health.get(job, ("",))[0] == "up" for job in jobs):
            break
        time.sleep(1)
    assert {job: health.get(job, ("absent",))[0] for job in jobs} == dict.fromkeys(jobs, "up"), health
    expected = jobs | ({"kafka"} if live.prom.env["PROM_TARGET_KAFKA"] else set())
    assert set(health) == expected, "a job without a target must not be scraped (it would count as down)"


def test_every_panel_and_rule_is_valid_and_has_data(live: Live) -> None:
    _wait_scraped(live)
    gen = grafana_generator()
    recorded = recording_rules()
    exprs: dict[str, str] = {}
    for q in gen.panel_queries():
        exprs[f"panel {q.dashboard_uid} #{q.panel_id}{q.ref_id} {q.panel_title!r}"] = gen.expand(
            q.expr, {"env": ENV_LABEL}
        )
    for dashboard in gen.dashboards():
        for var in dashboard.variables:
            query = var.query.removeprefix("label_values(").rsplit(",", 1)[0]
            exprs[f"variable {dashboard.uid} ${var.name}"] = gen.expand(query, {"env": ENV_LABEL})
    for name in recorded:
        exprs[f"record {name}"] = f'{name}{{env="{ENV_LABEL}"}}'
    for name, expr in alert_rules().items():
        exprs[f"alert {name}"] = expr

    invalid: dict[str, str] = {}
    empty: dict[str, set[str]] = {}
    absent: set[str] = set()
    dead: list[str] = []
    # A panel on a slow job (the kafka JMX scrape runs every 10 s, and takes seconds on a broker crowded
    # with test topics) may need a few more scrapes, even before its metric has a first series: retry a while.
    deadline = time.monotonic() + 60
    pending = dict(exprs)
    while True:
        for what, expr in pending.items():
            result = live.prom.query(expr)
            if result.get("status") != "success":
                invalid[what] = f"{result.get('errorType')}: {result.get('error')}"
            elif result["data"]["result"]:
                empty.pop(what, None)
            elif not what.startswith("alert "):
                # An alert expression returns nothing while it does not fire: only validity counts.
                empty[what] = raw_metrics(expr, recorded)
        assert invalid == {}, "invalid expressions: " + json.dumps(invalid, indent=2)
        absent = {m for deps in empty.values() for m in deps if live.prom.series_count(m) == 0}
        dead = sorted(what for what, deps in empty.items() if not deps & absent)
        slow = sorted(
            what
            for what, deps in empty.items()
            if any(m in absent and any(m.startswith(p) for p in JOB_OF_PREFIX) for m in deps)
        )
        if not (dead or slow) or time.monotonic() > deadline:
            break
        pending = {what: exprs[what] for what in dict.fromkeys(dead + slow)}
        time.sleep(2)

    failing = _failing_jobs(live.prom)
    # Panels on a job whose scrapes fail (the kafka JMX exporter on a broker crowded with test
    # topics) are reported with the scrape error instead: that is the environment, not the panel.
    scrape_explained = {
        what: failing[job]
        for what in empty
        for prefix, job in JOB_OF_PREFIX.items()
        if job in failing and any(m.startswith(prefix) for m in empty[what])
    }
    scrape_absent = {m for m in absent if any(m.startswith(p) and j in failing for p, j in JOB_OF_PREFIX.items())}
    report = _report(live, exprs, empty, absent, scrape_explained)
    unexplained_absent = sorted(absent - set(NOT_EMITTED) - scrape_absent)
    assert unexplained_absent == [], f"metrics read but not emitted (typo?): {unexplained_absent}\n{report}"
    still_dead = [what for what in dead if what not in scrape_explained]
    assert still_dead == [], f"no data although every metric they read is emitted: {still_dead}\n{report}"


def test_model_health_is_exported_per_model_version_and_head(live: Live) -> None:
    """Confidence, label counts and a numeric drift gauge per head of the served versions; failures counted."""
    _wait_scraped(live)
    env = f'env="{ENV_LABEL}"'

    def rows(expr: str) -> list[dict[str, Any]]:
        return list(live.prom.query(expr)["data"]["result"])

    confidence = rows(f"sum by (service, model, version, head) (textpulse_model_confidence_count{{{env}}})")
    heads = {(r["metric"]["service"], r["metric"]["model"], r["metric"]["head"]) for r in confidence}
    # classify's defaults: finance (sentiment + topic) for the tweets, support (clinc150 + sentiment)
    assert {("classify", "finance", "sentiment"), ("classify", "finance", "topic")} <= heads, heads
    assert {("classify", "support", "clinc150"), ("classify", "support", "sentiment")} <= heads, heads
    assert all(r["metric"]["version"].isdigit() for r in confidence)
    tweets = next(r for r in confidence if r["metric"]["model"] == "finance" and r["metric"]["head"] == "sentiment")
    assert float(tweets["value"][1]) >= 150
    drift = rows(f'textpulse_model_drift_psi{{{env}, service="classify", model="finance"}}')
    assert {(r["metric"]["head"], r["metric"]["signal"]) for r in drift} == {
        (head, signal) for head in ("sentiment", "topic") for signal in ("label", "confidence")
    }
    assert all(float(r["value"][1]) >= 0 for r in drift), drift  # a number: the window holds > 20
    failed = rows(f'textpulse_messages_failed_total{{{env}, service="classify", reason="poison"}}')
    assert [float(r["value"][1]) for r in failed] == [1.0]


def _failing_jobs(prom: Prometheus) -> dict[str, str]:
    """Jobs whose last scrape failed, with the error and how long the scrape took."""
    targets = prom.api("targets", state="active")["data"]["activeTargets"]
    return {
        t["labels"]["job"]: f"{t['lastError']} (last scrape took {t['lastScrapeDuration']:.1f} s)"
        for t in targets
        if t["lastError"]
    }


def test_every_rule_evaluates_healthy(live: Live) -> None:
    _wait_scraped(live)
    groups = live.prom.api("rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    expected = len(recording_rules_flat()) + len(alert_rules())
    assert len(rules) == expected
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    alerts = {r["name"]: r["state"] for r in rules if r["type"] == "alerting"}
    assert alerts["TextpulseAlertingHeartbeat"] == "firing"
    # Events were accepted a few seconds ago, so NoEventsIngested must settle on inactive. A counter
    # whose first scrape already held every increment has rate() 0 until it grows again after a
    # scrape (then the rule is pending, rightly), so keep a trickle of events going while waiting.
    assert _no_events_alert_settles(live) == "inactive"
    # No service is down (the kafka JMX scrape may be: see test_every_service_is_scraped).
    jobs = "|".join(SERVICE_PORTS)
    down = live.prom.query(f'ALERTS{{alertname="TextpulseTargetDown", env="{ENV_LABEL}", job=~"{jobs}"}}')
    assert down["data"]["result"] == []


def _no_events_alert_settles(live: Live, timeout_s: float = 45.0) -> str:
    """State of TextpulseNoEventsIngested once ingest accepted events across two scrapes."""
    tweets, _ = _events(f"trickle-{time.time_ns()}")
    url = live.pipeline.urls["ingest"]
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    for ev in tweets:
        rules = [rule for group in live.prom.api("rules")["data"]["groups"] for rule in group["rules"]]
        state = next(r["state"] for r in rules if r["name"] == "TextpulseNoEventsIngested")
        if state == "inactive" or time.monotonic() > deadline:
            return state
        assert httpx.post(f"{url}/v1/events", json=ev, timeout=30.0).status_code == 202
        time.sleep(2)
    return state


def recording_rules_flat() -> list[str]:
    return [name for name, exprs in recording_rules().items() for _ in exprs]


def _report(
    live: Live, exprs: dict[str, str], empty: dict[str, set[str]], absent: set[str], scrape: dict[str, str]
) -> str:
    """Markdown list of what returned nothing and why; written to .run/obs-live/report.md."""
    lines = [
        f"# Live PromQL evaluation ({len(exprs)} expressions; {live.accepted} events accepted; env={ENV_LABEL})",
        "",
        f"Panels, variables and recording rules without data: {len(empty)} of "
        f"{sum(not w.startswith('alert ') for w in exprs)} (alert rules: {sum(w.startswith('alert ') for w in exprs)},"
        " all valid)",
        "",
    ]
    for what in sorted(empty):
        missing_here = sorted(empty[what] & absent)
        reasons = "; ".join(f"`{m}`: {NOT_EMITTED.get(m, 'NOT EXPLAINED')}" for m in missing_here)
        if what in scrape:
            reasons = f"its job's scrape fails: {scrape[what]}"
        lines.append(f"- {what}: {reasons or 'every metric it reads is emitted (dead panel?)'}")
    unused = sorted(m for m in NOT_EMITTED if live.prom.series_count(m) > 0)
    lines += ["", "Metrics read but absent: " + ", ".join(sorted(absent))]
    if unused:
        lines.append("Listed as not emitted but present in this run: " + ", ".join(unused))
    text = "\n".join(lines) + "\n"
    (RUN_DIR / "report.md").write_text(text)
    if not in_ci():
        sys.stderr.write(text)
    return text
