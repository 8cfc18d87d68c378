"""Wiring of the ingest service: FastAPI (HTTP edge, OpenAPI) + a FastStream Kafka broker.

Run: ``uvicorn services.ingest.app:app --host 127.0.0.1 --port 8080`` (or
``textpulse serve ingest``). Everything with a connection is created in the
lifespan and kept on ``app.state``; tests pass their own broker (e.g. under
``TestKafkaBroker``) to :func:`create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import textpulse
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from starlette.routing import Route
from textpulse.contracts import TextEventIn
from textpulse.contracts.services import consumer_group
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.admin import client_options
from textpulse.kafka.auth import check_auth
from textpulse.kafka.broker import start_with_retry
from textpulse.kafka.transactions import settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import HttpMetricsMiddleware, configure_logging
from textpulse.observability.apikey import ApiSecuritySettings, install_api_guard
from textpulse.observability.http import install_problem_handlers, ops_routes, problem_openapi, serve
from textpulse.observability.lag import LagMonitor
from textpulse.observability.tracing import instrument_asgi

from . import api, handlers
from .core import Ingestor
from .dedup import IdempotencyStore
from .metrics import IngestMetrics
from .settings import IngestSettings
from .warmup import warm_up

log = logging.getLogger(__name__)


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
    metrics = IngestMetrics()
    broker = broker or make_broker(settings.kafka, service="ingest", metrics=metrics)
    deps_ref: dict[str, handlers.EdgeDeps] = {}
    if settings.consume_text_in:
        handlers.register(broker, settings, deps_ref)
    handlers.declare_outputs(broker, settings)
    group_id = consumer_group(handlers.SERVICE, settings.group_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = IdempotencyStore(settings.dedup_capacity, settings.dedup_ttl_s)
        writer = RecordWriter(
            broker.publish,
            settings.topic_out,
            timeout_s=settings.publish_timeout_s,
            producer=lambda: faststream_producer(broker),
        )
        ingestor = Ingestor(writer, store)
        app.state.settings, app.state.ingestor, app.state.metrics = settings, ingestor, metrics
        deps_ref["edge"] = handlers.EdgeDeps(
            ingestor=ingestor,
            dead_letters=DeadLetters(
                broker.publish, service="ingest", topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
            ),
            metrics=metrics,
            topic=settings.topic_in,
        )
        lag: LagMonitor | None = None
        if real_kafka:
            # The warm-up's reader would report a refused login as a bare "Unable to bootstrap".
            await check_auth(client_options(settings.kafka))
            await warm_up(settings.kafka, settings.topic_out, store, per_partition=settings.dedup_warmup_records)
            if settings.kafka.flavor == "apache":
                # Dead letters are cut to the DLQ topic's own limit (Tansu keeps the 1 MiB default).
                await deps_ref["edge"].dead_letters.start()
        await start_with_retry(broker, connect_timeout_s)
        # Tansu answers OffsetFetch in a form aiokafka cannot decode: no lag probe there.
        if real_kafka and settings.consume_text_in and settings.kafka.flavor == "apache":
            lag = LagMonitor(settings.kafka, metrics, group_id, [settings.topic_in], settings.lag_refresh_s)
            lag.start()
        log.info("ingest started", extra={"topic_out": settings.topic_out, "text_in": settings.consume_text_in})
        try:
            yield
        finally:
            if lag:
                await lag.stop()
            await broker.stop()

    app = FastAPI(
        title="textpulse ingest",
        version=textpulse.__version__,
        description="Accepts text events over HTTP (and from the `text.in` topic) and writes them to `text.raw`.",
        lifespan=lifespan,
    )
    app.include_router(api.router)
    app.state.broker = broker

    async def ready() -> bool:
        return await broker.ping(timeout=2.0)

    for path, endpoint in ops_routes(metrics, ready):
        app.router.routes.append(Route(path, endpoint, methods=["GET"], include_in_schema=False))
    # Added before the metrics middleware so that it runs inside it: refusals (401/413/429) are counted.
    install_api_guard(app, _guard_settings(settings, api_security))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)

    # 422 of FastAPI's own checks (headers), 404, 405 and 500: the same problem body as the routes' errors.
    install_problem_handlers(app)
    # Last added, so outermost: every request (refusals included) starts or continues a trace (when on).
    instrument_asgi(app)
    # The routes read their bodies themselves (one error language): the event model is documented by hand.
    defs = TextEventIn.model_json_schema(ref_template="#/components/schemas/{model}")
    app.openapi = problem_openapi(app, {**defs.pop("$defs", {}), "TextEventIn": defs})  # type: ignore[method-assign]
    return app


def main() -> None:
    """Entry point: configure logging from settings and serve with uvicorn."""
    settings = settings_or_exit(IngestSettings, "ingest")
    configure_logging("ingest", settings.log_level, json=settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
