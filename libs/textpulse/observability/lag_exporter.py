"""Consumer-group lag measured once, from beside the broker: ``textpulse lag-exporter``.

What it exports, per consumer group of textpulse, topic and partition (``service`` is the
consuming service, read from the group name ``textpulse-<service>[-<suffix>]``):

- ``textpulse_consumer_group_lag``: records behind (partition end offset − committed offset);
- ``textpulse_consumer_group_lag_seconds``: age of the oldest unconsumed record, i.e. now − the
  timestamp of the first readable record at or after the committed offset (0 when caught up);
- ``textpulse_consumer_group_members``: members of the group (0 while its consumers are down);
- ``textpulse_lag_exporter_last_success_timestamp_seconds``: when the last probe succeeded.

Design, and why:

- **An exporter beside the broker, not a probe in every replica.** The in-service
  :class:`~textpulse.observability.lag.LagMonitor` runs in each replica; when each reported the
  whole group's lag, ``sum by (service)`` multiplied it by the replica count, and it vanished with
  the service, exactly when lag matters. Committed offsets live in the broker, so one process that
  reads them measures each partition exactly once whatever the replica count, and keeps
  reporting while every consumer of a group is down (committed offsets outlive the members for
  the broker's ``offsets.retention.minutes``). An elected probe inside the services would still
  vanish with them and would need a leader election; one small Deployment (or process) is
  simpler. It must run as **one** replica (two would each export every partition; the recording
  rules take a ``max`` per partition, so a second one during a rollout does no harm).
- The replicas keep their own ``textpulse_consumer_lag``, now only for the partitions each one
  holds (:data:`~textpulse.observability.progress.ASSIGNED`), so their sum is right too; the
  recording rules read the exporter's series and fall back to it where no exporter runs.
- **Which groups and topics:** every group whose name starts with ``--group-prefix``
  (``textpulse-``), on every topic it has committed offsets for (its input topics); all partitions
  of such a topic are reported, a partition without a commit counting from its first offset
  (the services start a new group at ``earliest``). A group named otherwise
  (``TEXTPULSE_<SERVICE>_GROUP_ID``) is added with ``--group NAME=SERVICE``.
- **Seconds, fetched cheaply:** the record at a committed offset never changes, so its timestamp
  is fetched once per (partition, committed offset), with a ``read_committed`` consumer without a
  group (one small fetch, ``max_partition_fetch_bytes`` 64 KiB), and only for partitions with
  lag; a group that does not move costs no fetch at all, so the age of a stopped group's oldest
  record grows by the clock alone. Timestamps are the topic's (``CreateTime``: the producer's
  clock; ``LogAppendTime``: the broker's). On a transactional topic a caught-up group has a lag of
  1 (the commit marker) and no readable record: its age is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Gauge

import textpulse
from textpulse.contracts.services import GROUP_PREFIX
from textpulse.settings import KafkaSettings

log = logging.getLogger(__name__)

#: The ``service`` label of the exporter's own series.
SERVICE = "lag-exporter"
DEFAULT_PREFIX = GROUP_PREFIX
DEFAULT_PORT = 9309


def service_of(group: str, prefix: str = DEFAULT_PREFIX, overrides: Mapping[str, str] | None = None) -> str | None:
    """The consuming service of ``group`` (``textpulse-index-routes`` -> ``index``), None for a foreign group."""
    if overrides and group in overrides:
        return overrides[group]
    if not group.startswith(prefix) or len(group) == len(prefix):
        return None
    # Service names have no hyphen; a suffix names one more group of the same service (index).
    return group[len(prefix) :].split("-", 1)[0] or None


def age_seconds(now_ms: int, committed: int, end: int, oldest_ms: int | None) -> float:
    """Age of the oldest unconsumed record: 0 when nothing readable waits, never negative (clock skew)."""
    if end <= committed or oldest_ms is None:
        return 0.0
    return max(0.0, (now_ms - oldest_ms) / 1000.0)


@dataclass(frozen=True)
class PartitionLag:
    """One group's position on one partition."""

    group: str
    service: str
    tp: TopicPartition
    committed: int
    end: int
    oldest_ms: int | None

    @property
    def records(self) -> int:
        return max(0, self.end - self.committed)

    def seconds(self, now_ms: int) -> float:
        return age_seconds(now_ms, self.committed, self.end, self.oldest_ms)


