"""``python -m tests.chaos.harness load``: a sustained rate, with consumer lag and service memory sampled over time.

1. Calibration (unless ``--rate`` is given): a burst of real events is posted as fast as ingest
   takes them, and the maximum rate is the burst size over the time until every consumer group has
   caught up — the end-to-end throughput of the pipeline on this machine.
2. Sustained phase: ``fraction`` of that rate (default 80 %) for ``minutes``, the data sets cycled
   with fresh ids. Every ``sample_s`` the lag of every consumer group (end offsets − committed
   offsets) and the RSS of every service (with its children) are sampled.
3. Verdict, on the second half of the samples (the first half holds the warm-up: JIT, caches,
   batch sizes settling): a least-squares line through each series must not rise by more than
   ``lag_bound_s`` seconds of input for lag, and by more than ``max(mem_bound_pct %, mem_bound_mib)``
   for memory, over that half. Bounded lag that oscillates passes; a backlog that keeps growing,
   or a leak, does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.table import Table
from textpulse.kafka.admin import create_topics
from textpulse.replay import ReplayStats, replay

from . import report
from .probe import GROUPS, LagProbe
from .run import DEFAULT_RUN_DIR, default_model_repo, prepare_run_dir, stop_leftover_kafka
from .stack import Stack, StackConfig
from .workload import build_workload, secret_env


@dataclass
class LoadOptions:
    minutes: float = 10.0
    rate: float = 0.0
    fraction: float = 0.8
    delivery: str = "at_least_once"
    sample_s: float = 5.0
    run_dir: Path = DEFAULT_RUN_DIR
    model_repo: Path | None = None
    prometheus: bool = True
    calibration_events: int = 2000
    lag_bound_s: float = 10.0
    mem_bound_pct: float = 5.0
    mem_bound_mib: float = 24.0


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)

    def add(self, t: float, v: float) -> None:
        self.t.append(t)
        self.v.append(v)

    def second_half(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        n = len(self.t)
        return np.asarray(self.t[n // 2 :]), np.asarray(self.v[n // 2 :])

    def slope(self) -> float:
        """Least-squares slope (units per second) over the second half."""
        t, v = self.second_half()
        if len(t) < 3 or float(np.ptp(t)) == 0.0:  # a line needs three points to mean anything
            return 0.0
        return float(np.polyfit(t, v, 1)[0])

    def rise(self) -> float:
        """What the fitted line gains over the second half."""
        t, _ = self.second_half()
        return self.slope() * (float(np.ptp(t)) if len(t) else 0.0)


@dataclass
class LoadResult:
    ok: bool
    rate: float
    max_rate: float | None
    replay: ReplayStats | None
    lag: dict[str, Series]
    rss: dict[str, Series]
    failures: list[str]


def cycled_events(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` real events: the workload's texts cycled, each pass with fresh ids and later event times."""
    base = build_workload(min(n, 8000), seed=seed, pii_events=0).events
    start = datetime.now(UTC)
    out = []
    for i in range(n):
        ev = dict(base[i % len(base)])
        ev["id"] = f"{ev['id'][:100]}:load{i // len(base)}"
        ev["event_time"] = (start + timedelta(milliseconds=50 * i)).isoformat()
        out.append(ev)
    return out


async def drained_after(probe: LagProbe, started: float, tolerance: int, timeout_s: float) -> float:
    while time.monotonic() - started < timeout_s:
        states = [await probe.group(g) for g in GROUPS]
        if all(s is not None and s.drained(tolerance) for s in states):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    msg = f"pipeline did not drain within {timeout_s:.0f}s"
    raise TimeoutError(msg)


async def calibrate(stack: Stack, probe: LagProbe, n: int, tolerance: int) -> float:
    """Maximum end-to-end rate: a burst of ``n`` events over the time until every group caught up."""
    events = cycled_events(n, seed=99)
    for ev in events:
        ev["id"] = ev["id"].replace(":load", ":cal")
    started = time.monotonic()
    await replay(events, url=f"http://127.0.0.1:{stack.service_port('ingest')}", rate=0, progress=False)
    seconds = await drained_after(probe, started, tolerance, timeout_s=900)
    return n / seconds


