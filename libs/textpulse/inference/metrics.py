"""Metrics of a service that calls models (in addition to the standard service set)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from textpulse.observability.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, ServiceMetrics

from .breaker import CircuitBreaker, State

if TYPE_CHECKING:
    from .backend import InferenceBackend


class InferenceMetrics(ServiceMetrics):
    """``textpulse_inference_*``: request latency and size per model, unavailability, rejects, circuit state."""

    def __init__(self, service: str, *, enabled: bool | None = None) -> None:
        super().__init__(service, enabled=enabled)
        m = self.metric
        self.inference_duration = m(
            Histogram,
            "textpulse_inference_duration_seconds",
            "One inference request (Triton round trip, or in-process forward pass incl. tokenisation).",
            ["service", "model", "backend"],
            buckets=LATENCY_BUCKETS,
        )
        self.inference_batch = m(
            Histogram,
            "textpulse_inference_batch_size",
            "Texts per inference request.",
            ["service", "model", "backend"],
            buckets=BATCH_BUCKETS,
        )
        self.inference_unavailable = m(
            Counter,
            "textpulse_inference_unavailable",
            "Times a batch waited because the inference backend was unavailable.",
            ["service"],
        )
        self.inference_rejected = m(
            Counter,
            "textpulse_inference_rejected",
            "Inputs the model rejected (dead-lettered).",
            ["service", "model"],
        )
        self.inference_errors = m(
            Counter,
            "textpulse_inference_errors",
            "Failed inference requests by kind: timeout, unavailable (server down or unreachable), "
            "circuit_open (refused by the client's breaker), rejected (input refused), internal. "
            "Retried requests count once per attempt.",
            ["service", "model", "backend", "kind"],
        )
        self.circuit_state = m(
            Gauge,
            "textpulse_inference_circuit_state",
            "Circuit breaker of the inference backend: 1 for the current state (closed, open, half_open), "
            "0 for the others. A backend without a breaker (in-process) never refuses calls: closed.",
            ["service", "backend", "state"],
        )
        self.truncated_texts = m(
            Counter,
            "textpulse_inference_truncated_texts",
            "Texts longer than the model's max_length: truncated to it before inference (kept, never dropped).",
            ["service", "model"],
        )
        self.predictions = m(
            Counter,
            "textpulse_model_predictions",
            "Predictions by task (sentiment, topic, intent, entity_type) and winning label (entity type for NER).",
            ["service", "task", "label"],
        )
        self._backend = "local"

    def set_backend(self, name: str) -> None:
        self._backend = name

    def watch(self, backend: InferenceBackend) -> None:
        """Label later observations with ``backend``'s name and export its circuit state.

        The state is read when Prometheus scrapes (``set_function``), so the
        inference path pays nothing for it.
        """
        self.set_backend(backend.name)
        if hasattr(backend, "on_truncate"):  # the in-process and Triton backends plan chunks by tokens
            backend.on_truncate = self.truncated
        breaker = getattr(backend, "breaker", None)
        for state in State:
            gauge = self.circuit_state.labels(self.service, backend.name, state.value)
            if isinstance(breaker, CircuitBreaker):
                gauge.set_function(_state_reader(breaker, state))
            else:
                gauge.set(1.0 if state is State.CLOSED else 0.0)

    def count_prediction(self, task: str, label: str) -> None:
        """One prediction of ``task`` whose winning label (or entity type) is ``label``."""
        self.predictions.labels(self.service, task, label).inc()

    def truncated(self, model: str, count: int) -> None:
        """Callback for the backends (``on_truncate``): ``count`` texts of ``model`` were truncated."""
        self.truncated_texts.labels(self.service, model).inc(count)

    def error(self, model: str, kind: str) -> None:
        """Callback for the backends (``on_error=`` argument)."""
        self.inference_errors.labels(self.service, model, self._backend, kind).inc()

    def observe(self, model: str, seconds: float, size: int) -> None:
        """Callback for the backends (``observe=`` argument)."""
        self.inference_duration.labels(self.service, model, self._backend).observe(seconds)
        self.inference_batch.labels(self.service, model, self._backend).observe(size)


def _state_reader(breaker: CircuitBreaker, state: State) -> Callable[[], float]:
    """1.0 while ``breaker`` is in ``state`` (one closure per state: no late binding)."""
    return lambda: float(breaker.state is state)
