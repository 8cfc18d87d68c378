"""Metrics overhead: the same pipeline workload with the services' metrics enabled and disabled, in one run.

Two copies of the pipeline ingest → classify → NER run side by side on the
real Apache Kafka, each service its own process with in-process inference
(the tiny test models by default: the cheaper the inference, the larger the
share metrics take, so this is the harsh case):

* **on**: metrics enabled (the default) and the consumer-lag probe running,
  every ``/metrics`` scraped every 5 s (``--scrape-interval``; the interval of
  deploy/prometheus) so exposition is paid for too;
* **off**: ``TEXTPULSE_<SERVICE>_METRICS_ENABLED=false``: every metric is a
  no-op, no lag probe; ``/metrics`` (only ``textpulse_build_info`` left) is
  scraped the same.

Rounds alternate (on, off, off, on, ...) after one warm-up round each; a round
posts N real tweets to that pipeline's ingest (HTTP batches) and ends when
N more enriched records are on its ``text.enriched``. Printed: events/s of
both (median over rounds), the services' CPU seconds per 1,000 events (less
sensitive to other load on a shared machine; also per service), the overhead
of both figures, the median of the per-pair throughput ratios (pairs run back
to back, so slow drift of the machine's load cancels), and each pipeline's CPU
per second while idle (the time-driven part: scrapes, lag probe). Target:
overhead ≤ 3 %.

Run: ``make bench-metrics`` (``python -m bench.bench_metrics --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.settings import KafkaSettings

from bench.common import (
    REPO,
    console,
    cpu_seconds,
    port_open,
    real_kafka,
    start_service,
    stop_service,
    table,
    wait_ready,
)

SERVICES = ("ingest", "classify", "ner")
RUN_DIR = REPO / ".run" / "bench-metrics"
TARGET_OVERHEAD = 0.03
#: Ports of this area's plan: on = 28080-28082, off = 28083-28085 (a busy one falls back to a free port).
BASE_PORT = {"on": 28080, "off": 28083}


@dataclass
class Pipeline:
    """One copy of ingest → classify → NER and its figures."""

    name: str
    metrics: bool
    topics: dict[str, str]
    ports: dict[str, int]
    procs: dict[str, Any] = field(default_factory=dict)
    rates: list[float] = field(default_factory=list)
    cpu_per_1000: list[float] = field(default_factory=list)
    service_cpu_per_1000: dict[str, list[float]] = field(default_factory=dict)
    idle_cpu_per_s: float = 0.0
    delivered: int = 0

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingest']}"


def _port(preferred: int) -> int:
    if not port_open(preferred):
        return preferred
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(p: Pipeline, service: str, kafka: str, repo: Path, tag: str) -> dict[str, str]:
    prefix = f"TEXTPULSE_{service.upper()}_"
    t = p.topics
    topics = {
        "ingest": {"TOPIC_IN": t["text.in"], "TOPIC_OUT": t["text.raw"]},
        "classify": {"TOPIC_IN": t["text.raw"], "TOPIC_OUT": t["text.classified"]},
        "ner": {
            "TOPIC_IN": t["text.classified"],
            "TOPIC_OUT": t["text.enriched"],
            "TOPIC_MENTIONS": t["entity.mentions"],
        },
    }[service]
    return {
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "TEXTPULSE_KAFKA_FLAVOR": "apache",
        "TEXTPULSE_MODEL_REPO": str(repo),
        "TEXTPULSE_LOCAL_THREADS": "1",
        f"{prefix}HTTP_PORT": str(p.ports[service]),
        f"{prefix}LOG_JSON": "false",
        f"{prefix}LOG_LEVEL": "WARNING",
        f"{prefix}GROUP_ID": f"{tag}-{p.name}-{service}",
        f"{prefix}TOPIC_DLQ": t[f"dlq.{service}"],
        f"{prefix}METRICS_ENABLED": "true" if p.metrics else "false",
        # The consumer-lag probe exists for the lag gauge: it runs (default 15 s period) only where
        # metrics are on; off, it is pushed out of the run.
        **({} if p.metrics else {f"{prefix}LAG_REFRESH_S": "3600"}),
        **{f"{prefix}{k}": v for k, v in topics.items()},
    }


def _tweets(n: int, prefix: str) -> list[dict[str, Any]]:
    from textpulse.replay import build_events

    rows = build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=n)
    while len(rows) < n:
        rows += rows[: n - len(rows)]
    return [{**r, "id": f"{prefix}-{i}"} for i, r in enumerate(rows[:n])]


class _Counts:
    """Records on a topic (sum of end offsets), with one long-lived consumer: a new client per poll
    would fetch the cluster's whole metadata each time and load the machine being measured."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.consumer = AIOKafkaConsumer(**client_options(kafka))  # type: ignore[arg-type]
        self.partitions: dict[str, list[TopicPartition]] = {}

    async def __call__(self, topic: str) -> int:
        if topic not in self.partitions:
            self.partitions[topic] = await topic_partitions(self.consumer, topic)
        return sum((await self.consumer.end_offsets(self.partitions[topic])).values())


