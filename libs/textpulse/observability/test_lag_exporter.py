"""The lag exporter's pure parts and the replicas' lag of held partitions, against fake clients (no broker).

The real Kafka path (2 replicas, consumers stopped, /metrics) is tests/integration/test_lag_exporter.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from textpulse.observability.lag import LagMonitor
from textpulse.observability.lag_exporter import LagExporter, OldestRecords, PartitionLag, age_seconds, service_of
from textpulse.observability.metrics import ServiceMetrics
from textpulse.settings import KafkaSettings

T0, T1, T2 = (TopicPartition("text.raw", p) for p in range(3))


@dataclass
class Meta:
    offset: int


@dataclass
class Record:
    offset: int
    timestamp: int


@dataclass
class Groups:
    groups: list[tuple[Any, ...]]


class FakeAdmin:
    """What the probes ask the admin client: groups, committed offsets, topics, members."""

    def __init__(self, committed: dict[str, dict[TopicPartition, int]], members: dict[str, int]) -> None:
        self.committed = committed
        self.members = members

    async def list_consumer_groups(self) -> list[tuple[str, str]]:
        return [(g, "consumer") for g in [*self.committed, "someone-else"]]

    async def list_consumer_group_offsets(self, group: str) -> dict[TopicPartition, Meta]:
        return {tp: Meta(o) for tp, o in self.committed.get(group, {}).items()}

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [{"topic": t, "error_code": 0, "partitions": [{"partition": p} for p in (2, 0, 1)]} for t in topics]

    async def describe_consumer_groups(self, groups: list[str]) -> list[Groups]:
        return [Groups([(0, g, "Stable", "consumer", "range", [object()] * self.members.get(g, 0)) for g in groups])]


class FakeLog:
    """A consumer over an in-memory log: end and start offsets, and records with timestamps."""

    def __init__(self, records: dict[TopicPartition, list[Record]], start: int = 0) -> None:
        self.records = records
        self.start = start
        self.positions: dict[TopicPartition, int] = {}
        self.fetches = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: (self.records[tp][-1].offset + 1 if self.records.get(tp) else 0) for tp in tps}

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.start)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(tps, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def pause(self, *_tps: TopicPartition) -> None:
        return None

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list[Record]]:
        self.fetches += 1
        out = {}
        for tp in tps:
            got = [r for r in self.records.get(tp, []) if r.offset >= self.positions[tp]][:1]
            if got:
                out[tp] = got
                self.positions[tp] = got[-1].offset + 1
            else:
                self.positions[tp] = max(self.positions[tp], (await self.end_offsets([tp]))[tp])
        return out

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


def log_of(n: int, *, t0_ms: int = 1_000_000, skip: tuple[int, ...] = ()) -> list[Record]:
    """``n`` offsets, one record a second; ``skip``: offsets with no readable record (markers)."""
    return [Record(o, t0_ms + 1000 * o) for o in range(n) if o not in skip]


def test_service_of_group_names() -> None:
    assert service_of("textpulse-classify") == "classify"
    assert service_of("textpulse-index-routes") == "index"
    assert service_of("textpulse-") is None
    assert service_of("other-classify") is None
    assert service_of("my-group", overrides={"my-group": "ner"}) == "ner"
    assert service_of("lag-x-route", prefix="lag-x-") == "route"


def test_age_is_zero_when_caught_up_and_never_negative() -> None:
    assert age_seconds(10_000, committed=5, end=5, oldest_ms=1_000) == 0.0
    assert age_seconds(10_000, committed=5, end=6, oldest_ms=None) == 0.0
    assert age_seconds(10_000, committed=5, end=9, oldest_ms=4_000) == 6.0
    assert age_seconds(1_000, committed=5, end=9, oldest_ms=4_000) == 0.0  # producer clock ahead
    row = PartitionLag("g", "svc", T0, committed=3, end=10, oldest_ms=2_000)
    assert (row.records, row.seconds(5_000)) == (7, 3.0)


def test_oldest_records_fetches_once_per_offset_and_skips_unreadable_offsets() -> None:
    async def go() -> None:
        log = FakeLog({T0: log_of(10, skip=(4,)), T1: log_of(3)})
        oldest = OldestRecords()
        # Two groups on T0 at different offsets take two rounds (one position per partition).
        await oldest.fetch(log, [(T0, 4, 10), (T0, 7, 10), (T1, 3, 3)])  # type: ignore[arg-type]
        assert oldest.get(T0, 4) == 1_000_000 + 5_000  # offset 4 is a marker: the next readable record
        assert oldest.get(T0, 7) == 1_000_000 + 7_000
        assert oldest.get(T1, 3) is None  # caught up: nothing fetched
        fetches = log.fetches
        await oldest.fetch(log, [(T0, 4, 10), (T0, 7, 10)])  # type: ignore[arg-type]
        assert log.fetches == fetches, "a known offset costs no fetch"
        oldest.keep_only([(T0, 7)])
        assert oldest.get(T0, 4) is None

    asyncio.run(go())


def _values(registry: CollectorRegistry, name: str) -> dict[tuple[str, ...], float]:
    return {tuple(s.labels.values()): s.value for f in registry.collect() for s in f.samples if s.name == name}


def test_exporter_measures_every_group_once_and_drops_series_that_went_away() -> None:
    async def go() -> None:
        log = FakeLog({T0: log_of(10), T1: log_of(10), T2: log_of(4)})
        committed = {"textpulse-classify": {T0: 6, T1: 10}, "textpulse-index-routes": {T0: 2}}
        admin = FakeAdmin(committed, {"textpulse-classify": 2})
        exporter = LagExporter(KafkaSettings(), groups={"custom": "ner"})
        rows = await exporter.probe(admin, log, now_ms=1_000_000 + 20_000)  # type: ignore[arg-type]
        by = {(r.group, r.tp.partition): r for r in rows}
        # Every partition of a committed topic: T2 has no commit and counts from the log start.
        assert {k: r.records for k, r in by.items()} == {
            ("textpulse-classify", 0): 4,
            ("textpulse-classify", 1): 0,
            ("textpulse-classify", 2): 4,
            ("textpulse-index-routes", 0): 8,
            ("textpulse-index-routes", 1): 10,
            ("textpulse-index-routes", 2): 4,
        }
        lag = _values(exporter.registry, "textpulse_consumer_group_lag")
        assert lag[("classify", "textpulse-classify", "text.raw", "0")] == 4
        assert lag[("index", "textpulse-index-routes", "text.raw", "1")] == 10
        secs = _values(exporter.registry, "textpulse_consumer_group_lag_seconds")
        assert secs[("classify", "textpulse-classify", "text.raw", "0")] == 14.0  # record 6 at t0 + 6 s
        assert secs[("classify", "textpulse-classify", "text.raw", "1")] == 0.0
        members = _values(exporter.registry, "textpulse_consumer_group_members")
        assert members == {
            ("classify", "textpulse-classify"): 2,
            ("index", "textpulse-index-routes"): 0,
            ("ner", "custom"): 0,
        }
        # The index group is deleted: its series go.
        del committed["textpulse-index-routes"]
        await exporter.probe(admin, log, now_ms=1_000_000 + 21_000)  # type: ignore[arg-type]
        assert {k[1] for k in _values(exporter.registry, "textpulse_consumer_group_lag")} == {"textpulse-classify"}
        assert ("index", "textpulse-index-routes") not in _values(exporter.registry, "textpulse_consumer_group_members")
        assert _values(exporter.registry, "textpulse_lag_exporter_last_success_timestamp_seconds") == {
            ("lag-exporter",): 1021.0
        }

    asyncio.run(go())


def test_each_replica_exports_only_the_partitions_it_holds() -> None:
    async def go() -> None:
        log = FakeLog({T0: log_of(10), T1: log_of(10), T2: log_of(10)})
        admin = FakeAdmin({"g": {T0: 5, T1: 5, T2: 5}}, {})
        held = [{T0, T1}, {T2}]
        replicas = [ServiceMetrics("svc", enabled=True) for _ in held]
        monitors = [
            LagMonitor(KafkaSettings(), m, "g", ["text.raw"], 3600, held=lambda h=h: h)  # type: ignore[misc]
            for m, h in zip(replicas, held, strict=True)
        ]
        for monitor in monitors:
            assert sum((await monitor.probe(admin, log)).values()) == 15  # type: ignore[arg-type]
        total = sum(v for m in replicas for v in _values(m.registry, "textpulse_consumer_lag").values())
        assert total == 15, "the group's lag once, not once per replica"
        # A rebalance moves T1 to the second replica: the first one stops reporting it.
        held[0].discard(T1)
        held[1].add(T1)
        for monitor in monitors:
            await monitor.probe(admin, log)  # type: ignore[arg-type]
        first = _values(replicas[0].registry, "textpulse_consumer_lag")
        assert set(first) == {("svc", "text.raw", "0")}
        assert sum(v for m in replicas for v in _values(m.registry, "textpulse_consumer_lag").values()) == 15

    asyncio.run(go())


def test_a_monitor_with_metrics_disabled_still_probes() -> None:
    async def go() -> None:
        log = FakeLog({T0: log_of(3)})
        monitor = LagMonitor(KafkaSettings(), ServiceMetrics("svc-off", enabled=False), "g", ["text.raw"], 1)
        monitor.held = lambda: {T0}
        admin = FakeAdmin({"g": {T0: 1}}, {})
        await monitor.probe(admin, log)  # type: ignore[arg-type]
        monitor.held = set
        await monitor.probe(admin, log)  # type: ignore[arg-type]  # removes the series of a no-op metric

    asyncio.run(go())


@pytest.mark.parametrize("bad", ["nogroup", "=svc", "g="])
def test_cli_rejects_a_malformed_group(bad: str) -> None:
    from textpulse.cli import app

    result = CliRunner().invoke(app, ["lag-exporter", "--group", bad])
    assert result.exit_code == 2
    assert "GROUP=SERVICE" in result.output
