"""promtool and amtool over the committed Prometheus and Alertmanager configuration.

Runs the real tools from Debian's packages (deploy/prometheus/install.sh):
``promtool check config``, ``check rules`` and the rule unit tests of
deploy/prometheus/tests (every alert firing and not firing), then mutates a
threshold of each alert to prove the unit tests would catch the change, and
checks Alertmanager's config and its routing by severity with amtool.

With CI=true a missing promtool or amtool fails the run instead of skipping it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci import missing

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "deploy" / "prometheus"
AM_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"


def tool(name: str) -> str:
    """Path of a Prometheus tool; fails under CI, skips locally when absent."""
    path = shutil.which(name)
    if path is None:
        missing(name, "not on PATH: run deploy/prometheus/install.sh (make prom-install)")
    return path


def run(*args: str | Path, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_check_config() -> None:
    proc = run(tool("promtool"), "check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 2 rule files found" in proc.stdout


def test_check_rules() -> None:
    proc = run(tool("promtool"), "check", "rules", *sorted((PROM_DIR / "rules").glob("*.yml")))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 2


def test_rule_unit_tests_pass() -> None:
    tests = sorted((PROM_DIR / "tests").glob("*.yml"))
    assert len(tests) >= 2
    proc = run(tool("promtool"), "test", "rules", *tests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == len(tests)


# One edit per alert that changes when it fires; each must make a unit test fail.
MUTATIONS = {
    "TextpulseTargetDown": ('|lag-exporter"} == 0', '|lag-exporter"} == 1'),
    # Unscoped, it would page for every target of a cluster's Prometheus.
    "TextpulseTargetDown/scope": (
        'up{job=~"ingest|classify|ner|alert|route|index|recommend|triton|kafka|lag-exporter"}',
        "up",
    ),
    "TextpulseAlertingHeartbeat": ('(up{job="prometheus"}) == 1', '(up{job="prometheus"}) == 0'),
    "TextpulseConsumerLagGrowing": ("          ) > 1000\n", "          ) > 100\n"),
    "TextpulseConsumerLagSecondsHigh": ("group_lag_seconds) > 600\n", "group_lag_seconds) > 6000\n"),
    "TextpulseConsumerStuck": ("(textpulse_consumer_stuck) == 1", "(textpulse_consumer_stuck) == 0"),
    "TextpulseDLQRateHigh": ("textpulse_dlq_messages_total[5m])) > 0.1", "textpulse_dlq_messages_total[5m])) > 1"),
    "TextpulseHandlerErrorRatioHigh": ("ratio_rate5m > 0.05", "ratio_rate5m > 0.2"),
    "TextpulseEndToEndLatencyHigh": ('quantile="0.99"} > 0.5', 'quantile="0.99"} > 5'),
    "TextpulseNoEventsIngested": ("[10m])) > 0)", "[10m])) > 1)"),
    "TritonInferenceFailures": ("          > 0.01\n", "          > 0.2\n"),
    "TextpulseInferenceClientErrors": ("textpulse_inference_errors_total[5m])) > 0.05", "errors_total[5m])) > 0.5"),
    "TextpulseModelDrift": ("(textpulse_model_drift_psi) > 0.25", "(textpulse_model_drift_psi) > 0.5"),
    "TritonQueueTimeHigh": ("queue_duration_us:mean5m > 100000", "queue_duration_us:mean5m > 200000"),
    "TritonGpuMemoryHigh": ("          > 0.9\n", "          > 0.96\n"),
}


@pytest.mark.parametrize("alert", sorted(MUTATIONS))
def test_unit_tests_catch_a_changed_threshold(alert: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[alert]
    alert = alert.partition("/")[0]  # "<alert>/<what>": a second mutation of the same alert
    source = (PROM_DIR / "rules" / "alerts.yml").read_text()
    assert source.count(old) == 1, f"mutation anchor for {alert} not found exactly once"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(source.replace(old, new))
    shutil.copy(PROM_DIR / "rules" / "recording.yml", tmp_path / "rules" / "recording.yml")
    shutil.copy(PROM_DIR / "tests" / "alerts_test.yml", tmp_path / "tests" / "alerts_test.yml")
    proc = run(tool("promtool"), "test", "rules", "tests/alerts_test.yml", cwd=tmp_path)
    assert proc.returncode != 0, f"changing {alert} went unnoticed by the unit tests"
    assert f"alertname: {alert}" in proc.stdout + proc.stderr


def test_alertmanager_config() -> None:
    proc = run(tool("amtool"), "check-config", AM_CONFIG)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=TextpulseTargetDown"], "critical"),
        (["severity=warning", "alertname=TextpulseDLQRateHigh"], "warning"),
        (["severity=none", "alertname=TextpulseAlertingHeartbeat"], "heartbeat"),
        (["severity=warning", "source=textpulse-alert", "detector=negative_surge"], "financial"),
        (["severity=info"], "default"),
        ([], "default"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    proc = run(
        tool("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={AM_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
