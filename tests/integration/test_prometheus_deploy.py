"""Integration tests of deploy/prometheus and deploy/alertmanager: the real scripts and binaries.

A Prometheus and an Alertmanager are started with the start scripts on free
ports and temporary run dirs (instances on 9090/9093 are neither touched nor
needed), with one scrape target: a prometheus-client endpoint served by this
test as job ``ingest`` that exposes every series of
deploy/prometheus/metrics-contract.yml, growing like a busy pipeline, and a
webhook receiver standing in for the real one. Checked: readiness and
idempotent starts, rules loaded, the target scraped with the ``env`` label,
retargeting a job by re-running start.sh, every dashboard panel expression and
every recording rule returning data and every alert rule evaluating without
error on contract-shaped series, the heartbeat alert travelling Prometheus ->
Alertmanager, an alert posted to Alertmanager's API v2 read back and delivered
to the webhook of its severity's receiver, and stop scripts that stop by PID
and are idempotent.

With CI=true a missing prometheus / prometheus-alertmanager fails the run.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    UnknownMetricFamily,
)

from tests.ci import missing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import ModuleType

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
AM_DIR = REPO / "deploy" / "alertmanager"
SERVICE_JOBS = ("ingest", "classify", "ner", "alert", "route", "index", "recommend", "triton", "kafka")


def require_binaries() -> None:
    absent = [b for b in ("prometheus", "promtool", "prometheus-alertmanager") if shutil.which(b) is None]
    if absent:
        missing(", ".join(absent), "not on PATH: run deploy/prometheus/install.sh (make prom-install)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def eventually(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll until ``check`` returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        else:
            if result:
                return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s}s waiting for {what} (last error: {last_error!r})")


# Label values of the stand-in's series: small sets that still satisfy every
# filter the rules and panels use (task, outcome, negative label, triage queue).
LABEL_VALUES: dict[str, tuple[str, ...]] = {
    "service": ("ingest", "classify", "index", "recommend"),
    "topic": ("text.raw",),
    "reason": ("invalid",),
    "partition": ("0", "1"),
    "route": ("/v1/events",),
    "method": ("POST",),
    "status": ("200",),
    "channel": ("social", "support"),
    "outcome": ("accepted", "rejected"),
    "model": ("sentiment",),
    "backend": ("triton",),
    "kind": ("timeout",),
    "state": ("closed", "open"),
    "task": ("sentiment", "topic", "intent", "entity_type"),
    "label": ("negative", "positive"),
    "detector": ("negative_surge",),
    "queue": ("cards", "human-triage"),
    "priority": ("high", "normal"),
    "version": ("0.0.0-test",),
    "group": ("textpulse-ingest",),
    "head": ("sentiment",),
    "signal": ("label", "confidence"),
    "endpoint": ("search",),
    "family": ("events",),
    "result": ("hit", "miss"),
    "scorer": ("ranker", "hybrid", "popular"),
    "source": ("http",),
    "gpu_uuid": ("GPU-0",),
}


class ContractCollector:
    """Every series of metrics-contract.yml, counters growing at 2/s, like a busy pipeline.

    Triton's counters have no ``_total`` suffix, so they are exposed untyped,
    as a Triton server's text format reads to Prometheus.
    """

    def __init__(self) -> None:
        """Read the contract; values grow from now on."""
        self.started = time.monotonic()
        doc = yaml.safe_load((PROM_DIR / "metrics-contract.yml").read_text())
        self.specs = [
            (name, spec) for family, specs in doc.items() if family != "prometheus" for name, spec in specs.items()
        ]

    def collect(self) -> Iterable[Metric]:
        """One scrape: every label combination of every contract metric."""
        t = time.monotonic() - self.started + 1.0
        for name, spec in self.specs:
            labels = list(spec["labels"])
            combos = list(itertools.product(*(LABEL_VALUES[label] for label in labels)))
            family: Metric
            if spec["type"] == "histogram":
                family = HistogramMetricFamily(name, name, labels=labels)
                for combo in combos:
                    buckets = [("0.1", 5 * t), ("0.5", 8 * t), ("1.0", 9 * t), ("+Inf", 10 * t)]
                    family.add_metric(list(combo), buckets, sum_value=3 * t)
            elif spec["type"] == "gauge":
                family = GaugeMetricFamily(name, name, labels=labels)
                for combo in combos:
                    family.add_metric(list(combo), 1.0 if name == "textpulse_build_info" else 5.0)
            else:
                counter = name.endswith("_total")
                family = (
                    CounterMetricFamily(name.removesuffix("_total"), name, labels=labels)
                    if counter
                    else UnknownMetricFamily(name, name, labels=labels)
                )
                for combo in combos:
                    family.add_metric(list(combo), 2 * t)
            yield family


def grafana_generator() -> ModuleType:
    """deploy/grafana/generate.py, imported from its path."""
    spec = importlib.util.spec_from_file_location("textpulse_grafana_generate", REPO / "deploy/grafana/generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class WebhookSink:
    """Alertmanager's webhook receiver: records every notification it is sent."""

    def __init__(self) -> None:
        """Listen on a free loopback port in a daemon thread."""
        self.notifications: list[dict[str, Any]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                sink.notifications.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alertmanager"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop listening."""
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    """A Prometheus + Alertmanager started by the deploy scripts, and how to drive them."""

    env: dict[str, str]
    prom_url: str
    am_url: str
    prom_run_dir: Path
    am_run_dir: Path
    metrics_port: int
    webhook: WebhookSink
    script_output: list[str] = field(default_factory=list)

    def script(
        self, path: Path, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a deploy script with this stack's environment; output is kept for failure messages."""
        proc = subprocess.run(
            ["bash", str(path), *args],
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.script_output.append(f"$ {path.name} {' '.join(args)}\n{proc.stdout}{proc.stderr}")
        return proc

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query through the HTTP API."""
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        result = http_json(url)
        assert result["status"] == "success", result
        return list(result["data"]["result"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_binaries()
    base = tmp_path_factory.mktemp("obs")
    prom_port, am_port = free_port(), free_port()

    # A pipeline stand-in: every contract series, served over HTTP.
    registry = CollectorRegistry()
    registry.register(ContractCollector())
    metrics_port = free_port()
    metrics_server, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    webhook = WebhookSink()

    env = {
        **os.environ,
        "PROM_PORT": str(prom_port),
        "PROM_RUN_DIR": str(base / "prometheus"),
        "AM_PORT": str(am_port),
        "AM_RUN_DIR": str(base / "alertmanager"),
        "AM_WEBHOOK_URL": webhook.url,
        "TEXTPULSE_ENV": "test",
        # Alerts go out on evaluation and are re-sent every resend-delay (1m by
        # default); an evaluation right after a reload may find no Alertmanager
        # discovered yet, so re-send sooner.
        "PROM_EXTRA_ARGS": "--rules.alert.resend-delay=5s",
        # Only the stand-in service is a target: no target stays down.
        **{f"PROM_TARGET_{job.upper()}": "" for job in SERVICE_JOBS},
        "PROM_TARGET_INGEST": f"127.0.0.1:{metrics_port}",
    }
    stack = Stack(
        env,
        f"http://127.0.0.1:{prom_port}",
        f"http://127.0.0.1:{am_port}",
        base / "prometheus",
        base / "alertmanager",
        metrics_port,
        webhook,
    )
    try:
        for script in (AM_DIR / "start.sh", PROM_DIR / "start.sh"):
            proc = stack.script(script)
            assert proc.returncode == 0, "\n".join(stack.script_output)
        yield stack
    finally:
        stack.script(PROM_DIR / "stop.sh")
        stack.script(AM_DIR / "stop.sh")
        metrics_server.shutdown()
        webhook.close()


def test_both_are_ready_and_report_status(stack: Stack) -> None:
    for url in (stack.prom_url, stack.am_url):
        with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as response:
            assert response.status == 200
    prom = stack.script(PROM_DIR / "status.sh")
    assert prom.returncode == 0, prom.stdout + prom.stderr
    assert "ready at" in prom.stdout
    am = stack.script(AM_DIR / "status.sh")
    assert am.returncode == 0, am.stdout + am.stderr


def test_alertmanager_runs_without_a_cluster_listener(stack: Stack) -> None:
    status = http_json(f"{stack.am_url}/api/v2/status")
    assert status["cluster"]["status"] == "disabled"


def test_start_again_is_a_no_op_on_the_same_pid(stack: Stack) -> None:
    for directory, run_dir, pid_name in (
        (PROM_DIR, stack.prom_run_dir, "prometheus.pid"),
        (AM_DIR, stack.am_run_dir, "alertmanager.pid"),
    ):
        pid = (run_dir / pid_name).read_text().strip()
        proc = stack.script(directory / "start.sh")
        assert proc.returncode == 0, proc.stderr
        assert "already running" in proc.stderr
        assert (run_dir / pid_name).read_text().strip() == pid


def test_prometheus_loaded_every_rule(stack: Stack) -> None:
    expected = {
        name: sum(len(g["rules"]) for g in yaml.safe_load((PROM_DIR / "rules" / name).read_text())["groups"])
        for name in ("recording.yml", "alerts.yml")
    }
    groups = http_json(f"{stack.prom_url}/api/v1/rules")["data"]["groups"]
    loaded = {"recording.yml": 0, "alerts.yml": 0}
    for group in groups:
        loaded[Path(group["file"]).name] += len(group["rules"])
        for rule in group["rules"]:
            assert rule["health"] in {"ok", "unknown"}, rule
    assert loaded == expected


def test_target_scraped_with_the_env_label(stack: Stack) -> None:
    rows = eventually(lambda: stack.query('up{job="ingest"} == 1'), 30, "the ingest stand-in to be scraped")
    assert rows[0]["metric"]["env"] == "test"
    info = stack.query('textpulse_build_info{job="ingest", service="ingest"}')
    assert info[0]["metric"] == {
        "__name__": "textpulse_build_info",
        "env": "test",
        "instance": f"127.0.0.1:{stack.metrics_port}",
        "job": "ingest",
        "service": "ingest",
        "version": "0.0.0-test",
    }


def test_rerunning_start_retargets_a_job(stack: Stack) -> None:
    target = f"127.0.0.1:{stack.metrics_port}"
    proc = stack.script(PROM_DIR / "start.sh", extra_env={"PROM_TARGET_CLASSIFY": target})
    assert proc.returncode == 0, proc.stderr
    assert "reloaded" in proc.stderr
    eventually(lambda: stack.query('up{job="classify"} == 1'), 30, "job classify to be scraped after retargeting")
    proc = stack.script(PROM_DIR / "start.sh")
    assert proc.returncode == 0, proc.stderr


def test_every_panel_and_recording_rule_returns_data(stack: Stack) -> None:
    """The offline contract check, for real: Prometheus parses and evaluates them all."""
    gen = grafana_generator()
    pending = {
        f"{q.dashboard_uid} #{q.panel_id}{q.ref_id} {q.panel_title}": gen.expand(q.expr, {"env": "test"})
        for q in gen.panel_queries()
    }
    for group in yaml.safe_load((PROM_DIR / "rules" / "recording.yml").read_text())["groups"]:
        for rule in group["rules"]:
            pending[f"record {rule['record']}"] = f'{rule["record"]}{{env="test"}}'
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for what, expr in list(pending.items()):
            if stack.query(expr):
                del pending[what]
        time.sleep(1)
    assert pending == {}, "no data for: " + ", ".join(sorted(pending))


def test_every_alert_rule_evaluates_without_error(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = http_json(f"{stack.prom_url}/api/v1/rules?type=alert")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else []

    rules = eventually(evaluated, 30, "every alert rule to be evaluated")
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
    states = {r["name"]: r["state"] for r in rules}
    assert states["TextpulseAlertingHeartbeat"] == "firing"

    # Contract-shaped traffic with ingest up: no "no events" alert. Its 10m rate needs two samples of
    # the counter; an evaluation right after the previous test's reload can come before the second
    # scrape (pending at once on a loaded CI machine), so wait for the state to settle.
    def no_events_state() -> str:
        groups = http_json(f"{stack.prom_url}/api/v1/rules?type=alert")["data"]["groups"]
        found = {r["name"]: r["state"] for g in groups for r in g["rules"]}
        return "inactive" if found["TextpulseNoEventsIngested"] == "inactive" else ""

    eventually(no_events_state, 60, "TextpulseNoEventsIngested to be inactive with events flowing")


def test_heartbeat_travels_from_prometheus_to_alertmanager(stack: Stack) -> None:
    def managers() -> list[dict[str, str]]:
        return list(http_json(f"{stack.prom_url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"])

    # Discovery restarts on every reload (the previous test reloads): poll.
    assert eventually(managers, 30, "Prometheus to discover the Alertmanager") == [
        {"url": f"{stack.am_url}/api/v2/alerts"}
    ]

    def heartbeat() -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"filter": 'alertname="TextpulseAlertingHeartbeat"'})
        return list(http_json(f"{stack.am_url}/api/v2/alerts?{query}"))

    (alert,) = eventually(heartbeat, 60, "the heartbeat alert in Alertmanager")
    assert alert["labels"]["env"] == "test"
    assert alert["labels"]["severity"] == "none"
    assert [r["name"] for r in alert["receivers"]] == ["heartbeat"]


def test_posted_alert_is_read_back_and_notified(stack: Stack) -> None:
    marker = f"deploy-test-{time.time_ns()}"
    posted = {
        "labels": {"alertname": "TextpulseDeployTest", "severity": "critical", "env": "test", "marker": marker},
        "annotations": {"summary": "posted by test_prometheus_deploy"},
        "generatorURL": "http://127.0.0.1/test",
    }
    http_json(f"{stack.am_url}/api/v2/alerts", [posted])

    query = urllib.parse.urlencode({"filter": f'marker="{marker}"'})
    (alert,) = eventually(lambda: http_json(f"{stack.am_url}/api/v2/alerts?{query}"), 20, "the posted alert")
    assert alert["labels"] == posted["labels"]
    assert alert["annotations"] == posted["annotations"]
    assert alert["status"]["state"] == "active"
    assert [r["name"] for r in alert["receivers"]] == ["critical"]

    def delivered() -> list[dict[str, Any]]:
        return [
            n
            for n in stack.webhook.notifications
            if any(a["labels"].get("marker") == marker for a in n.get("alerts", []))
        ]

    # The critical route waits group_wait=10s before the first notification.
    (notification, *_) = eventually(delivered, 40, "the webhook notification")
    assert notification["receiver"] == "critical"
    assert notification["status"] == "firing"


def test_stop_is_by_pid_idempotent_and_frees_the_port(tmp_path: Path) -> None:
    require_binaries()
    port = free_port()
    env = {**os.environ, "AM_PORT": str(port), "AM_RUN_DIR": str(tmp_path / "am")}

    def script(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(AM_DIR / name)], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    assert script("start.sh").returncode == 0
    pid = int((tmp_path / "am" / "alertmanager.pid").read_text())
    assert Path(f"/proc/{pid}").exists()
    stopped = script("stop.sh")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopping pid {pid}" in stopped.stderr
    assert not Path(f"/proc/{pid}").exists()
    assert not port_open(port)
    again = script("stop.sh")
    assert again.returncode == 0
    assert "not running" in again.stderr
    assert script("status.sh").returncode == 1


def test_start_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    require_binaries()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PROM_PORT": str(port), "PROM_RUN_DIR": str(tmp_path / "prom")}
        proc = subprocess.run(
            ["bash", str(PROM_DIR / "start.sh")], env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert proc.returncode != 0
    assert f"port 127.0.0.1:{port} is in use" in proc.stderr
