"""Metrics of the alert service: the standard set plus alert counts, open alerts and detection delay."""

from __future__ import annotations

from prometheus_client import Gauge, Histogram
from textpulse.observability.metrics import ServiceMetrics

DELAY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class AlertMetrics(ServiceMetrics):
    """``detector`` is one of three values and ``kind`` one of two: bounded label sets."""

    def __init__(self) -> None:
        super().__init__("alert")
        self.fired = self.counter("textpulse_alerts_fired", "Alerts that started firing.", ["detector"])
        self.resolved = self.counter("textpulse_alerts_resolved", "Alerts resolved.", ["detector"])
        self.notifications = self.counter(
            "textpulse_alert_notifications", "Notifications published (firing, re-notified, resolved).", ["status"]
        )
        self.open = Gauge("textpulse_alerts_open", "Open alerts.", ["service", "detector"], registry=self.registry)
        self.delay = Histogram(
            "textpulse_alert_detection_delay_seconds",
            "Wall time from the newest ingest time of the triggering window to the alert being published.",
            ["service", "detector"],
            buckets=DELAY_BUCKETS,
            registry=self.registry,
        )
        self.mentions = self.counter("textpulse_alert_mentions", "Mentions by outcome.", ["kind", "outcome"])
        self.push_failures = self.counter("textpulse_alert_push_failures", "Failed pushes.", ["target"])
        self.keys = Gauge("textpulse_alert_keys", "Keys with state.", ["service"], registry=self.registry)
        self.partitions = Gauge(
            "textpulse_alert_partitions",
            "entity.mentions partitions whose entity state this replica holds (follows rebalances).",
            ["service"],
            registry=self.registry,
        )
