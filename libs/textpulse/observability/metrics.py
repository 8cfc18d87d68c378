"""Prometheus metrics of a service: one registry per service, bounded label sets.

Names follow the platform's metric contract (see deploy/prometheus): every
metric has the ``service`` label; no label ever carries an entity name, user id
or event id.

With metrics disabled (``enabled=False``, or the service's
``TEXTPULSE_<SERVICE>_METRICS_ENABLED=false``, the variable its
``metrics_enabled`` setting reads) every metric is a no-op stand-in: the hot
path skips the work and ``/metrics`` exposes only ``textpulse_build_info``.
``make bench-metrics`` measures what enabling them costs.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

import textpulse

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

M = TypeVar("M", bound=MetricWrapperBase)
_FALSE = {"0", "false", "f", "no", "n", "off"}


class _Disabled:
    """A metric that records nothing: any labels, any update (metrics disabled)."""

    def labels(self, *_args: Any, **_kwargs: Any) -> _Disabled:
        return self

    def inc(self, *_args: Any, **_kwargs: Any) -> None:
        return None

    dec = set = observe = set_function = remove = inc


_DISABLED = _Disabled()


def metrics_enabled_from_env(service: str) -> bool:
    """The service's ``TEXTPULSE_<SERVICE>_METRICS_ENABLED`` (what its settings read); enabled when unset."""
    raw = os.environ.get(f"TEXTPULSE_{service.upper()}_METRICS_ENABLED")
    return raw is None or raw.strip().lower() not in _FALSE


class ServiceMetrics:
    """The standard metric set of a textpulse service."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None, *, enabled: bool | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.enabled = metrics_enabled_from_env(service) if enabled is None else enabled
        m = self.metric
        self.received = m(Counter, "textpulse_messages_received", "Records consumed.", ["service", "topic"])
        self.processed = m(
            Counter, "textpulse_messages_processed", "Records fully handled (output written).", ["service", "topic"]
        )
        self.failed = m(
            Counter, "textpulse_messages_failed", "Records that failed handling.", ["service", "topic", "reason"]
        )
        self.dlq = m(
            Counter, "textpulse_dlq_messages", "Records sent to the dead-letter topic.", ["service", "topic", "reason"]
        )
        self.handler_duration = m(
            Histogram,
            "textpulse_handler_duration_seconds",
            "Time to handle one consumed batch or record.",
            ["service", "topic"],
            buckets=LATENCY_BUCKETS,
        )
        self.batch_size = m(
            Histogram,
            "textpulse_batch_size",
            "Records per consumed batch.",
            ["service", "topic"],
            buckets=BATCH_BUCKETS,
        )
        self.consumer_lag = m(
            Gauge,
            "textpulse_consumer_lag",
            "End offset minus committed offset, in records.",
            ["service", "topic", "partition"],
        )
        # Progress per partition (textpulse.observability.progress): what makes a stuck partition visible.
        self.consumer_committed_offset = m(
            Gauge,
            "textpulse_consumer_committed_offset",
            "The consumer group's last committed offset.",
            ["service", "topic", "partition"],
        )
        self.consumer_stalled_seconds = m(
            Gauge,
            "textpulse_consumer_stalled_seconds",
            "Seconds since the committed offset last moved while records wait (0 when caught up).",
            ["service", "topic", "partition"],
        )
        self.consumer_stuck = m(
            Gauge,
            "textpulse_consumer_stuck",
            "1 while the partition is stalled longer than the service's stuck_after_s, else 0.",
            ["service", "topic", "partition"],
        )
        self.e2e_latency = m(
            Histogram,
            "textpulse_end_to_end_latency_seconds",
            "Event ingest time to this service's output written.",
            ["service"],
            buckets=LATENCY_BUCKETS,
        )
        self.http_requests = m(
            Counter, "textpulse_http_requests", "HTTP requests.", ["service", "route", "method", "status"]
        )
        self.http_duration = m(
            Histogram,
            "textpulse_http_request_duration_seconds",
            "HTTP request duration.",
            ["service", "route", "method"],
            buckets=LATENCY_BUCKETS,
        )
        # Always real, even disabled: the scrape target still says which service and version it is.
        self.build_info = Gauge(
            "textpulse_build_info", "Build information.", ["service", "version"], registry=self.registry
        )
        self.build_info.labels(service, textpulse.__version__).set(1)

    def metric(self, cls: type[M], name: str, doc: str, labels: list[str], **kwargs: Any) -> M:
        """``cls(name, doc, labels, registry=<this registry>, **kwargs)``, or a no-op while disabled."""
        if not self.enabled:
            # The stand-in answers every call the services make on a metric.
            return cast("M", _DISABLED)
        return cls(name, doc, labels, registry=self.registry, **kwargs)

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        """A service-specific counter in this registry (the ``service`` label is added)."""
        return self.metric(Counter, name, doc, ["service", *labels])
