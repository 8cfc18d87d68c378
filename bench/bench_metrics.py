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

A failed scrape (error or non-200) fails the round and the run (exit 1): a
pipeline whose ``/metrics`` does not answer is not paying for exposition.

Then each component of the metric work is measured on its own, in the same
run, and summed into an upper bound of the overhead (per event of the "off"
pipeline's CPU cost):

* per record: each service's metric updates per event, counted from its own
  final ``/metrics`` (histogram observations exactly; counters as one update per
  unit, an upper bound, since ``inc(n)`` is one call), times the CPU cost of one
  labelled counter increment and one histogram observation, enabled minus
  disabled, timed in the bench process;
* per scrape: each service process's CPU seconds over a burst of scrapes (less
  its idle CPU rate), on minus off, times the scrape rate;
* lag probe: the CPU of :func:`textpulse.observability.lag.measure_lag` against
  the "on" pipeline's groups, timed in the bench process, times the probes per
  second of the services that export ``textpulse_consumer_lag`` (their
  ``lag_refresh_s``).

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
    delete_run_topics,
    real_kafka,
    start_service,
    stop_service,
    table,
    wait_ready,
)
from tests.support.servers import pick_port

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
    idle_service_cpu_per_s: dict[str, float] = field(default_factory=dict)
    delivered: int = 0

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingest']}"


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


class ScrapeFailed(RuntimeError):
    """A ``/metrics`` scrape failed during a round: the round's figures do not include exposition."""


class _Scrapes:
    """Failed scrapes since the last check (the scraper records them; each round checks)."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, when: str) -> None:
        if self.failures:
            failures, self.failures = self.failures, []
            msg = f"{when}: {len(failures)} scrape(s) failed, the round fails: " + "; ".join(failures[:5])
            raise ScrapeFailed(msg)


async def _scraper(pipelines: Sequence[Pipeline], stop: asyncio.Event, interval_s: float, scrapes: _Scrapes) -> None:
    """GET every service's /metrics every ``interval_s``, as Prometheus does; record every failure."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        while not stop.is_set():
            for p in pipelines:
                for service, port in p.ports.items():
                    url = f"http://127.0.0.1:{port}/metrics"
                    try:
                        (await client.get(url)).raise_for_status()
                    except httpx.HTTPError as exc:
                        scrapes.failures.append(f"{p.name}/{service} {url}: {exc!r}")
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
    before = {(p.name, s): cpu_seconds(proc.pid) for p in pipelines for s, proc in p.procs.items()}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    for p in pipelines:
        p.idle_service_cpu_per_s = {
            s: (cpu_seconds(proc.pid) - before[p.name, s]) / elapsed for s, proc in p.procs.items()
        }
        p.idle_cpu_per_s = sum(p.idle_service_cpu_per_s.values())


async def _measure(
    counts: _Counts, pipelines: list[Pipeline], args: argparse.Namespace, tag: str, scrapes: _Scrapes
) -> list[float]:
    """Warm-up, then alternating rounds; returns the on/off throughput ratio of each round."""
    on, off = pipelines
    for p in pipelines:  # warm-up: lazy imports, first batches, consumer group joins
        await _round(counts, p, _tweets(args.events, f"{tag}-{p.name}-warm"), args.round_timeout)
        p.service_cpu_per_1000.clear()
    scrapes.check("warm-up")
    await _idle(pipelines, args.idle_s)
    scrapes.check("idle window")
    pair_ratios = []
    for r in range(args.rounds):
        figures = {}
        for p in (on, off) if r % 2 == 0 else (off, on):
            rate, cpu = await _round(counts, p, _tweets(args.events, f"{tag}-{p.name}-{r}"), args.round_timeout)
            p.rates.append(rate)
            p.cpu_per_1000.append(cpu)
            figures[p.name] = rate
        scrapes.check(f"round {r + 1}")
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
        from tests.support.inference import build_tiny_repo, tiny_repo_from_env

        repo = build_tiny_repo(tiny_repo_from_env())
    tag = f"benchmetrics-{uuid.uuid4().hex[:6]}"
    pipelines = []
    for name, metrics in (("on", True), ("off", False)):
        topics = {spec.name: f"bench.{tag}.{name}.{spec.name}" for spec in ALL_TOPICS}
        await create_topics(kafka, ALL_TOPICS, rename=topics)
        ports = {s: pick_port(BASE_PORT[name] + i) for i, s in enumerate(SERVICES)}
        pipelines.append(Pipeline(name, metrics, topics, ports))
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    scrapes = _Scrapes()
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
        scraper = asyncio.create_task(_scraper(pipelines, stop, args.scrape_interval, scrapes))
        counts = _Counts(kafka)
        await counts.consumer.start()
        try:
            pair_ratios = await _measure(counts, pipelines, args, tag, scrapes)
        finally:
            await counts.consumer.stop()
        stop.set()
        await scraper
        scrapes.check("last round")
        # The components, with the pipelines quiet and nothing else of the bench running.
        components = await _components(kafka, pipelines, args, tag)
    finally:
        stop.set()
        if scraper is not None:
            await scraper
        for p in pipelines:
            for proc in p.procs.values():
                stop_service(proc)
        await delete_run_topics(kafka, f"bench.{tag}.")
    on, off = pipelines
    return report(on, off, pair_ratios, components, args)


