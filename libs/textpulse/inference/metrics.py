"""Metrics of a service that calls models (in addition to the standard service set)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from textpulse.observability.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, ServiceMetrics


class InferenceMetrics(ServiceMetrics):
    """``textpulse_inference_*``: request latency and size per model, unavailability, rejects."""

    def __init__(self, service: str) -> None:
        super().__init__(service)
        r = self.registry
        self.inference_duration = Histogram(
            "textpulse_inference_duration_seconds",
            "One inference request (Triton round trip, or in-process forward pass incl. tokenisation).",
            ["service", "model", "backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_batch = Histogram(
            "textpulse_inference_batch_size",
            "Texts per inference request.",
            ["service", "model", "backend"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_unavailable = Counter(
            "textpulse_inference_unavailable",
            "Times a batch waited because the inference backend was unavailable.",
            ["service"],
            registry=r,
        )
        self.inference_rejected = Counter(
            "textpulse_inference_rejected",
            "Inputs the model rejected (dead-lettered).",
            ["service", "model"],
            registry=r,
        )
        self._backend = "local"

    def set_backend(self, name: str) -> None:
        self._backend = name

    def observe(self, model: str, seconds: float, size: int) -> None:
        """Callback for the backends (``observe=`` argument)."""
        self.inference_duration.labels(self.service, model, self._backend).observe(seconds)
        self.inference_batch.labels(self.service, model, self._backend).observe(size)
