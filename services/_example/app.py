"""Wiring of the example service: ``python -m services._example.app``, port 8099."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faststream.kafka import KafkaBroker
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.transactions import batch_runner, settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import configure_logging, ops_routes
from textpulse.observability.http import OpsAsgiFastStream, serve
from textpulse.observability.metrics import ServiceMetrics

from . import handlers
from .settings import ExampleSettings


def create_app(settings: ExampleSettings | None = None, *, broker: KafkaBroker | None = None) -> OpsAsgiFastStream:
    settings = settings or ExampleSettings()
    metrics = ServiceMetrics(handlers.SERVICE)
    broker = broker or make_broker(settings.kafka, service=handlers.SERVICE, metrics=metrics)
    handlers.register(broker, settings)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        runner = batch_runner(settings, service=handlers.SERVICE)
        out = RecordWriter(broker.publish, settings.topic_out, producer=lambda: faststream_producer(broker))
        dlq = DeadLetters(
            broker.publish, service=handlers.SERVICE, topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
        )
        broker.context.set_global("deps", handlers.Deps(settings, out, dlq, runner))
        try:
            yield
        finally:
            await runner.close()

    async def ready() -> bool:
        return await broker.ping(timeout=2.0)

    # ops_routes types scopes as dict, FastStream as MutableMapping: the same ASGI callables.
    routes: list[Any] = ops_routes(metrics, ready)
    return OpsAsgiFastStream(broker, asgi_routes=routes, lifespan=lifespan, logger=logging.getLogger(__name__))


def main() -> None:
    settings = settings_or_exit(ExampleSettings, handlers.SERVICE)
    configure_logging(handlers.SERVICE, settings.log_level, json=settings.log_json)
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
