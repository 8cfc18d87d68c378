"""Prometheus metrics of a service: one registry per service, bounded label sets.

Names follow the platform's metric contract (see deploy/prometheus): every
metric has the ``service`` label; no label ever carries an entity name, user id
or event id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

import textpulse

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServiceMetrics:
    """The standard metric set of a textpulse service."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received = Counter("textpulse_messages_received", "Records consumed.", ["service", "topic"], registry=r)
        self.processed = Counter(
            "textpulse_messages_processed", "Records fully handled (output written).", ["service", "topic"], registry=r
        )
        self.failed = Counter(
            "textpulse_messages_failed", "Records that failed handling.", ["service", "topic", "reason"], registry=r
        )
        self.dlq = Counter(
            "textpulse_dlq_messages",
            "Records sent to the dead-letter topic.",
            ["service", "topic", "reason"],
            registry=r,
        )
        self.handler_duration = Histogram(
            "textpulse_handler_duration_seconds",
            "Time to handle one consumed batch or record.",
            ["service", "topic"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "textpulse_batch_size",
            "Records per consumed batch.",
            ["service", "topic"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "textpulse_consumer_lag",
            "End offset minus committed offset, in records.",
            ["service", "topic", "partition"],
            registry=r,
        )
        self.e2e_latency = Histogram(
            "textpulse_end_to_end_latency_seconds",
            "Event ingest time to this service's output written.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "textpulse_http_requests", "HTTP requests.", ["service", "route", "method", "status"], registry=r
        )
        self.http_duration = Histogram(
            "textpulse_http_request_duration_seconds",
            "HTTP request duration.",
            ["service", "route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.build_info = Gauge("textpulse_build_info", "Build information.", ["service", "version"], registry=r)
        self.build_info.labels(service, textpulse.__version__).set(1)

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        """A service-specific counter in this registry (the ``service`` label is added)."""
        return Counter(name, doc, ["service", *labels], registry=self.registry)