def _rss(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return float(total) / 2**20


async def sample(
    stack: Stack, probe: LagProbe, t0: float, stop: asyncio.Event, every_s: float, out: LoadResult
) -> None:
    while not stop.is_set():
        now = time.monotonic() - t0
        for group in GROUPS:
            state = await probe.group(group)
            if state is not None:
                out.lag.setdefault(group, Series()).add(now, float(state.lag))
        for name, svc in stack.services.items():
            pid = svc.pid()
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    out.rss.setdefault(name, Series()).add(now, _rss(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def judge_load(res: LoadResult, opts: LoadOptions) -> None:
    if res.replay is not None and res.replay.rate < 0.95 * res.rate:
        res.failures.append(f"replay held {res.replay.rate:.1f} ev/s, below 95% of {res.rate:.1f} (ingest behind)")
    for group, s in res.lag.items():
        bound = opts.lag_bound_s * res.rate
        if s.rise() > bound:
            res.failures.append(f"lag of {group} rises {s.rise():.0f} records over the second half (bound {bound:.0f})")
    for name, s in res.rss.items():
        median = float(np.median(s.v)) if s.v else 0.0
        bound = max(opts.mem_bound_pct / 100 * median, opts.mem_bound_mib)
        if s.rise() > bound:
            res.failures.append(f"RSS of {name} rises {s.rise():.1f} MiB over the second half (bound {bound:.1f})")
    res.ok = not res.failures


def lag_table(res: LoadResult, opts: LoadOptions) -> Table:
    t = Table(title=f"consumer lag at {res.rate:.1f} ev/s (records; second half = verdict)")
    for col in (
        "group",
        "samples",
        "median 1st half",
        "median 2nd half",
        "max",
        "slope /min",
        "rise 2nd half",
        "bound",
    ):
        t.add_column(col, justify="left" if col == "group" else "right")
    for group, s in res.lag.items():
        n = len(s.v)
        first, second = s.v[: n // 2] or [0.0], s.v[n // 2 :] or [0.0]
        bound = opts.lag_bound_s * res.rate
        t.add_row(
            group,
            str(n),
            f"{np.median(first):.0f}",
            f"{np.median(second):.0f}",
            f"{max(s.v or [0]):.0f}",
            f"{s.slope() * 60:+.1f}",
            f"{s.rise():+.0f}",
            f"{bound:.0f}",
            style="red" if s.rise() > bound else None,
        )
    return t


def rss_table(res: LoadResult, opts: LoadOptions) -> Table:
    t = Table(title="service memory (RSS incl. children, MiB)")
    for col in ("service", "first", "median", "last", "max", "slope MiB/min", "rise 2nd half", "bound"):
        t.add_column(col, justify="left" if col == "service" else "right")
    for name, s in res.rss.items():
        median = float(np.median(s.v)) if s.v else 0.0
        bound = max(opts.mem_bound_pct / 100 * median, opts.mem_bound_mib)
        t.add_row(
            name,
            f"{s.v[0]:.0f}",
            f"{median:.0f}",
            f"{s.v[-1]:.0f}",
            f"{max(s.v):.0f}",
            f"{s.slope() * 60:+.2f}",
            f"{s.rise():+.1f}",
            f"{bound:.1f}",
            style="red" if s.rise() > bound else None,
        )
    return t


async def run_load(opts: LoadOptions) -> LoadResult:
    run_dir = opts.run_dir.resolve()
    cfg = StackConfig(
        run_dir=run_dir,
        model_repo=opts.model_repo or default_model_repo(),
        delivery=opts.delivery,
        index_prefix=f"tpload-{int(time.time())}",
        prometheus=opts.prometheus,
        service_env=secret_env(),
    )
    stack = Stack(cfg)
    await stop_leftover_kafka(stack)
    prepare_run_dir(run_dir)
    tolerance = 1 if opts.delivery == "exactly_once" else 0
    probe = LagProbe(stack.kafka_settings)
    res = LoadResult(False, opts.rate, None, None, {}, {}, [])
    con = report.console
    try:
        await stack.start_infra()
        await create_topics(stack.kafka_settings)
        await stack.start_services()
        if opts.rate <= 0:
            res.max_rate = await calibrate(stack, probe, opts.calibration_events, tolerance)
            res.rate = round(opts.fraction * res.max_rate, 1)
            con.print(
                f"[bold]calibration[/]: {opts.calibration_events} events drained at {res.max_rate:.1f} ev/s "
                f"end to end → holding {res.rate:.1f} ev/s ({opts.fraction:.0%})"
            )
        n = int(res.rate * opts.minutes * 60)
        events = cycled_events(n, seed=7)
        con.print(
            f"[bold]load[/]: {n} events at {res.rate:.1f} ev/s for {opts.minutes:g} min, delivery={opts.delivery}"
        )
        stop = asyncio.Event()
        t0 = time.monotonic()
        sampler = asyncio.create_task(sample(stack, probe, t0, stop, opts.sample_s, res))
        res.replay = await replay(
            events, url=f"http://127.0.0.1:{stack.service_port('ingest')}", rate=res.rate, progress=False
        )
        stop.set()
        await sampler
    finally:
        await probe.close()
        await stack.stop()
    judge_load(res, opts)
    con.print(lag_table(res, opts))
    con.print(rss_table(res, opts))
    r = res.replay
    if r is not None:
        con.print(f"replay: {r.accepted} accepted, {r.rejected} rejected, {r.rate:.1f} ev/s held over {r.seconds:.0f}s")
    con.print("[bold green]PASS[/]: lag bounded, memory flat" if res.ok else "[bold red]FAIL[/]")
    for f in res.failures:
        con.print(f"  [red]•[/] {f}")
    return res
