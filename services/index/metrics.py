"""Index service metrics: the standard set plus documents by family and outcome, bulk retries."""

from __future__ import annotations

from prometheus_client import Histogram
from textpulse.observability.metrics import LATENCY_BUCKETS, ServiceMetrics


class IndexMetrics(ServiceMetrics):
    def __init__(self) -> None:
        super().__init__("index")
        self.documents = self.counter(
            "textpulse_index_documents",
            "Documents by family and outcome (indexed, rejected, invalid).",
            ["family", "outcome"],
        )
        self.bulk_retries = self.counter(
            "textpulse_index_bulk_retries", "Bulk passes retried (Elasticsearch down, 429, 5xx).", ["reason"]
        )
        self.bulk_duration = Histogram(
            "textpulse_index_bulk_duration_seconds",
            "Time to write one consumed batch to Elasticsearch, retries included.",
            ["service", "family"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.search_hits = self.counter("textpulse_index_searches", "Search API calls by endpoint.", ["endpoint"])
