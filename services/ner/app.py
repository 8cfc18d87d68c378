"""Wiring of the NER service: a FastStream Kafka consumer with ops endpoints.

Run: ``python -m services.ner.app`` (uvicorn on ``TEXTPULSE_NER_HTTP_PORT``,
default 8082: ``/health``, ``/ready``, ``/metrics``). The inference backend is
Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process. Clients are
built in the lifespan; tests pass their own broker and backend to
:func:`create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from faststream.kafka import KafkaBroker
from textpulse.contracts.services import consumer_group
from textpulse.inference import InferenceBackend
from textpulse.inference.metrics import InferenceMetrics
from textpulse.inference.settings import make_backend
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.transactions import batch_runner, settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import configure_logging
from textpulse.observability.http import OpsAsgiFastStream, ops_routes, serve
from textpulse.observability.lag import LagMonitor

from . import handlers
from .core import Enricher
from .settings import NerSettings

log = logging.getLogger(__name__)


@dataclass
class AppState:
    """What the readiness probe, tests and the AsyncAPI generator read off the app."""

    broker: KafkaBroker
    metrics: InferenceMetrics
    backend: InferenceBackend | None = None


class NerApp(OpsAsgiFastStream):
    """The ASGI app plus its :class:`AppState`."""

    state: AppState


def create_app(
    settings: NerSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    backend: InferenceBackend | None = None,
    real_kafka: bool = True,
) -> NerApp:
    """Build the NER app. ``real_kafka=False`` skips the lag probe (in-memory tests)."""
    settings = settings or NerSettings()
    metrics = InferenceMetrics(handlers.SERVICE)
    broker = broker or make_broker(settings.kafka, service=handlers.SERVICE, metrics=metrics)
    deps_ref: dict[str, handlers.Deps] = {}
    group_id = consumer_group(handlers.SERVICE, settings.group_id)
    runner = batch_runner(settings, service=handlers.SERVICE, group_id=group_id)
    handlers.register(broker, settings, deps_ref, runner)
    state = AppState(broker=broker, metrics=metrics)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        inference = backend or make_backend(settings.inference, observe=metrics.observe, on_error=metrics.error)
        metrics.watch(inference)
        metrics.drift_window = settings.inference.drift_window
        metrics.drift_min_samples = settings.inference.drift_min_samples
        enricher = Enricher(inference, settings.ner_model, use_cashtags=settings.cashtags)
        await inference.start([settings.ner_model])
        state.backend = inference

        def writer(topic: str) -> RecordWriter:
            return RecordWriter(
                broker.publish,
                topic,
                timeout_s=settings.publish_timeout_s,
                producer=lambda: faststream_producer(broker),
            )

        deps_ref["deps"] = handlers.Deps(
            enricher=enricher,
            enriched_writer=writer(settings.topic_out),
            mentions_writer=writer(settings.topic_mentions),
            dead_letters=DeadLetters(
                broker.publish,
                service=handlers.SERVICE,
                topic=settings.topic_dlq,
                kafka=settings.kafka,
                metrics=metrics,
            ),
            metrics=metrics,
            settings=settings,
            seen=RecentIds() if runner.delivery == "at_least_once" else None,
        )
        lag: LagMonitor | None = None
        if real_kafka and settings.kafka.flavor == "apache":
            await deps_ref["deps"].dead_letters.start()
            lag = LagMonitor(settings.kafka, metrics, group_id, [settings.topic_in], settings.lag_refresh_s)
            lag.start()
        log.info(
            "ner started",
            extra={
                "backend": inference.name,
                "model": settings.ner_model,
                "version": inference.info(settings.ner_model).version,
                "delivery": runner.delivery,
            },
        )
        try:
            yield
        finally:
            if lag:
                await lag.stop()
            await runner.close()
            await inference.close()

    async def ready() -> bool:
        inference = state.backend
        return inference is not None and await inference.ready() and await broker.ping(timeout=2.0)

    app = NerApp(
        broker,
        asgi_routes=ops_routes(metrics, ready),  # type: ignore[arg-type]  # dict vs MutableMapping scope
        lifespan=lifespan,
        logger=logging.getLogger("textpulse.ner.app"),
    )
    app.state = state
    return app


def main() -> None:
    """Entry point: configure logging from settings and serve with uvicorn."""
    settings = settings_or_exit(NerSettings, handlers.SERVICE)
    configure_logging(handlers.SERVICE, settings.log_level, json=settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
