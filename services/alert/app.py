"""Wiring of the alert service: a FastStream consumer app with the ops routes.

Run: ``python -m services.alert.app`` (or ``textpulse serve alert``), port 8083.
The detector file is validated before anything connects; topic keys (and
legacy entity keys) are restored from the changelog before the consumers start,
entity keys when the group assigns their ``entity.mentions`` partition
(:mod:`.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from textpulse.contracts.services import consumer_group
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.transactions import BatchRunner, batch_runner, settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import configure_logging, ops_routes
from textpulse.observability.http import OpsAsgiFastStream, serve
from textpulse.observability.lag import LagMonitor

from . import handlers
from .config import ConfigError, load_config
from .engine import Engine
from .metrics import AlertMetrics
from .notify import Notifier
from .partitions import PartitionState
from .processor import Outputs, Processor, TextCache
from .settings import AlertSettings

log = logging.getLogger(__name__)


def create_app(
    settings: AlertSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    http_client: httpx.AsyncClient | None = None,
    real_kafka: bool = True,
) -> AsgiFastStream:
    """Build the app; raises :class:`ConfigError` when the detector file is invalid.

    ``real_kafka=False`` skips the changelog restore and the lag probe (in-memory tests).
    """
    settings = settings or AlertSettings()
    config = load_config(settings.config_path)
    metrics = AlertMetrics()
    broker = broker or make_broker(settings.kafka, service="alert", metrics=metrics)
    texts = TextCache(settings.text_cache_size)
    engine = Engine(config, text_lookup=texts.get)
    kinds = {settings.topic_mentions: "mention", settings.topic_enriched: "enriched"}
    processor = Processor(engine, texts, metrics, topic_kind=kinds, dedup_offsets=real_kafka)
    partitions = PartitionState(processor, settings) if real_kafka else None
    if partitions is not None:
        partitions.hook()
    group_id = consumer_group(handlers.SERVICE, settings.group_id)
    runner = batch_runner(
        settings,
        service=handlers.SERVICE,
        group_id=group_id,
        on_abort=lambda: _rebuild(processor, lambda: Engine(config, text_lookup=texts.get), partitions),
    )
    handlers.register(broker, settings, processor, runner, listener=partitions)
    handlers.declare_outputs(broker, settings)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        client = http_client or httpx.AsyncClient(timeout=settings.push_timeout_s)
        processor.outputs = _outputs(settings, broker, client, metrics)
        if partitions is not None:
            restored = await partitions.start(engine)
            processor.refresh_gauges()
            # Not "alert state restored": that line is logged per assignment (entity state).
            log.info(
                "alert start-up state restored",
                extra={"records": restored, "keys": len(engine.keys), "open": len(engine.open_alerts())},
            )
        try:
            yield
        finally:
            await runner.close()
            if http_client is None:
                await client.aclose()

    async def after_startup() -> None:
        # The broker is connected now: publish outboxes restored from the changelog, start the re-push.
        async with processor.lock:
            await processor.flush()
        app_tasks.extend(_timers(processor, runner, settings))
        if real_kafka and settings.kafka.flavor == "apache":
            app_monitors.append(await _start_probes(processor, settings, metrics, group_id))
        log.info(
            "alert started",
            extra={"topics": list(kinds), "alertmanager": settings.alertmanager_url, "delivery": runner.delivery},
        )

    async def on_shutdown() -> None:
        for task in app_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for monitor in app_monitors:
            await monitor.stop()

    app_tasks: list[asyncio.Task[None]] = []
    app_monitors: list[LagMonitor] = []

    async def ready() -> bool:
        return await broker.ping(timeout=2.0)

    app = OpsAsgiFastStream(
        broker,
        # ops_routes types scopes as dict, FastStream as MutableMapping: the same ASGI callables.
        asgi_routes=ops_routes(metrics, ready),  # type: ignore[arg-type]
        lifespan=lifespan,
        after_startup=[after_startup],
        on_shutdown=[on_shutdown],
        logger=logging.getLogger("textpulse.alert.app"),
    )
    app.alert_processor = processor  # type: ignore[attr-defined]
    return app


def _outputs(settings: AlertSettings, broker: KafkaBroker, client: httpx.AsyncClient, metrics: AlertMetrics) -> Outputs:
    """Writers of the changelog, alerts and dead letters, and the optional notifier."""

    def writer(topic: str) -> RecordWriter:
        return RecordWriter(
            broker.publish,
            topic,
            timeout_s=settings.publish_timeout_s,
            producer=lambda: faststream_producer(broker),
        )

    notifier = None
    if settings.alertmanager_url or settings.webhook_url:
        notifier = Notifier(
            client,
            alertmanager_url=settings.alertmanager_url,
            webhook_url=settings.webhook_url,
            generator_url=settings.external_url,
            ttl_s=3 * settings.push_interval_s,
        )
    return Outputs(
        state=writer(settings.topic_state),
        alerts=writer(settings.topic_out),
        dead_letters=DeadLetters(
            broker.publish, service="alert", topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
        ),
        notifier=notifier,
    )


async def _start_probes(
    processor: Processor, settings: AlertSettings, metrics: AlertMetrics, group_id: str
) -> LagMonitor:
    """Read the DLQ topic's size limit and start the lag probe (real Apache Kafka only)."""
    assert processor.outputs is not None, "outputs are set in the lifespan"
    await processor.outputs.dead_letters.start()
    topics = [settings.topic_mentions] + ([settings.topic_enriched] if settings.consume_enriched else [])
    monitor = LagMonitor(settings.kafka, metrics, group_id, topics, settings.lag_refresh_s)
    monitor.start()
    return monitor


async def _rebuild(processor: Processor, new_engine: Callable[[], Engine], partitions: PartitionState | None) -> None:
    """After an aborted transaction: the engine in memory is ahead of the committed changelog
    (its writes were aborted with the offsets); rebuild it from the read_committed changelog:
    topic keys and the entity keys of the partitions this replica owns.
    """
    if partitions is None:  # exactly-once needs the real Kafka
        return
    async with processor.lock:
        fresh = new_engine()
        restored = await partitions.rebuild(fresh)
        processor.engine = fresh
        processor.refresh_gauges()
    log.info(
        "alert state rebuilt after an aborted transaction",
        extra={"records": restored, "owned": sorted(partitions.owned)},
    )


async def _repush(processor: Processor, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await processor.repush_open()
        except Exception:
            log.exception("re-push of open alerts failed")


def _timers(processor: Processor, runner: BatchRunner, settings: AlertSettings) -> list[asyncio.Task[None]]:
    """The Alertmanager re-push and the timer-driven window evaluation."""
    return [
        asyncio.create_task(_repush(processor, settings.push_interval_s), name="alert-repush"),
        asyncio.create_task(_tick(processor, runner, settings.tick_interval_s), name="alert-tick"),
    ]


async def _tick(processor: Processor, runner: BatchRunner, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await processor.tick(runner.run_alone)
        except Exception:
            log.exception("timer evaluation failed; the next tick or batch retries it")


def main() -> None:
    """Entry point: validate the detector file, then serve with uvicorn."""
    settings = settings_or_exit(AlertSettings, handlers.SERVICE)
    configure_logging("alert", settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        log.critical("invalid alert configuration: %s", exc)
        sys.exit(2)
    serve(app, settings)


if __name__ == "__main__":
    main()
