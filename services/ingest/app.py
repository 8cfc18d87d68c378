"""Wiring of the ingest service: FastAPI (HTTP edge, OpenAPI) + a FastStream Kafka broker (see textpulse.kit).

Run: ``python -m services.ingest.app`` or ``textpulse serve ingest`` (port 8080). Tests pass their
own broker (e.g. under ``TestKafkaBroker``) to :func:`create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.contracts import TextEventIn
from textpulse.kafka.admin import client_options
from textpulse.kafka.auth import check_auth
from textpulse.observability.apikey import ApiSecuritySettings

from . import api, handlers
from .core import Ingestor
from .dedup import IdempotencyStore
from .metrics import IngestMetrics
from .settings import IngestSettings
from .warmup import warm_up


@asynccontextmanager
async def resources(k: kit.Kit[IngestSettings, IngestMetrics]) -> AsyncIterator[handlers.EdgeDeps]:
    """The ingestor both edges share (``app.state.ingestor`` for the routes), its id window warmed from ``text.raw``."""
    settings = k.settings
    store = IdempotencyStore(settings.dedup_capacity, settings.dedup_ttl_s)
    ingestor = k.state.ingestor = Ingestor(k.writer(settings.topic_out), store)
    if k.real_kafka:
        # The warm-up's reader would report a refused login as a bare "Unable to bootstrap".
        await check_auth(client_options(settings.kafka))
        await warm_up(settings.kafka, settings.topic_out, store, per_partition=settings.dedup_warmup_records)
    yield handlers.EdgeDeps(ingestor, k.dead_letters, k.metrics, settings.topic_in)


def _schemas() -> dict[str, Any]:
    # The routes read their bodies themselves (one error language): the event model is documented by hand.
    defs = TextEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**defs.pop("$defs", {}), "TextEventIn": defs}


SERVICE = kit.Service(
    name=handlers.SERVICE,
    settings=IngestSettings,
    metrics=IngestMetrics,
    subscribe=handlers.subscribe,
    resources=resources,
    exactly_once=False,  # an HTTP edge / an Elasticsearch sink: at-least-once, deduplicated downstream
    lag_topics=lambda s: [s.topic_in] if s.consume_text_in else [],
    started=lambda k: {"topic_out": k.settings.topic_out, "text_in": k.settings.consume_text_in},
    api=kit.Api(
        title="textpulse ingest",
        description="Accepts text events over HTTP (and from the `text.in` topic) and writes them to `text.raw`.",
        routers=[api.router],
        schemas=_schemas(),
        trace_requests=True,
    ),
)


def _guard_settings(settings: IngestSettings, api_security: ApiSecuritySettings | None) -> ApiSecuritySettings:
    guard = api_security or ApiSecuritySettings.for_service("ingest")
    if "max_body_bytes" not in guard.model_fields_set:
        # The routes enforce their own, finer limits (413 too); the guard's cap only must not undercut them.
        guard = guard.model_copy(update={"max_body_bytes": max(settings.max_batch_bytes, settings.max_event_bytes)})
    return guard


def create_app(
    settings: IngestSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    connect_timeout_s: float = 60.0,
    real_kafka: bool = True,
    api_security: ApiSecuritySettings | None = None,
) -> FastAPI:
    """Build the ingest app. ``real_kafka=False`` skips the lag probe and warm-up (in-memory tests).

    ``api_security`` (default: ``TEXTPULSE_API_*`` / ``TEXTPULSE_INGEST_API_*``) sets the API keys,
    the per-client rate limit and the body cap of every path but ``/health``, ``/ready``, ``/metrics``.
    """
    settings = settings or IngestSettings()
    guard = _guard_settings(settings, api_security)
    app: FastAPI = kit.build(
        SERVICE, settings, broker=broker, real_kafka=real_kafka, api_security=guard, connect_timeout_s=connect_timeout_s
    )
    return app


def main() -> None:
    kit.main(SERVICE, create_app)


if __name__ == "__main__":
    main()
