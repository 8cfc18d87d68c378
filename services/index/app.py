"""Wiring of the index service: FastAPI (search API, OpenAPI) + FastStream Kafka subscribers.

Run: ``python -m services.index.app`` (port 8085). The Elasticsearch client and
the broker are created in the lifespan and kept on ``app.state``; tests pass
their own to :func:`create_app`. At start-up the service waits for
Elasticsearch, installs its index templates, then starts consuming; the
retention job runs in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import textpulse
from elasticsearch import AsyncElasticsearch
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from starlette.routing import Route
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.broker import start_with_retry
from textpulse.kafka.transactions import settings_or_exit
from textpulse.observability import HttpMetricsMiddleware, configure_logging
from textpulse.observability.apikey import ApiSecuritySettings, install_api_guard
from textpulse.observability.http import install_problem_handlers, ops_routes, serve
from textpulse.observability.lag import LagMonitor

from . import api, handlers
from .bulk import BulkWriter
from .documents import BuildOptions
from .indexer import SERVICE, Indexer
from .metrics import IndexMetrics
from .pii import install_log_redaction
from .settings import IndexSettings
from .store import install_templates, make_client, retention_loop, wait_for_es

log = logging.getLogger(__name__)


def create_app(
    settings: IndexSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    es: AsyncElasticsearch | None = None,
    connect_timeout_s: float = 60.0,
    lag_probe: bool = True,
    retention: bool = True,
    api_security: ApiSecuritySettings | None = None,
) -> FastAPI:
    """Build the index app; a passed ``es`` client is not closed by the app.

    ``api_security`` (default: ``TEXTPULSE_API_*`` / ``TEXTPULSE_INDEX_API_*``) sets the API keys,
    the per-client rate limit and the body cap of the search API (``/health``, ``/ready``,
    ``/metrics`` stay open).
    """
    settings = settings or IndexSettings()
    metrics = IndexMetrics()
    broker = broker or make_broker(settings.kafka, service=SERVICE, metrics=metrics)
    deps_ref: dict[str, Indexer] = {}
    handlers.register(broker, settings, deps_ref)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        undo_redaction = install_log_redaction() if settings.redact_pii else None
        client = es or make_client(settings)
        app.state.es, app.state.settings, app.state.metrics = client, settings, metrics
        background: list[asyncio.Task[None]] = []
        lag: LagMonitor | None = None
        try:
            await wait_for_es(client, settings.es_connect_timeout_s)
            await install_templates(client, settings)
            writer = BulkWriter(
                client,
                chunk_docs=settings.bulk_chunk_docs,
                chunk_bytes=settings.bulk_chunk_bytes,
                initial_s=settings.retry_initial_s,
                max_s=settings.retry_max_s,
                deadline_s=settings.retry_deadline_s,
                on_retry=lambda reason: metrics.bulk_retries.labels(SERVICE, reason[:40]).inc(),
            )
            deps_ref["indexer"] = Indexer(
                writer=writer,
                dead_letters=DeadLetters(
                    broker.publish, service=SERVICE, topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
                ),
                metrics=metrics,
                options=BuildOptions(prefix=settings.index_prefix, redact=settings.redact_pii),
                concurrency=settings.bulk_concurrency,
            )
            await start_with_retry(broker, connect_timeout_s)
            if lag_probe and settings.kafka.flavor == "apache":
                await deps_ref["indexer"].dead_letters.start()
                lag = LagMonitor(
                    settings.kafka,
                    metrics,
                    handlers.group_for(settings, "events"),
                    [settings.topic_enriched],
                    settings.lag_refresh_s,
                )
                lag.start()
            if retention:
                background.append(asyncio.create_task(retention_loop(client, settings), name="index-retention"))
            log.info(
                "index started",
                extra={"topics": list(handlers.topics(settings)), "es": settings.es_url, "redact": settings.redact_pii},
            )
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if lag:
                await lag.stop()
            await broker.stop()
            if es is None:
                await client.close()
            if undo_redaction:
                undo_redaction()

    app = FastAPI(
        title="textpulse index",
        version=textpulse.__version__,
        description=(
            "Indexes enriched events (and routes, alerts) into Elasticsearch and serves search over them. "
            "PII (e-mails, phones, cards, IBANs) is redacted before indexing."
        ),
        lifespan=lifespan,
    )
    app.include_router(api.router)
    app.state.broker = broker

    async def ready() -> bool:
        client: AsyncElasticsearch | None = getattr(app.state, "es", None)
        return client is not None and await client.ping() and await broker.ping(timeout=2.0)

    for path, endpoint in ops_routes(metrics, ready):
        app.router.routes.append(Route(path, endpoint, methods=["GET"], include_in_schema=False))
    # Added before the metrics middleware so that it runs inside it: refusals (401/413/429) are counted.
    install_api_guard(app, api_security or ApiSecuritySettings.for_service(SERVICE))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)

    # Every error (422, 404, 405, 503 of HTTPException) is the shared RFC 9457 problem body.
    install_problem_handlers(app)

    return app


def main() -> None:
    """Entry point: configure logging from settings and serve with uvicorn."""
    settings = settings_or_exit(IndexSettings, SERVICE)
    configure_logging(SERVICE, settings.log_level, json=settings.log_json)
    # The client logs every request at INFO (one line per bulk and per search): keep warnings only.
    logging.getLogger("elastic_transport.transport").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
