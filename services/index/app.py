"""Wiring of the index service on the service kit (:mod:`textpulse.kit`): search API + Kafka subscribers.

Run: ``python -m services.index.app`` (port 8085). At start-up the service waits for
Elasticsearch and installs its index templates (``resources``), then starts consuming;
the retention job runs in the background. Tests pass their own broker and client.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

from elasticsearch import AsyncElasticsearch
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.observability.apikey import ApiSecuritySettings

from . import api, handlers
from .bulk import BulkWriter
from .documents import BuildOptions
from .indexer import SERVICE, Indexer
from .metrics import IndexMetrics
from .pii import install_log_redaction
from .settings import IndexSettings
from .store import install_templates, make_client, retention_loop, wait_for_es

Kit: TypeAlias = kit.Kit[IndexSettings, IndexMetrics]

API = kit.Api(
    title="textpulse index",
    description=(
        "Indexes enriched events (and routes, alerts) into Elasticsearch and serves search over them. "
        "PII (e-mails, phones, cards, IBANs) is redacted before indexing."
    ),
    routers=[api.router],
)


def resources(es: AsyncElasticsearch | None, retention: bool) -> Callable[[Kit], AbstractAsyncContextManager[Indexer]]:
    """Log redaction, the Elasticsearch client (``es``: the caller's, not closed here), templates, the indexer."""

    @asynccontextmanager
    async def opened(k: Kit) -> AsyncIterator[Indexer]:
        s, m = k.settings, k.metrics
        undo_redaction = install_log_redaction() if s.redact_pii else None
        client = es or make_client(s)
        k.state.es = client  # the search routes and readiness read it
        try:
            await wait_for_es(client, s.es_connect_timeout_s)
            await install_templates(client, s)
            writer = BulkWriter(
                client,
                chunk_docs=s.bulk_chunk_docs,
                chunk_bytes=s.bulk_chunk_bytes,
                initial_s=s.retry_initial_s,
                max_s=s.retry_max_s,
                deadline_s=s.retry_deadline_s,
                on_retry=lambda reason: m.bulk_retries.labels(SERVICE, reason[:40]).inc(),
            )
            if retention:
                k.background("retention", lambda: retention_loop(client, s))
            yield Indexer(
                writer=writer,
                dead_letters=k.dead_letters,
                metrics=m,
                options=BuildOptions(prefix=s.index_prefix, redact=s.redact_pii),
                concurrency=s.bulk_concurrency,
            )
        finally:
            # The kit stops the consumers first: no batch is writing when the client closes.
            if es is None:
                await client.close()
            if undo_redaction:
                undo_redaction()

    return opened


async def ready(k: Kit) -> bool:
    client: AsyncElasticsearch | None = getattr(k.state, "es", None)
    return client is not None and bool(await client.ping())


def started(k: Kit) -> Mapping[str, Any]:
    s = k.settings
    return {"topics": list(handlers.topics(s)), "es": s.es_url, "redact": s.redact_pii}


def service(
    es: AsyncElasticsearch | None = None, *, retention: bool = True
) -> kit.Service[IndexSettings, IndexMetrics]:
    return kit.Service(
        name=SERVICE,
        settings=IndexSettings,
        metrics=IndexMetrics,
        subscribe=handlers.subscribe,
        resources=resources(es, retention),
        exactly_once=False,  # an HTTP edge / an Elasticsearch sink: at-least-once, deduplicated downstream
        ready=ready,
        # The kit's group is the events family's (handlers.group_for): its lag is the one measured.
        lag_topics=lambda s: [s.topic_enriched],
        started=started,
        api=API,
    )


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

    ``lag_probe=False`` skips the DLQ size read and the lag probe. ``api_security`` (default:
    ``TEXTPULSE_API_*`` / ``TEXTPULSE_INDEX_API_*``) sets the API keys, the per-client rate limit
    and the body cap of the search API (``/health``, ``/ready``, ``/metrics`` stay open).
    """
    app: FastAPI = kit.build(
        service(es, retention=retention),
        settings,
        broker=broker,
        real_kafka=lag_probe,
        api_security=api_security,
        connect_timeout_s=connect_timeout_s,
    )
    return app


def _served(settings: IndexSettings) -> FastAPI:
    # The client logs every request at INFO (one line per bulk and per search): keep warnings only.
    logging.getLogger("elastic_transport.transport").setLevel(
        max(logging.WARNING, logging.getLevelName(settings.log_level))
    )
    return create_app(settings)


def main() -> None:
    kit.main(service(), _served)


if __name__ == "__main__":
    main()