@dataclass
class UpdateCost:
    """CPU cost of one metric update in this process, enabled minus disabled (no-op stand-in)."""

    counter_us: float  # ``labels(...).inc()`` of a two-label counter
    histogram_us: float  # ``labels(...).observe()`` of a two-label latency histogram


def update_cost(repeats: int = 7, calls: int = 20_000) -> UpdateCost:
    """Median over ``repeats`` of the process CPU time of ``calls`` updates, on minus off."""
    from textpulse.observability.metrics import ServiceMetrics

    def per_call(update: Any) -> float:
        started = time.process_time()
        for _ in range(calls):
            update()
        return (time.process_time() - started) / calls

    on, off = ServiceMetrics("bench", enabled=True), ServiceMetrics("bench", enabled=False)
    counter = [
        per_call(lambda: on.processed.labels("bench", "text.raw").inc())
        - per_call(lambda: off.processed.labels("bench", "text.raw").inc())
        for _ in range(repeats)
    ]
    histogram = [
        per_call(lambda: on.handler_duration.labels("bench", "text.raw").observe(0.05))
        - per_call(lambda: off.handler_duration.labels("bench", "text.raw").observe(0.05))
        for _ in range(repeats)
    ]
    return UpdateCost(statistics.median(counter) * 1e6, statistics.median(histogram) * 1e6)


#: routes hit by the scraper and health checks: their HTTP metrics are scrape-driven, not per record
_TIME_DRIVEN_ROUTES = {"/metrics", "/health", "/ready"}


def updates_per_event(exposition: str, events: int) -> tuple[float, float, bool]:
    """(counter updates, histogram observations) per event of one service's ``/metrics``; lag gauge present.

    Histograms count observations exactly (``_count``); a counter's value is an
    upper bound of its ``inc`` calls. Gauges are set by time-driven code (lag
    probe) or read at scrape time; HTTP metrics of scrape and health routes are
    counted with the scrapes.
    """
    from prometheus_client.parser import text_string_to_metric_families

    counters = histograms = 0.0
    lag = False
    for family in text_string_to_metric_families(exposition):
        if not family.name.startswith("textpulse_"):
            continue
        lag |= family.name == "textpulse_consumer_lag" and bool(family.samples)
        for sample in family.samples:
            if sample.labels.get("route") in _TIME_DRIVEN_ROUTES:
                continue
            if family.type == "counter" and sample.name.endswith("_total"):
                counters += sample.value
            elif family.type == "histogram" and sample.name.endswith("_count"):
                histograms += sample.value
    return counters / max(1, events), histograms / max(1, events), lag


async def _scrape_cost(p: Pipeline, scrapes: int) -> tuple[dict[str, float], dict[str, str]]:
    """Per service: CPU ms of one ``/metrics`` request (its process, less its idle rate); the last exposition."""
    cost, text = {}, {}
    async with httpx.AsyncClient(timeout=10.0) as client:
        for s, proc in p.procs.items():
            url = f"http://127.0.0.1:{p.ports[s]}/metrics"
            cpu0, started = cpu_seconds(proc.pid), time.monotonic()
            for _ in range(scrapes):
                try:
                    response = await client.get(url)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    msg = f"{p.name}/{s} {url}: scrape failed while measuring exposition: {exc!r}"
                    raise ScrapeFailed(msg) from exc
            idle = p.idle_service_cpu_per_s.get(s, 0.0) * (time.monotonic() - started)
            cost[s] = max(0.0, cpu_seconds(proc.pid) - cpu0 - idle) / scrapes * 1000
            text[s] = response.text
    return cost, text


async def _probe_cost(kafka: KafkaSettings, group: str, topic: str, probes: int) -> float:
    """CPU ms of one consumer-lag probe (the services' own ``measure_lag``) against a live group, in this process."""
    from aiokafka.admin import AIOKafkaAdminClient
    from textpulse.observability.lag import measure_lag

    admin = AIOKafkaAdminClient(**client_options(kafka))  # type: ignore[arg-type]
    consumer = AIOKafkaConsumer(**client_options(kafka))  # type: ignore[arg-type]
    await admin.start()
    await consumer.start()
    try:
        await measure_lag(admin, consumer, group, [topic])  # first call: connections, metadata (once per service)
        started = time.process_time()
        for _ in range(probes):
            await measure_lag(admin, consumer, group, [topic])
        return (time.process_time() - started) / probes * 1000
    finally:
        await consumer.stop()
        await admin.close()


