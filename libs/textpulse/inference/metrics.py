"""Metrics of a service that calls models (in addition to the standard service set)."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from textpulse.ml.drift import CONFIDENCE_BUCKETS, DriftWindow, HeadReference, load_reference
from textpulse.observability.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, ServiceMetrics

from .breaker import CircuitBreaker, State

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .backend import InferenceBackend


class InferenceMetrics(ServiceMetrics):
    """``textpulse_inference_*``: request latency and size per model, unavailability, rejects, circuit state.

    ``textpulse_model_*``: model health per model, version and head: prediction counts by label,
    confidence (max softmax) histograms and, where the model version has a ``reference.json``
    (:mod:`textpulse.ml.drift`), the drift gauge: PSI of the label mix and of confidence over
    the last ``drift_window`` predictions against the training distribution.
    """

    def __init__(
        self,
        service: str,
        *,
        enabled: bool | None = None,
        model_repo: Path | None = None,
        drift_window: int = 2000,
        drift_min_samples: int = 200,
    ) -> None:
        super().__init__(service, enabled=enabled)
        #: where ``reference.json`` files are read (set by ``watch`` from the backend's model repository)
        self.model_repo = model_repo
        self.drift_window = drift_window
        self.drift_min_samples = drift_min_samples
        self._windows: dict[tuple[str, str, str], DriftWindow | None] = {}
        self._references: dict[tuple[str, str], dict[str, HeadReference] | None] = {}
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
            "Predictions by model, version, head, task (sentiment, topic, intent, entity_type) and winning "
            "label (entity type for NER; cashtag rule matches count under model rules).",
            ["service", "model", "version", "head", "task", "label"],
        )
        self.confidence = m(
            Histogram,
            "textpulse_model_confidence",
            "Confidence of each prediction: the winning label's softmax probability (NER: the span's mean).",
            ["service", "model", "version", "head"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.drift = m(
            Gauge,
            "textpulse_model_drift_psi",
            "Population stability index of the recent predictions' label mix (signal=label) or confidence "
            "histogram (signal=confidence) against the model version's dev-split reference (reference.json); "
            "NaN until the window holds enough predictions, absent for versions exported without a reference.",
            ["service", "model", "version", "head", "signal"],
        )
        self.drift_samples = m(
            Gauge,
            "textpulse_model_drift_window_samples",
            "Predictions in the drift window of the head (the PSI is NaN below the minimum).",
            ["service", "model", "version", "head"],
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
        repo = getattr(backend, "model_repo", None)
        if self.model_repo is None and isinstance(repo, Path):
            self.model_repo = repo
        if hasattr(backend, "on_truncate"):  # the in-process and Triton backends plan chunks by tokens
            backend.on_truncate = self.truncated
        breaker = getattr(backend, "breaker", None)
        for state in State:
            gauge = self.circuit_state.labels(self.service, backend.name, state.value)
            if isinstance(breaker, CircuitBreaker):
                gauge.set_function(_state_reader(breaker, state))
            else:
                gauge.set(1.0 if state is State.CLOSED else 0.0)

    def count_prediction(
        self, task: str, label: str, *, model: str = "", version: str = "", head: str = "", count: int = 1
    ) -> None:
        """``count`` predictions of ``task`` whose winning label (or entity type) is ``label``."""
        self.predictions.labels(self.service, model, version, head or task, task, label).inc(count)

    def observe_predictions(
        self,
        model: str,
        version: str,
        head: str,
        task: str,
        labels: Sequence[str],
        confidences: Sequence[float],
    ) -> None:
        """One batch of one head's predictions: label counts, confidence histogram, drift window.

        Called once per batch and head; the label counts are one ``inc`` per distinct label and the
        drift window takes the batch as count vectors (numpy), so the per-prediction cost is the
        histogram's ``observe``.
        """
        if not self.enabled or not labels:
            return
        for label, n in collections.Counter(labels).items():
            self.predictions.labels(self.service, model, version, head, task, label).inc(n)
        histogram = self.confidence.labels(self.service, model, version, head)
        for value in confidences:
            histogram.observe(value)
        window = self._window(model, version, head)
        if window is not None:
            window.add(labels, np.asarray(confidences, dtype=np.float64))

    def _window(self, model: str, version: str, head: str) -> DriftWindow | None:
        """The head's drift window, made (with its gauges) on first use; None without a reference."""
        key = (model, version, head)
        if key in self._windows:
            return self._windows[key]
        references = self._reference(model, version)
        reference = references.get(head) if references else None
        window = DriftWindow(reference, self.drift_window, self.drift_min_samples) if reference else None
        self._windows[key] = window
        if window is not None:
            # read at scrape time: the hot path only adds count vectors
            for signal in window.signals():
                self.drift.labels(self.service, model, version, head, signal).set_function(_psi_reader(window, signal))
            self.drift_samples.labels(self.service, model, version, head).set_function(lambda: float(window.samples))
        return window

    def _reference(self, model: str, version: str) -> dict[str, HeadReference] | None:
        key = (model, version)
        if key not in self._references:
            # the served version's folder in the model repository (the same layout Triton serves)
            repo = self.model_repo
            found = load_reference(repo / model / version) if repo is not None and model and version.isdigit() else None
            self._references[key] = found
        return self._references[key]

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


def _psi_reader(window: DriftWindow, signal: str) -> Callable[[], float]:
    return lambda: window.psi(signal)


def _state_reader(breaker: CircuitBreaker, state: State) -> Callable[[], float]:
    """1.0 while ``breaker`` is in ``state`` (one closure per state: no late binding)."""
    return lambda: float(breaker.state is state)
