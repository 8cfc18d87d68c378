"""Metrics of the recommend service: request latency, cache hit rate, candidates scored, state sizes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from textpulse.observability.metrics import LATENCY_BUCKETS, ServiceMetrics


class RecommendMetrics(ServiceMetrics):
    """Bounded labels: ``source`` (http | stream), ``result`` (hit | miss), ``scorer``."""

    def __init__(self) -> None:
        super().__init__("recommend")
        r = self.registry
        self.request_seconds = Histogram(
            "textpulse_recommend_request_seconds",
            "Time to produce one recommendation list (scoring + ranking, or a cache hit).",
            ["service", "source"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "textpulse_recommend_cache_requests",
            "Recommendation lookups by cache result; hit rate = hit / (hit + miss).",
            ["service", "result"],
            registry=r,
        )
        self.candidates = Counter(
            "textpulse_recommend_candidates_scored", "Catalogue items scored.", ["service", "source"], registry=r
        )
        self.fallbacks = Counter(
            "textpulse_recommend_popular_fallbacks",
            "Lists served from popularity (no profile).",
            ["service"],
            registry=r,
        )
        self.lists = Counter(
            "textpulse_recommend_lists",
            "Recommendation lists computed (cache misses) by scorer: ranker (LambdaRank), hybrid, popular.",
            ["service", "scorer"],
            registry=r,
        )
        self.embedded = Counter(
            "textpulse_recommend_items_embedded", "Catalogue items embedded.", ["service"], registry=r
        )
        self.catalogue_items = Gauge(
            "textpulse_recommend_catalogue_items", "Active catalogue items.", ["service"], registry=r
        )
        self.profiles = Gauge("textpulse_recommend_profiles", "User profiles in memory.", ["service"], registry=r)
        self.cf_refresh_seconds = Histogram(
            "textpulse_recommend_cf_refresh_seconds",
            "Time to rebuild item-kNN and popularity.",
            ["service"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
