"""InferenceMetrics.watch: the circuit state is exported per backend, read at scrape time."""

from __future__ import annotations

from prometheus_client import generate_latest

from .breaker import CircuitBreaker
from .metrics import InferenceMetrics


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Triton:
    name = "triton"

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker


class _Local:
    name = "local"


def _states(metrics: InferenceMetrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith("textpulse_inference_circuit_state{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('state="')[1].split('"')[0]] = float(value)
    return out


def test_breaker_state_follows_the_breaker_at_scrape_time() -> None:
    clock = _Clock()
    breaker = CircuitBreaker(failure_threshold=2, reset_s=5.0, clock=clock)
    metrics = InferenceMetrics("classify")
    metrics.watch(_Triton(breaker))  # type: ignore[arg-type]  # only name and breaker are read
    assert _states(metrics) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    breaker.failure()
    breaker.failure()
    assert _states(metrics) == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
    clock.now = 6.0
    assert _states(metrics) == {"closed": 0.0, "open": 0.0, "half_open": 1.0}
    breaker.success()
    assert _states(metrics) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}


def test_backend_without_breaker_reports_closed_and_labels_observations() -> None:
    metrics = InferenceMetrics("ner")
    metrics.watch(_Local())  # type: ignore[arg-type]
    metrics.observe("ner", 0.01, 4)
    assert _states(metrics) == {"closed": 1.0, "open": 0.0, "half_open": 0.0}
    text = generate_latest(metrics.registry).decode()
    assert 'textpulse_inference_batch_size_count{backend="local",model="ner",service="ner"} 1.0' in text


def test_predictions_are_counted_by_model_version_head_task_and_label() -> None:
    metrics = InferenceMetrics("classify", enabled=True)
    metrics.count_prediction("sentiment", "Bearish", model="finance", version="2", head="sentiment")
    metrics.count_prediction("sentiment", "Bearish", model="finance", version="2", head="sentiment")
    metrics.count_prediction("entity_type", "TICKER", model="rules", version="1", head="cashtag", count=3)
    text = generate_latest(metrics.registry).decode()
    assert (
        'textpulse_model_predictions_total{head="sentiment",label="Bearish",model="finance",service="classify",'
        'task="sentiment",version="2"} 2.0'
    ) in text
    assert (
        'textpulse_model_predictions_total{head="cashtag",label="TICKER",model="rules",service="classify",'
        'task="entity_type",version="1"} 3.0'
    ) in text
