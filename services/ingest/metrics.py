"""Ingest's metrics: the standard set plus outcomes per channel."""

from __future__ import annotations

from textpulse.observability.metrics import ServiceMetrics


class IngestMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("ingest")
        self.ingest_events = self.counter(
            "textpulse_ingest_events", "Events by outcome (accepted, rejected, duplicate, dlq).", ["channel", "outcome"]
        )
