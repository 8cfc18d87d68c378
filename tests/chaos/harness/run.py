"""``python -m tests.chaos.harness run``: the stack, the replay, the faults, the verification, the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiokafka import AIOKafkaProducer
from tenacity import AsyncRetrying, stop_after_delay, wait_exponential
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.broker import producer_options
from textpulse.replay import ReplayStats, replay
from textpulse.settings import REPO_ROOT, KafkaSettings

from . import report
from .faults import DEPENDS_ON, RESUME_TARGET_S, FaultResult, fault_schedule, run_fault
from .logscan import ScanResult, scan_logs
from .probe import GROUPS, LagProbe
from .stack import SERVICES, Stack, StackConfig
from .verify import OutputCheck, es_documents, verify
from .workload import BadRecord, Workload, build_workload, secret_env

log = logging.getLogger(__name__)
DEFAULT_RUN_DIR = REPO_ROOT / ".run" / "chaos"
INFRA_TARGETS = ("triton", "elasticsearch", "kafka")


def default_model_repo() -> Path:
    """The quick-profile models when exported, else the tiny test models (built on demand)."""
    quick = REPO_ROOT / ".cache" / "model-repo"
    if all((quick / m).is_dir() for m in ("finance", "support", "ner")):  # what classify + NER start
        return quick
    from tests.support.inference import build_tiny_repo

    return Path(build_tiny_repo(REPO_ROOT / ".cache" / "test-model-repo"))


@dataclass
class ChaosOptions:
    events: int = 3000
    rate: float = 25.0
    seed: int = 7
    delivery: str = "at_least_once"
    targets: tuple[str, ...] = (*SERVICES, *INFRA_TARGETS)
    run_dir: Path = DEFAULT_RUN_DIR
    model_repo: Path | None = None
    prometheus: bool = True
    keep: bool = False
    #: give up draining after this long without any consumer group committing further
    drain_timeout_s: float = 120.0


@dataclass
class ChaosResult:
    ok: bool
    checks: list[OutputCheck]
    dlq_checks: list[OutputCheck]
    faults: list[FaultResult]
    scan: ScanResult
    timings: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    replay: ReplayStats | None = None


def prepare_run_dir(run_dir: Path) -> None:
    """A fresh Kafka log dir per run (outputs are verified from offset 0); logs of the last run go."""
    for name in ("kafka",):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for path in run_dir.glob("*.log"):
        path.unlink()


async def stop_leftover_kafka(stack: Stack) -> None:
    """A broker of an earlier, interrupted run on this run dir: stop it before its data is wiped.

    Also one whose pid file was never written (a start script that died half-way): it is found by
    its command line, which names this run dir's config."""
    if stack.kafka.pid() is not None:
        await stack.kafka.stop()
    config = f"kafka.Kafka {stack.cfg.run_dir / 'kafka' / 'server.properties'}"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if config in " ".join(proc.info["cmdline"] or ()):
            log.warning("chaos: killing a leftover broker of this run dir (pid %s)", proc.pid)
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(10)


async def inject_bad(settings: KafkaSettings, bad: list[BadRecord]) -> None:
    """Produce the bad records, retrying through a broker restart."""
    async for attempt in AsyncRetrying(stop=stop_after_delay(240), wait=wait_exponential(0.5, max=5), reraise=True):
        with attempt:
            producer = AIOKafkaProducer(**client_options(settings), **producer_options(settings))  # type: ignore[arg-type]
            await producer.start()
            try:
                for rec in bad:
                    await producer.send_and_wait(rec.topic, rec.value)
            finally:
                await producer.stop()


async def wait_drained(
    stack: Stack, probe: LagProbe, workload: Workload, *, tolerance: int, timeout_s: float, index_prefix: str
) -> float:
    """Until every group is caught up and Elasticsearch holds every enriched event; seconds waited.

    ``timeout_s`` is a stall limit, not a total: as long as some group still commits further, a slow
    machine is given the time it needs (a backlog is not a loss)."""
    started = last_progress = time.monotonic()
    es_url = f"http://127.0.0.1:{stack.cfg.ports.es_http}"
    want = len(workload.events)
    last_committed = -1
    while time.monotonic() - last_progress < timeout_s:
        states = {g: await probe.group(g) for g in GROUPS}
        committed = sum(s.committed for s in states.values() if s is not None)
        if committed > last_committed:
            last_committed, last_progress = committed, time.monotonic()
        if all(s is not None and s.drained(tolerance) for s in states.values()):
            with contextlib.suppress(Exception):
                if len(await es_documents(es_url, index_prefix, "events")) >= want:
                    return time.monotonic() - started
        await asyncio.sleep(2.0)
    log.warning("no progress for %.0fs; verifying what arrived", timeout_s)
    return time.monotonic() - started


