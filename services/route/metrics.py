"""Metrics of the route service: routes per queue and priority, triage by reason."""

from __future__ import annotations

from textpulse.observability.metrics import ServiceMetrics


class RouteMetrics(ServiceMetrics):
    """Queues and priorities come from the validated rules file: a bounded label set."""

    def __init__(self) -> None:
        super().__init__("route")
        self.routes = self.counter("textpulse_routes", "Messages routed.", ["queue", "priority"])
        self.triage = self.counter("textpulse_triage", "Messages sent to human triage.", ["reason"])
        self.skipped = self.counter("textpulse_route_skipped", "Enriched events not routed.", ["channel"])