async def _scraper(pipelines: Sequence[Pipeline], stop: asyncio.Event, interval_s: float) -> None:
    """GET every service's /metrics every ``interval_s``, as Prometheus does."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            for p in pipelines:
                for port in p.ports.values():
                    try:
                        await client.get(f"http://127.0.0.1:{port}/metrics")
                    except httpx.HTTPError:
                        # A scrape that times out under load is what Prometheus would see too: go on.
                        continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def _round(counts: _Counts, p: Pipeline, events: list[dict[str, Any]], timeout_s: float) -> tuple[float, float]:
    """Events/s and service CPU seconds per 1,000 events of one round."""
    target = p.delivered + len(events)
    cpu0 = {s: cpu_seconds(proc.pid) for s, proc in p.procs.items()}
    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=60.0) as client:
        sem = asyncio.Semaphore(4)

        async def post(batch: list[dict[str, Any]]) -> None:
            async with sem:
                r = await client.post(f"{p.ingest_url}/v1/events/batch", json=batch)
                r.raise_for_status()

        await asyncio.gather(*(post(events[i : i + 200]) for i in range(0, len(events), 200)))
    deadline = time.monotonic() + timeout_s
    done = await counts(p.topics["text.enriched"])
    while done < target:
        if time.monotonic() > deadline:
            msg = f"{p.name}: {done - p.delivered}/{len(events)} enriched after {timeout_s}s (logs in {RUN_DIR})"
            raise TimeoutError(msg)
        await asyncio.sleep(0.05)
        done = await counts(p.topics["text.enriched"])
    elapsed = time.perf_counter() - started
    per_service = {s: cpu_seconds(proc.pid) - cpu0[s] for s, proc in p.procs.items()}
    for s, cpu in per_service.items():
        p.service_cpu_per_1000.setdefault(s, []).append(1000 * cpu / len(events))
    p.delivered = done
    return len(events) / elapsed, 1000 * sum(per_service.values()) / len(events)


async def _idle(pipelines: Sequence[Pipeline], seconds: float) -> None:
    """CPU per second of each pipeline with no events: the time-driven part (scrapes, lag probe, polls)."""
    before = {p.name: sum(cpu_seconds(proc.pid) for proc in p.procs.values()) for p in pipelines}
    await asyncio.sleep(seconds)
    for p in pipelines:
        p.idle_cpu_per_s = (sum(cpu_seconds(proc.pid) for proc in p.procs.values()) - before[p.name]) / seconds


async def _measure(counts: _Counts, pipelines: list[Pipeline], args: argparse.Namespace, tag: str) -> list[float]:
    """Warm-up, then alternating rounds; returns the on/off throughput ratio of each round."""
    on, off = pipelines
    for p in pipelines:  # warm-up: lazy imports, first batches, consumer group joins
        await _round(counts, p, _tweets(args.events, f"{tag}-{p.name}-warm"), args.round_timeout)
        p.service_cpu_per_1000.clear()
    await _idle(pipelines, args.idle_s)
    pair_ratios = []
    for r in range(args.rounds):
        figures = {}
        for p in (on, off) if r % 2 == 0 else (off, on):
            rate, cpu = await _round(counts, p, _tweets(args.events, f"{tag}-{p.name}-{r}"), args.round_timeout)
            p.rates.append(rate)
            p.cpu_per_1000.append(cpu)
            figures[p.name] = rate
        pair_ratios.append(figures["on"] / figures["off"])
        console.print(
            f"round {r + 1}: on {figures['on']:.0f} ev/s ({on.cpu_per_1000[-1]:.2f} CPU-s/1k), "
            f"off {figures['off']:.0f} ev/s ({off.cpu_per_1000[-1]:.2f} CPU-s/1k)"
        )
    return pair_ratios


async def run(args: argparse.Namespace, bootstrap: str) -> int:
    kafka = KafkaSettings(bootstrap_servers=bootstrap, flavor="apache")
    repo = Path(args.model_repo) if args.model_repo else None
    if repo is None:
        from textpulse.inference.testing import build_tiny_repo, tiny_repo_from_env

        repo = build_tiny_repo(tiny_repo_from_env())
    tag = f"benchmetrics-{uuid.uuid4().hex[:6]}"
    pipelines = []
    for name, metrics in (("on", True), ("off", False)):
        topics = {spec.name: f"bench.{tag}.{name}.{spec.name}" for spec in ALL_TOPICS}
        await create_topics(kafka, ALL_TOPICS, rename=topics)
        ports = {s: _port(BASE_PORT[name] + i) for i, s in enumerate(SERVICES)}
        pipelines.append(Pipeline(name, metrics, topics, ports))
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    scraper: asyncio.Task[None] | None = None
    try:
        for p in pipelines:
            for s in SERVICES:
                p.procs[s] = start_service(
                    f"services.{s}.app", _env(p, s, bootstrap, repo, tag), RUN_DIR / f"{p.name}-{s}.log"
                )
        for p in pipelines:
            for s in SERVICES:
                await wait_ready(f"http://127.0.0.1:{p.ports[s]}", timeout_s=240)
        console.print(
            f"pipelines ready (models {repo}); {args.rounds} rounds x {args.events} events each, after a warm-up"
        )
        scraper = asyncio.create_task(_scraper(pipelines, stop, args.scrape_interval))
        counts = _Counts(kafka)
        await counts.consumer.start()
        try:
            pair_ratios = await _measure(counts, pipelines, args, tag)
        finally:
            await counts.consumer.stop()
    finally:
        stop.set()
        if scraper is not None:
            await scraper
        for p in pipelines:
            for proc in p.procs.values():
                stop_service(proc)
    return report(*pipelines, pair_ratios, args)


@dataclass
class HotPath:
    """In-process cost of the metric work itself (deterministic, unlike the pipeline rounds)."""

    per_event_us: float  # one service's metric updates per record (batch of BATCH records), on minus off
    scrape_ms: float  # one /metrics exposition of a populated classify registry


BATCH = 64


def hot_path(repeats: int = 7, batches: int = 300) -> HotPath:
    """What classify's handler does to its metrics per consumed batch, with metrics on and off."""
    from prometheus_client import generate_latest
    from textpulse.inference.metrics import InferenceMetrics

    def batch_cost(m: InferenceMetrics) -> float:
        started = time.perf_counter()
        for _ in range(batches):
            m.received.labels("classify", "text.raw").inc(BATCH)
            m.batch_size.labels("classify", "text.raw").observe(BATCH)
            for model in ("sentiment", "topic", "intent"):
                m.observe(model, 0.02, BATCH)
            for _ in range(BATCH):
                m.e2e_latency.labels("classify").observe(0.05)
            m.processed.labels("classify", "text.raw").inc(BATCH)
            m.handler_duration.labels("classify", "text.raw").observe(0.1)
        return (time.perf_counter() - started) / (batches * BATCH)

    on, off = InferenceMetrics("classify", enabled=True), InferenceMetrics("classify", enabled=False)
    diffs = [batch_cost(on) - batch_cost(off) for _ in range(repeats)]
    scrapes = []
    for _ in range(repeats):
        started = time.perf_counter()
        generate_latest(on.registry)
        scrapes.append(time.perf_counter() - started)
    return HotPath(statistics.median(diffs) * 1e6, statistics.median(scrapes) * 1e3)