async def run_chaos(opts: ChaosOptions) -> ChaosResult:
    run_dir = opts.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    index_prefix = f"tpchaos-{int(time.time())}"
    cfg = StackConfig(
        run_dir=run_dir,
        model_repo=opts.model_repo or default_model_repo(),
        delivery=opts.delivery,
        index_prefix=index_prefix,
        prometheus=opts.prometheus,
        service_env=secret_env(),
    )
    stack = Stack(cfg)
    await stop_leftover_kafka(stack)
    prepare_run_dir(run_dir)
    timings: dict[str, float] = {}
    workload = build_workload(opts.events, seed=opts.seed)
    tolerance = 1 if opts.delivery == "exactly_once" else 0
    probe = LagProbe(stack.kafka_settings)
    t_start = time.monotonic()
    try:
        infra = await stack.start_infra()
        timings |= {f"start {k}": v for k, v in infra.items()}
        t = time.monotonic()
        await create_topics(stack.kafka_settings)
        timings["create topics"] = time.monotonic() - t
        services = await stack.start_services()
        timings["start services (all ready)"] = max(services.values())
        window_s = len(workload.events) / opts.rate
        schedule = fault_schedule(list(opts.targets), seed=opts.seed, window_s=window_s)
        report.console.print(
            f"[bold]chaos[/] {len(workload.events)} events at {opts.rate:g}/s (~{window_s:.0f}s), "
            f"delivery={opts.delivery}, seed={opts.seed}; faults: "
            + ", ".join(f"{f.target}@{f.at_s:.0f}s" for f in sorted(schedule, key=lambda f: f.at_s))
        )
        t0 = time.monotonic()
        tasks = [
            asyncio.create_task(
                run_fault(
                    f,
                    stack.components[f.target],
                    probe,
                    t0=t0,
                    tolerance=tolerance,
                    deps=[stack.components[d] for d in (*DEPENDS_ON.get(f.target, ()), "kafka") if d != f.target],
                )
            )
            for f in schedule
        ]
        injector = asyncio.create_task(_inject_later(stack.kafka_settings, workload.bad, window_s * 0.3))
        stats = await replay(
            workload.events, url=f"http://127.0.0.1:{stack.service_port('ingest')}", rate=opts.rate, progress=False
        )
        timings["replay"] = stats.seconds
        faults = list(await asyncio.gather(*tasks))
        await injector
        timings["faults done after replay start"] = time.monotonic() - t0
        timings["drain"] = await wait_drained(
            stack, probe, workload, tolerance=tolerance, timeout_s=opts.drain_timeout_s, index_prefix=index_prefix
        )
        accepted = workload.good_ids if not stats.rejected else set()
        checks, dlq_checks, _ = await verify(
            stack.kafka_settings,
            workload,
            accepted,
            es_url=f"http://127.0.0.1:{cfg.ports.es_http}",
            index_prefix=index_prefix,
        )
    finally:
        await probe.close()
        await stack.stop(services_only=opts.keep)
    timings["total"] = time.monotonic() - t_start
    scan = scan_logs(stack.log_files(), workload.secrets)
    verdict = report.judge(checks, dlq_checks, faults, scan, delivery=opts.delivery, rejected=stats.rejected)
    result = ChaosResult(verdict.ok, checks, dlq_checks, faults, scan, timings, verdict.failures, stats)
    print_result(result, workload, opts)
    return result


async def _inject_later(settings: KafkaSettings, bad: list[BadRecord], delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await inject_bad(settings, bad)


def print_result(result: ChaosResult, workload: Workload, opts: ChaosOptions) -> None:
    con = report.console
    con.print(report.timing_table("timings", result.timings))
    con.print(report.fault_table(result.faults))
    resumed = {f.target: f.output_s for f in result.faults if f.target in SERVICES}
    if resumed:
        slow = report.slow_resumes(result.faults)
        con.print(
            f"first output after restart (target ≤ {RESUME_TARGET_S:g} s): "
            + ", ".join(f"{k} {'—' if v is None else f'{v:.1f} s'}" for k, v in resumed.items())
            + (f" [red]— over target: {', '.join(slow)}[/]" if slow else " [green]— all within target[/]")
        )
    con.print(report.output_table(result.checks, delivery=opts.delivery))
    con.print(report.dlq_table(result.dlq_checks))
    con.print(report.scan_table(result.scan, list(workload.secrets)))
    if result.replay is not None:
        r = result.replay
        con.print(
            f"replay: {r.sent} sent, {r.accepted} accepted, {r.duplicates} already written, {r.rejected} rejected, "
            f"{r.retries} retried requests, {r.rate:.1f} ev/s"
        )
    if result.ok:
        con.print("[bold green]PASS[/]: nothing lost" + (", no duplicates" if opts.delivery == "exactly_once" else ""))
    else:
        con.print("[bold red]FAIL[/]")
        for f in result.failures:
            con.print(f"  [red]•[/] {f}")