class OldestRecords:
    """Timestamps of the first readable record at or after an offset, fetched once per (partition, offset).

    Only found records are kept: "nothing readable before the end" is no fact about the offset
    (records arrive later); a found record's timestamp is (the log below the stable offset never changes).
    """

    def __init__(self) -> None:
        self._known: dict[tuple[TopicPartition, int], int] = {}

    def get(self, tp: TopicPartition, offset: int) -> int | None:
        return self._known.get((tp, offset))

    def keep_only(self, wanted: Iterable[tuple[TopicPartition, int]]) -> None:
        """Forget the offsets no group sits at any more (bounded by groups × partitions)."""
        keep = set(wanted)
        for key in [k for k in self._known if k not in keep]:
            del self._known[key]

    async def fetch(
        self, consumer: AIOKafkaConsumer, wanted: Iterable[tuple[TopicPartition, int, int]], timeout_s: float = 5.0
    ) -> None:
        """Fetch what is not known yet of ``(tp, offset, end)``; several groups on one partition take rounds."""
        rounds: list[dict[TopicPartition, tuple[int, int]]] = []
        for tp, start, end in wanted:
            if end <= start or (tp, start) in self._known:
                continue
            for batch in rounds:
                if tp not in batch:
                    batch[tp] = (start, end)
                    break
            else:
                rounds.append({tp: (start, end)})
        for batch in rounds:
            found = await first_timestamps(consumer, batch, timeout_s)
            for tp, ts in found.items():
                if ts is not None:
                    self._known[(tp, batch[tp][0])] = ts


async def first_timestamps(
    consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, tuple[int, int]], timeout_s: float
) -> dict[TopicPartition, int | None]:
    """Timestamp (ms) of the first readable record in ``[start, end)`` of each partition, None if there is none.

    Partitions undecided at the deadline are left out (the next probe tries again).
    """
    consumer.assign(list(starts))
    for tp, (start, _) in starts.items():
        consumer.seek(tp, start)
    out: dict[TopicPartition, int | None] = {}
    pending = set(starts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and loop.time() < deadline:
        got = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in got.items():
            start, end = starts[tp]
            first = next((r for r in records if start <= r.offset < end), None)
            if first is not None and tp in pending:
                out[tp] = first.timestamp
                pending.discard(tp)
        for tp in list(pending):
            if await consumer.position(tp) >= starts[tp][1]:
                # Only commit markers or aborted records up to the end: nothing readable waits.
                out[tp] = None
                pending.discard(tp)
        # No prefetching of partitions that are settled.
        consumer.pause(*[tp for tp in starts if tp not in pending])
    return out


class LagExporter:
    """Probes every textpulse group's committed offsets and publishes the lag series in :attr:`registry`."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        interval_s: float = 15.0,
        prefix: str = DEFAULT_PREFIX,
        groups: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.prefix = prefix
        self.groups = dict(groups or {})
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.oldest = OldestRecords()
        labels = ["service", "group", "topic", "partition"]
        self.lag = Gauge(
            "textpulse_consumer_group_lag",
            "End offset minus the group's committed offset, in records (measured once, by the lag exporter).",
            labels,
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "textpulse_consumer_group_lag_seconds",
            "Age of the oldest unconsumed record: now minus the timestamp of the record at the committed offset.",
            labels,
            registry=self.registry,
        )
        self.members = Gauge(
            "textpulse_consumer_group_members",
            "Members of the consumer group (0 while its consumers are down).",
            ["service", "group"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "textpulse_lag_exporter_last_success_timestamp_seconds",
            "Unix time of the lag exporter's last successful probe.",
            ["service"],
            registry=self.registry,
        )
        Gauge("textpulse_build_info", "Build information.", ["service", "version"], registry=self.registry).labels(
            SERVICE, textpulse.__version__
        ).set(1)
        self._series: set[tuple[str, str, str, str]] = set()
        self._group_series: set[tuple[str, str]] = set()

    async def groups_to_probe(self, admin: AIOKafkaAdminClient) -> dict[str, str]:
        """Group -> service: the groups with the prefix, and the ``groups`` named explicitly."""
        found = dict(self.groups)
        for entry in await admin.list_consumer_groups():
            group = entry[0]
            service = service_of(group, self.prefix, self.groups)
            if service is not None:
                found[group] = service
        return found

    async def probe(
        self, admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, *, now_ms: int | None = None
    ) -> list[PartitionLag]:
        """One measurement of every group; updates the series and returns what it measured."""
        groups = await self.groups_to_probe(admin)
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in sorted(groups):
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta is not None}
        topics = sorted({tp.topic for offsets in committed.values() for tp in offsets})
        partitions = await _partitions(admin, topics)
        all_tps = [tp for topic in topics for tp in partitions.get(topic, ())]
        ends = await consumer.end_offsets(all_tps) if all_tps else {}
        starts = await consumer.beginning_offsets(all_tps) if all_tps else {}
        rows: list[tuple[str, str, TopicPartition, int, int]] = []
        for group, offsets in committed.items():
            for topic in sorted({tp.topic for tp in offsets}):
                for tp in partitions.get(topic, ()):
                    done = offsets.get(tp, -1)
                    # No commit yet (or below the log start after retention): the consumer starts at the first offset.
                    rows.append((group, groups[group], tp, max(done, starts[tp]), ends[tp]))
        self.oldest.keep_only((tp, done) for _, _, tp, done, _ in rows)
        await self.oldest.fetch(consumer, ((tp, done, end) for _, _, tp, done, end in rows))
        measured = [PartitionLag(g, s, tp, done, end, self.oldest.get(tp, done)) for g, s, tp, done, end in rows]
        self.publish(measured, await _members(admin, list(groups)), groups, now_ms=now_ms)
        return measured

    def publish(
        self,
        measured: Sequence[PartitionLag],
        members: Mapping[str, int],
        groups: Mapping[str, str],
        *,
        now_ms: int | None = None,
    ) -> None:
        """Set the series of this probe and remove those of partitions and groups gone since the last one."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        series: set[tuple[str, str, str, str]] = set()
        for row in measured:
            labels = (row.service, row.group, row.tp.topic, str(row.tp.partition))
            series.add(labels)
            self.lag.labels(*labels).set(row.records)
            self.lag_seconds.labels(*labels).set(row.seconds(now_ms))
        for labels in self._series - series:
            self.lag.remove(*labels)
            self.lag_seconds.remove(*labels)
        self._series = series
        group_series: set[tuple[str, str]] = set()
        for group, service in groups.items():
            group_series.add((service, group))
            self.members.labels(service, group).set(members.get(group, 0))
        for gone in self._group_series - group_series:
            self.members.remove(*gone)
        self._group_series = group_series
        self.last_success.labels(SERVICE).set(now_ms / 1000.0)

    async def run(self) -> None:
        """Probe every ``interval_s`` until cancelled; a broker outage is logged and retried."""
        from textpulse.settings import client_options

        opts = client_options(self.settings)
        warned = False
        while True:
            admin = AIOKafkaAdminClient(**opts)  # type: ignore[arg-type]
            # read_committed: end offsets are the last stable ones, and no aborted record is taken for the oldest.
            consumer = AIOKafkaConsumer(
                **opts,  # type: ignore[arg-type]
                isolation_level="read_committed",
                enable_auto_commit=False,
                max_partition_fetch_bytes=64 * 1024,
            )
            try:
                await admin.start()
                await consumer.start()
                while True:
                    started = time.monotonic()
                    await self.probe(admin, consumer)
                    if warned:
                        log.info("lag exporter probes again")
                        warned = False
                    await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - started)))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep exporting the last values and retry
                if not warned:
                    log.warning("lag exporter probe failed; retrying", extra={"error": repr(exc)})
                    warned = True
                await asyncio.sleep(self.interval_s)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                with contextlib.suppress(Exception):
                    await admin.close()