@dataclass
class Components:
    """Each part of the metric work, measured in this run."""

    updates: UpdateCost
    #: service -> (counter updates, histogram observations) per event, from the "on" pipeline's exposition
    per_event_updates: dict[str, tuple[float, float]]
    #: service -> CPU ms of one scrape, on and off
    scrape_ms: dict[str, tuple[float, float]]
    probe_ms: float  # CPU of one lag probe
    probing: list[str]  # services of the "on" pipeline that export the lag gauge
    lag_period_s: float

    def per_event_ms(self) -> float:
        u = self.updates
        return sum(c * u.counter_us + h * u.histogram_us for c, h in self.per_event_updates.values()) / 1000

    def per_second_ms(self, scrape_interval_s: float) -> float:
        scrapes = sum(on - off for on, off in self.scrape_ms.values()) / scrape_interval_s
        return scrapes + len(self.probing) * self.probe_ms / self.lag_period_s


async def _components(
    kafka: KafkaSettings, pipelines: Sequence[Pipeline], args: argparse.Namespace, tag: str
) -> Components:
    from textpulse.settings import ServiceSettings

    on, off = pipelines
    scrape_on, texts = await _scrape_cost(on, args.cost_scrapes)
    scrape_off, _ = await _scrape_cost(off, args.cost_scrapes)
    per_event, probing = {}, []
    for s in SERVICES:
        counters, histograms, lag = updates_per_event(texts[s], on.delivered)
        per_event[s] = (counters, histograms)
        if lag:
            probing.append(s)
    group = f"{tag}-{on.name}-classify"  # the group _env gave the "on" classify
    probe_ms = await _probe_cost(kafka, group, on.topics["text.raw"], args.cost_probes)
    return Components(
        updates=update_cost(),
        per_event_updates=per_event,
        scrape_ms={s: (scrape_on[s], scrape_off[s]) for s in SERVICES},
        probe_ms=probe_ms,
        probing=probing,
        lag_period_s=float(ServiceSettings.model_fields["lag_refresh_s"].default),
    )


def report(on: Pipeline, off: Pipeline, pair_ratios: list[float], c: Components, args: argparse.Namespace) -> int:
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
    per_event_ms = c.per_event_ms()
    per_second_ms = c.per_second_ms(args.scrape_interval)
    cpu_event_ms = cpu_off  # CPU-s per 1,000 events = ms per event
    bound = (per_event_ms + per_second_ms / rate_off) / cpu_event_ms
    u = c.updates
    console.print(
        table(
            "Metric work itself, each part measured in this run: what the overhead can be at most",
            [
                (
                    "one update, enabled minus disabled: counter inc / histogram observe",
                    f"{u.counter_us:.2f} / {u.histogram_us:.2f} µs",
                    "",
                    "bench process CPU",
                ),
                *(
                    (
                        f"  {s}: updates per event, counters (upper bound) + histograms",
                        f"{cnt:.2f} + {hist:.2f}",
                        "",
                        f"{(cnt * u.counter_us + hist * u.histogram_us):.1f} µs CPU per event",
                    )
                    for s, (cnt, hist) in c.per_event_updates.items()
                ),
                *(
                    (f"  {s}: one /metrics scrape, on / off", f"{son:.2f} / {soff:.2f} ms", "", "service process CPU")
                    for s, (son, soff) in c.scrape_ms.items()
                ),
                (
                    "one consumer-lag probe (measure_lag)",
                    f"{c.probe_ms:.2f} ms",
                    "",
                    f"{len(c.probing)} service(s) every {c.lag_period_s:g} s: {', '.join(c.probing) or 'none'}",
                ),
                ("per event: metric updates, all services", f"{per_event_ms * 1000:.1f} µs", "", ""),
                (
                    "per second: scrapes (on - off) + lag probes",
                    f"{per_second_ms:.2f} ms",
                    "",
                    f"idle window: on - off = {(on.idle_cpu_per_s - off.idle_cpu_per_s) * 1000:.1f} ms CPU per s",
                ),
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
    parser.add_argument("--cost-scrapes", type=int, default=100, help="scrapes per service timing one exposition's CPU")
    parser.add_argument("--cost-probes", type=int, default=20, help="lag probes timing one probe's CPU")
    parser.add_argument(
        "--hot-path-only", action="store_true", help="only the in-process cost of one metric update (no Kafka)"
    )
    parser.add_argument("--model-repo", help="exported model repository (default: the tiny test models)")
    args = parser.parse_args(argv)
    if args.hot_path_only:
        u = update_cost()
        console.print(
            f"one metric update, on minus off: counter {u.counter_us:.2f} µs, histogram {u.histogram_us:.2f} µs"
        )
        return 0
    with real_kafka() as bootstrap:
        try:
            return asyncio.run(run(args, bootstrap))
        except ScrapeFailed as exc:
            console.print(f"[red]FAILED[/]: {exc}")
            return 1


if __name__ == "__main__":
    sys.exit(main())