def report(on: Pipeline, off: Pipeline, pair_ratios: list[float], args: argparse.Namespace) -> int:
    med = statistics.median
    rate_on, rate_off = med(on.rates), med(off.rates)
    cpu_on, cpu_off = med(on.cpu_per_1000), med(off.cpu_per_1000)
    overhead_rate = 1 - rate_on / rate_off
    overhead_pairs = 1 - med(pair_ratios)
    overhead_cpu = cpu_on / cpu_off - 1
    spread = max(pair_ratios) - min(pair_ratios)

    def verdict(x: float) -> str:
        return "[green]ok[/]" if x <= TARGET_OVERHEAD else "[red]above target[/]"

    rows = [
        ("events/s, metrics on (median)", f"{rate_on:.0f}", "", ""),
        ("events/s, metrics off (median)", f"{rate_off:.0f}", "", ""),
        ("throughput overhead (medians)", f"{overhead_rate:+.1%}", f"≤ {TARGET_OVERHEAD:.0%}", verdict(overhead_rate)),
        (
            "throughput overhead (median of pair ratios)",
            f"{overhead_pairs:+.1%}",
            f"≤ {TARGET_OVERHEAD:.0%}",
            verdict(overhead_pairs),
        ),
        ("pair ratio spread (max - min)", f"{spread:.1%}", "", "noise of this run"),
        ("service CPU-s / 1,000 events, on", f"{cpu_on:.2f}", "", ""),
        ("service CPU-s / 1,000 events, off", f"{cpu_off:.2f}", "", ""),
        ("CPU overhead (medians)", f"{overhead_cpu:+.1%}", f"≤ {TARGET_OVERHEAD:.0%}", verdict(overhead_cpu)),
        *(
            (
                f"  {s} CPU-s / 1,000 events, on / off",
                f"{med(on.service_cpu_per_1000[s]):.2f} / {med(off.service_cpu_per_1000[s]):.2f}",
                "",
                f"{med(on.service_cpu_per_1000[s]) / med(off.service_cpu_per_1000[s]) - 1:+.1%}",
            )
            for s in SERVICES
        ),
        (
            "idle CPU-s per s (no events), on / off",
            f"{on.idle_cpu_per_s:.3f} / {off.idle_cpu_per_s:.3f}",
            "",
            "time-driven: scrapes, lag probe, polls",
        ),
    ]
    console.print(
        table(
            f"Metrics overhead: ingest → classify → NER, {args.rounds} alternating rounds x {args.events} events "
            f"(both scraped every {args.scrape_interval:g} s)",
            rows,
        )
    )
    hp = hot_path()
    # Per event: each of the three services does about classify's metric work; per second: three
    # expositions per scrape interval plus three lag probes (~1 ms each, measured) per 15 s.
    per_event_ms = 3 * hp.per_event_us / 1000
    per_second_ms = 3 * hp.scrape_ms / args.scrape_interval + 3 * 1.0 / 15
    cpu_event_ms = cpu_off  # CPU-s per 1,000 events = ms per event
    bound = (per_event_ms + per_second_ms / rate_off) / cpu_event_ms
    console.print(
        table(
            "Metric work itself, measured in-process (deterministic): what the overhead can be at most",
            [
                (f"metric updates per record, one service (batches of {BATCH})", f"{hp.per_event_us:.2f} µs", "", ""),
                ("one /metrics exposition (classify registry)", f"{hp.scrape_ms:.2f} ms", "", ""),
                (
                    f"estimated overhead at {rate_off:.0f} ev/s and {cpu_event_ms:.1f} ms CPU per event",
                    f"{bound:.2%}",
                    f"≤ {TARGET_OVERHEAD:.0%}",
                    verdict(bound),
                ),
            ],
        )
    )
    console.print(f"rounds on  (ev/s): {', '.join(f'{x:.0f}' for x in on.rates)}")
    console.print(f"rounds off (ev/s): {', '.join(f'{x:.0f}' for x in off.rates)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=int(os.environ.get("BENCH_METRICS_EVENTS", "600")))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_METRICS_ROUNDS", "5")))
    parser.add_argument("--round-timeout", type=float, default=300.0, help="seconds one round may take")
    parser.add_argument(
        "--scrape-interval", type=float, default=5.0, help="seconds between scrapes (deploy/prometheus: 5)"
    )
    parser.add_argument("--idle-s", type=float, default=20.0, help="idle window measuring time-driven CPU")
    parser.add_argument("--hot-path-only", action="store_true", help="only the in-process measurement (no Kafka)")
    parser.add_argument("--model-repo", help="exported model repository (default: the tiny test models)")
    args = parser.parse_args(argv)
    if args.hot_path_only:
        hp = hot_path()
        console.print(f"metric updates per record: {hp.per_event_us:.2f} µs; one exposition: {hp.scrape_ms:.2f} ms")
        return 0
    with real_kafka() as bootstrap:
        return asyncio.run(run(args, bootstrap))


if __name__ == "__main__":
    sys.exit(main())
