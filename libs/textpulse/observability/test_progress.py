"""Stall clocks, stuck decisions, the readiness answer and the repeat filter of the logs (no broker)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiokafka import TopicPartition
from prometheus_client import generate_latest

from textpulse.observability.http import ready_app
from textpulse.observability.logging import RepeatFilter
from textpulse.observability.metrics import ServiceMetrics
from textpulse.observability.progress import ASSIGNED, AssignmentListener, PartitionProgress, progress_of

TP0, TP1 = TopicPartition("text.in", 0), TopicPartition("text.in", 1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tracker(stuck_after_s: float = 60.0) -> tuple[PartitionProgress, Clock, ServiceMetrics]:
    clock = Clock()
    metrics = ServiceMetrics("svc", enabled=True)
    return PartitionProgress(metrics, stuck_after_s, clock=clock), clock, metrics


def _probe(p: PartitionProgress, tp: TopicPartition, committed: int, end: int, *, waiting: bool = True) -> bool:
    p.observe("g", tp, committed, end)
    return p.settle("g", tp, waiting=waiting if p.is_candidate("g", tp) else None)


def test_stalled_with_records_waiting_becomes_stuck_then_recovers_when_the_offset_moves() -> None:
    p, clock, metrics = _tracker()
    assert not _probe(p, TP0, 5, 9)
    clock.now += 59
    assert not _probe(p, TP0, 5, 12)
    clock.now += 2
    assert _probe(p, TP0, 5, 12)
    assert p.stuck() == [("g", TP0)]
    page = generate_latest(metrics.registry).decode()
    assert 'textpulse_consumer_stuck{partition="0",service="svc",topic="text.in"} 1.0' in page
    assert 'textpulse_consumer_committed_offset{partition="0",service="svc",topic="text.in"} 5.0' in page
    clock.now += 1
    assert not _probe(p, TP0, 6, 12)
    assert p.stuck() == []
    assert 'textpulse_consumer_stalled_seconds{partition="0",service="svc",topic="text.in"} 0.0' in (
        generate_latest(metrics.registry).decode()
    )


def test_caught_up_or_only_a_commit_marker_behind_is_never_stuck() -> None:
    p, clock, _ = _tracker(10)
    _probe(p, TP0, 7, 7)
    clock.now += 100
    assert not _probe(p, TP0, 7, 7)
    # Lag 1 for ever: the last offset is a transaction marker, no record waits.
    _probe(p, TP1, 7, 8)
    clock.now += 100
    assert not _probe(p, TP1, 7, 8, waiting=False)
    clock.now += 5
    assert not p.is_candidate("g", TP1), "the stall clock restarted"


def test_a_broker_outage_does_not_count_as_a_stall() -> None:
    p, clock, _ = _tracker(10)
    _probe(p, TP0, 1, 5)
    clock.now += 30  # no probe answered meanwhile
    p.forget()
    assert not _probe(p, TP0, 1, 5)


def test_only_partitions_this_process_holds_make_it_unready() -> None:
    p, clock, _ = _tracker(1)
    _probe(p, TP0, 0, 3)
    _probe(p, TP1, 0, 3)
    clock.now += 2
    _probe(p, TP0, 0, 3)
    _probe(p, TP1, 0, 3)
    listener = AssignmentListener("g")
    try:
        asyncio.run(listener.on_partitions_assigned({TP1}))
        assert p.stuck() == [("g", TP1)]
        asyncio.run(listener.on_partitions_revoked({TP1}))
        assert p.stuck() == []
    finally:
        ASSIGNED.pop("g", None)


def test_ready_names_the_stuck_partition() -> None:
    metrics = ServiceMetrics("svc-ready", enabled=False)
    tracker = progress_of(metrics, 0.5)
    clock = Clock()
    tracker.clock = clock

    async def ok() -> bool:
        return True

    async def call() -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {}

        await ready_app(ok, metrics)({"type": "http"}, receive, send)
        return sent[0]["status"], sent[1]["body"]

    assert asyncio.run(call()) == (200, b'{"status":"ready"}')
    tracker.observe("g-ready", TP0, 0, 4)
    clock.now += 1
    tracker.observe("g-ready", TP0, 0, 4)
    tracker.settle("g-ready", TP0, waiting=True)
    status, body = asyncio.run(call())
    assert (status, orjson.loads(body)) == (503, {"status": "not ready", "stuck": ["text.in:0"]})


def _record(msg: str, level: int = logging.ERROR, **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord("svc", level, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_repeats_pass_once_per_interval_with_the_count_left_out() -> None:
    clock = Clock()
    f = RepeatFilter(60, clock=clock)
    assert f.filter(_record("boom", topic="t", message_id="0-3-1"))
    # The same failure of the same record, redelivered (FastStream's batch id grows): left out.
    assert not any(f.filter(_record("boom", topic="t", message_id=f"0-{i}-1")) for i in range(28))
    # Another record's dead letter is another line.
    assert f.filter(_record("dead-lettered record", level=logging.WARNING, offset=4))
    assert f.filter(_record("dead-lettered record", level=logging.WARNING, offset=5))
    clock.now += 61
    again = _record("boom", topic="t")
    assert f.filter(again)
    assert again.__dict__["repeats_suppressed"] == 28
    # INFO is never limited.
    assert all(f.filter(_record("joined", level=logging.INFO)) for _ in range(3))


def test_repeat_filter_memory_is_bounded() -> None:
    f = RepeatFilter(60, max_keys=10)
    for i in range(100):
        f.filter(_record(f"distinct {i}"))
    assert len(f._seen) == 10
