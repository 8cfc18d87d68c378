"""Consumer groups of the pipeline, their committed offsets and lag, probed while Kafka comes and goes."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from textpulse.contracts.services import consumer_group, runnable
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.settings import KafkaSettings

log = logging.getLogger(__name__)


def _groups() -> dict[str, tuple[str, ...]]:
    """Consumer group → the topics it reads, for the chaos stack's services (from the registry)."""
    groups: dict[str, tuple[str, ...]] = {}
    for spec in runnable(have={"models", "elasticsearch"}):
        for use in spec.inputs:
            group = consumer_group(spec.name, suffix=use.group_suffix)
            groups[group] = (*groups.get(group, ()), use.topic)
    return groups


#: consumer group → the topics it reads (the services' defaults, from the registry)
GROUPS: dict[str, tuple[str, ...]] = _groups()
#: component → the groups whose progress shows that it works again after a fault
PROGRESS_GROUPS: dict[str, tuple[str, ...]] = {
    **{spec.name: spec.groups for spec in runnable(have={"models", "elasticsearch"})},
    # Infrastructure: the services whose progress shows it is back.
    "triton": (consumer_group("classify"), consumer_group("ner")),
    "elasticsearch": (consumer_group("index"),),
    "kafka": tuple(consumer_group(name) for name in ("classify", "ner", "route", "index")),
}


@dataclass(frozen=True)
class GroupState:
    committed: int
    lag: int
    partitions: int

    def drained(self, tolerance_per_partition: int) -> bool:
        """Caught up: in exactly-once mode the input's last record is a transaction marker, which a
        committed offset never passes, so one offset per partition is tolerated there."""
        return self.lag <= tolerance_per_partition * self.partitions


class LagProbe:
    """One admin client and one consumer, re-created whenever the broker went away."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            admin = AIOKafkaAdminClient(**client_options(self.settings), request_timeout_ms=5000)  # type: ignore[arg-type]
            consumer = AIOKafkaConsumer(**client_options(self.settings), request_timeout_ms=5000)  # type: ignore[arg-type]
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await admin.close()
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self._admin, self._consumer = admin, consumer
        return self._admin, self._consumer

    async def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        self._admin = self._consumer = None

    async def group(self, group: str) -> GroupState | None:
        """Committed offsets (sum) and lag of ``group``; None while the broker does not answer."""
        try:
            admin, consumer = await self._clients()
            committed = await admin.list_consumer_group_offsets(group)
            tps = await topic_partitions(consumer, *GROUPS[group])
            ends = await consumer.end_offsets(tps) if tps else {}
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug("lag probe of %s failed: %r", group, exc)
            await self.close()
            return None
        done = 0
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else 0
            done += offset
            lag += max(0, ends[tp] - offset)
        return GroupState(done, lag, len(tps))

    async def end_offsets(self, topic: str) -> dict[TopicPartition, int] | None:
        try:
            _, consumer = await self._clients()
            tps = await topic_partitions(consumer, topic)
            return dict(await consumer.end_offsets(tps))
        except (KafkaError, OSError, TimeoutError):
            await self.close()
            return None
