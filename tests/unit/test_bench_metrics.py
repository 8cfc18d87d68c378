"""Pure helpers of the metrics-overhead benchmark: update counts from an exposition, failed scrapes."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from textpulse.observability.metrics import ServiceMetrics

from bench.bench_metrics import ScrapeFailed, _Scrapes, updates_per_event


def test_updates_per_event_counts_record_path_updates_only() -> None:
    m = ServiceMetrics("classify", enabled=True)
    for _ in range(5):  # 5 batches of 10 records
        m.received.labels("classify", "text.raw").inc(10)
        m.handler_duration.labels("classify", "text.raw").observe(0.1)
        for _ in range(10):
            m.e2e_latency.labels("classify").observe(0.05)
    m.consumer_lag.labels("classify", "text.raw", "0").set(3)
    for _ in range(7):  # scrapes: counted with the exposition cost, not per record
        m.http_requests.labels("classify", "/metrics", "GET", "200").inc()
    counters, histograms, lag = updates_per_event(generate_latest(m.registry).decode(), events=50)
    assert counters == pytest.approx(50 / 50)  # counter value: an upper bound of its inc() calls
    assert histograms == pytest.approx((5 + 50) / 50)
    assert lag


def test_disabled_metrics_have_no_updates() -> None:
    m = ServiceMetrics("classify", enabled=False)
    m.received.labels("classify", "text.raw").inc(10)
    assert updates_per_event(generate_latest(m.registry).decode(), events=10) == (0.0, 0.0, False)


def test_a_failed_scrape_fails_the_round() -> None:
    scrapes = _Scrapes()
    scrapes.check("round 1")  # nothing failed
    scrapes.failures.append("on/classify http://127.0.0.1:1/metrics: ConnectError()")
    with pytest.raises(ScrapeFailed, match="round 2: 1 scrape"):
        scrapes.check("round 2")
    scrapes.check("round 3")  # reported once
