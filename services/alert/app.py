"""Wiring of the alert service on the service kit (:mod:`textpulse.kit`).

Run: ``python -m services.alert.app`` (or ``textpulse serve alert``), port 8083.
The detector file is validated when the app is built, before anything connects
(an invalid one: exit 2); topic keys (and legacy entity keys) are restored from
the changelog before the consumers start, entity keys when the group assigns
their ``entity.mentions`` partition (:mod:`.partitions`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import httpx
from faststream.kafka import KafkaBroker
from textpulse import kit

from . import handlers
from .config import AlertConfig, ConfigError, load_config
from .engine import Engine
from .metrics import AlertMetrics
from .notify import Notifier
from .partitions import PartitionState
from .processor import Outputs, Processor, TextCache
from .settings import AlertSettings

log = logging.getLogger(__name__)
Kit: TypeAlias = kit.Kit[AlertSettings, AlertMetrics]


class Alert:
    """One alert app: the state that outlives a batch, and the kit's hooks around it (:meth:`service`).

    The description is per app because its hooks share that state (and the tests' ``http_client``).
    """

    def __init__(self, http_client: httpx.AsyncClient | None = None) -> None:
        #: The notifier's client (tests); None: one of the app's own, closed at shutdown.
        self.http_client = http_client
        # Set by subscribe, while the app is built.
        self.config: AlertConfig
        self.texts: TextCache
        self.processor: Processor
        #: The rebalance listener restoring per-partition state (None in-memory: no changelog, no real partitions).
        self.partitions: PartitionState | None

    def service(self) -> kit.Service[AlertSettings, AlertMetrics]:
        return kit.Service(
            name=handlers.SERVICE,
            settings=AlertSettings,
            metrics=AlertMetrics,
            subscribe=self.subscribe,
            resources=self.resources,
            lag_topics=handlers.topics,
            after_start=self.flush_restored,
            started=self.started,
            config_errors=(ConfigError,),
        )

    def engine(self) -> Engine:
        return Engine(self.config, text_lookup=self.texts.get)

    def subscribe(self, k: Kit) -> None:
        """The detector file (:class:`ConfigError` before anything connects), the processor, the subscriber."""
        s = k.settings
        self.config = load_config(s.config_path)
        self.texts = TextCache(s.text_cache_size)
        kinds = {s.topic_mentions: "mention", s.topic_enriched: "enriched"}
        self.processor = Processor(self.engine(), self.texts, k.metrics, topic_kind=kinds, dedup_offsets=k.real_kafka)
        self.partitions = PartitionState(self.processor, s) if k.real_kafka else None
        if self.partitions is not None:
            self.partitions.hook()
            k.on_abort = self.rebuild  # exactly-once needs the real Kafka
        handlers.subscribe(k, self.partitions)
        k.background("repush", lambda: self.repush(k))
        k.background("tick", lambda: self.tick(k))

    @asynccontextmanager
    async def resources(self, k: Kit) -> AsyncIterator[Processor]:
        """The outputs (changelog, alerts, dead letters, notifier) and the start-up state restore."""
        s = k.settings
        client = self.http_client or httpx.AsyncClient(timeout=s.push_timeout_s)
        try:
            notifier = None
            if s.alertmanager_url or s.webhook_url:
                notifier = Notifier(
                    client,
                    alertmanager_url=s.alertmanager_url,
                    webhook_url=s.webhook_url,
                    generator_url=s.external_url,
                    ttl_s=3 * s.push_interval_s,
                )
            state, alerts = k.writer(s.topic_state), k.writer(s.topic_out)
            self.processor.outputs = Outputs(state=state, alerts=alerts, dead_letters=k.dead_letters, notifier=notifier)
            if self.partitions is not None:
                engine = self.processor.engine
                restored = await self.partitions.start(engine)
                self.processor.refresh_gauges()
                # Not "alert state restored": that line is logged per assignment (entity state).
                log.info(
                    "alert start-up state restored",
                    extra={"records": restored, "keys": len(engine.keys), "open": len(engine.open_alerts())},
                )
            yield self.processor
        finally:
            if self.http_client is None:
                await client.aclose()

    async def flush_restored(self, _k: Kit) -> None:
        """The broker is connected now: publish the outboxes restored from the changelog."""
        async with self.processor.lock:
            await self.processor.flush()

    def started(self, k: Kit) -> Mapping[str, Any]:
        s = k.settings
        return {"topics": [s.topic_mentions, s.topic_enriched], "alertmanager": s.alertmanager_url}

    async def rebuild(self) -> None:
        """After an aborted transaction: the engine in memory is ahead of the committed changelog
        (its writes were aborted with the offsets); rebuild it from the read_committed changelog:
        topic keys and the entity keys of the partitions this replica owns.
        """
        assert self.partitions is not None, "set only with a rebalance listener"
        async with self.processor.lock:
            fresh = self.engine()
            restored = await self.partitions.rebuild(fresh)
            self.processor.engine = fresh
            self.processor.refresh_gauges()
        log.info(
            "alert state rebuilt after an aborted transaction",
            extra={"records": restored, "owned": sorted(self.partitions.owned)},
        )

    async def repush(self, k: Kit) -> None:
        """Open alerts again to Alertmanager (``endsAt`` ahead), which catches up after an outage."""
        while True:
            await asyncio.sleep(k.settings.push_interval_s)
            try:
                await self.processor.repush_open()
            except Exception:
                log.exception("re-push of open alerts failed")

    async def tick(self, k: Kit) -> None:
        """The timer-driven window evaluation while no batch arrives (exactly-once: a transaction of its own)."""
        while True:
            await asyncio.sleep(k.settings.tick_interval_s)
            try:
                await self.processor.tick(k.runner.run_alone)
            except Exception:
                log.exception("timer evaluation failed; the next tick or batch retries it")


def create_app(
    settings: AlertSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    http_client: httpx.AsyncClient | None = None,
    real_kafka: bool = True,
) -> Any:
    """Build the app; raises :class:`ConfigError` when the detector file is invalid.

    ``real_kafka=False`` skips the changelog restore and the lag probe (in-memory tests).
    """
    alert = Alert(http_client)
    app = kit.build(alert.service(), settings, broker=broker, real_kafka=real_kafka)
    app.alert_processor = alert.processor  # read by tests and the bench
    return app


def main() -> None:
    kit.main(Alert().service(), create_app)


if __name__ == "__main__":
    main()
