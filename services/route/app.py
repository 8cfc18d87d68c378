"""Wiring of the route service: a FastStream consumer app with the ops routes.

Run: ``python -m services.route.app`` (or ``textpulse serve route``), port 8084.
The rules file is validated before anything connects: a bad file stops the
service with the offending rule named.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from textpulse.contracts.services import consumer_group
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.transactions import batch_runner, settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import configure_logging, ops_routes
from textpulse.observability.http import OpsAsgiFastStream, serve
from textpulse.observability.lag import LagMonitor

from . import handlers
from .metrics import RouteMetrics
from .rules import RulesError, load_rules
from .settings import RouteSettings

log = logging.getLogger(__name__)


def create_app(
    settings: RouteSettings | None = None, *, broker: KafkaBroker | None = None, real_kafka: bool = True
) -> AsgiFastStream:
    """Build the app; raises :class:`RulesError` when the rules file is invalid."""
    settings = settings or RouteSettings()
    rules = load_rules(settings.rules_path)
    metrics = RouteMetrics()
    broker = broker or make_broker(settings.kafka, service="route", metrics=metrics)
    deps_ref: dict[str, handlers.RouteDeps] = {}
    runner = batch_runner(settings, service=handlers.SERVICE)
    handlers.register(broker, settings, deps_ref, runner)
    handlers.declare_outputs(broker, settings, rules)
    monitors: list[LagMonitor] = []

    def writer(topic: str) -> RecordWriter:
        return RecordWriter(
            broker.publish, topic, timeout_s=settings.publish_timeout_s, producer=lambda: faststream_producer(broker)
        )

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        deps_ref["route"] = handlers.RouteDeps(
            rules=rules,
            routed=writer(settings.topic_out),
            queues={q: writer(f"{settings.queue_topic_prefix}{q}") for q in rules.queues},
            dead_letters=DeadLetters(
                broker.publish, service="route", topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
            ),
            metrics=metrics,
            topic=settings.topic_in,
            seen=RecentIds() if runner.delivery == "at_least_once" else None,
        )
        try:
            yield
        finally:
            await runner.close()

    async def after_startup() -> None:
        if real_kafka and settings.kafka.flavor == "apache":
            await deps_ref["route"].dead_letters.start()
            group = consumer_group(handlers.SERVICE, settings.group_id)
            monitor = LagMonitor(settings.kafka, metrics, group, [settings.topic_in], settings.lag_refresh_s)
            monitor.start()
            monitors.append(monitor)
        log.info(
            "route started",
            extra={"rules": str(settings.rules_path), "rules_version": rules.version, "delivery": runner.delivery},
        )

    async def on_shutdown() -> None:
        for monitor in monitors:
            await monitor.stop()

    async def ready() -> bool:
        return await broker.ping(timeout=2.0)

    return OpsAsgiFastStream(
        broker,
        # ops_routes types scopes as dict, FastStream as MutableMapping: the same ASGI callables.
        asgi_routes=ops_routes(metrics, ready),  # type: ignore[arg-type]
        lifespan=lifespan,
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        logger=logging.getLogger("textpulse.route.app"),
    )


def main() -> None:
    """Entry point: validate the rules, then serve with uvicorn."""
    settings = settings_or_exit(RouteSettings, handlers.SERVICE)
    configure_logging("route", settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except RulesError as exc:
        log.critical("invalid routing rules: %s", exc)
        sys.exit(2)
    serve(app, settings)


if __name__ == "__main__":
    main()
