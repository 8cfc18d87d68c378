"""Observability: JSON logging, per-service Prometheus registry, ops endpoints, consumer lag."""

from .http import HttpMetricsMiddleware, ops_routes
from .logging import configure_logging
from .metrics import ServiceMetrics

__all__ = ["HttpMetricsMiddleware", "ServiceMetrics", "configure_logging", "ops_routes"]
