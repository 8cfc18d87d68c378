"""ServiceMetrics enabled and disabled (explicitly or by the service's METRICS_ENABLED variable)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from textpulse.observability.metrics import ServiceMetrics


def _exercise(metrics: ServiceMetrics) -> None:
    metrics.received.labels("svc", "t").inc(3)
    metrics.handler_duration.labels("svc", "t").observe(0.01)
    metrics.consumer_lag.labels("svc", "t", "0").set(5)
    metrics.counter("textpulse_things", "Things.", ["kind"]).labels("svc", "a").inc()


def test_enabled_records_everything() -> None:
    metrics = ServiceMetrics("svc", enabled=True)
    _exercise(metrics)
    text = generate_latest(metrics.registry).decode()
    assert 'textpulse_messages_received_total{service="svc",topic="t"} 3.0' in text
    assert 'textpulse_things_total{kind="a",service="svc"} 1.0' in text


def test_disabled_records_nothing_but_build_info() -> None:
    metrics = ServiceMetrics("svc", enabled=False)
    _exercise(metrics)
    text = generate_latest(metrics.registry).decode()
    series = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) == 1
    assert series[0].startswith('textpulse_build_info{service="svc"')


@pytest.mark.parametrize(("value", "enabled"), [("false", False), ("0", False), ("off", False), ("true", True)])
def test_default_follows_the_services_setting_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, enabled: bool
) -> None:
    monkeypatch.setenv("TEXTPULSE_CLASSIFY_METRICS_ENABLED", value)
    assert ServiceMetrics("classify").enabled is enabled
    assert ServiceMetrics("ner").enabled is True