async def _partitions(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, list[TopicPartition]]:
    """Partitions of the topics that exist (a deleted topic keeps its group's commits for a while)."""
    if not topics:
        return {}
    described = await admin.describe_topics(list(topics))
    return {
        d["topic"]: [TopicPartition(d["topic"], p["partition"]) for p in sorted(d["partitions"], key=_partition_id)]
        for d in described
        if d.get("error_code", 0) == 0 and d.get("partitions")
    }


def _partition_id(p: Mapping[str, int]) -> int:
    return p["partition"]


async def _members(admin: AIOKafkaAdminClient, groups: Sequence[str]) -> dict[str, int]:
    """Group -> member count (DescribeGroups: each group is ``(error, group, state, protocol type, protocol,
    members, ...)``)."""
    out: dict[str, int] = {}
    # One group per request: aiokafka 0.14 fails to decode a DescribeGroups answer holding several
    # groups from Kafka 4 ("Buffer underrun decoding string", then it drops the connection).
    for group in groups:
        for response in await admin.describe_consumer_groups([group]):
            for entry in response.groups:
                out[entry[1]] = len(entry[5])
    return out


def serve(
    settings: KafkaSettings,
    *,
    host: str = "0.0.0.0",  # noqa: S104 - scraped by Prometheus from another pod
    port: int = DEFAULT_PORT,
    interval_s: float = 15.0,
    prefix: str = DEFAULT_PREFIX,
    groups: Mapping[str, str] | None = None,
) -> None:
    """Serve ``/metrics`` on ``host:port`` (prometheus_client's server) and probe until interrupted."""
    from prometheus_client import start_http_server

    exporter = LagExporter(settings, interval_s=interval_s, prefix=prefix, groups=groups)
    server, thread = start_http_server(port, addr=host, registry=exporter.registry)
    log.info("lag exporter started", extra={"port": port, "prefix": prefix, "interval_s": interval_s})
    try:
        asyncio.run(exporter.run())
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        thread.join(timeout=5)
