"""Ingest benchmark (``make bench``): the ingest service vs a raw batching aiokafka producer, in one run.

Reference — the best a user could write with the same library here: a raw aiokafka producer with
the service's own producer settings (read from ``IngestSettings().kafka`` through
``producer_options``, so they cannot drift: acks=all, idempotent, lz4, linger, batch size),
writing the very records the service writes to ``text.raw`` (same values, keys and headers,
built by ``services.ingest.core`` before its clock) in full per-partition batches with
``create_batch`` / ``send_batch``, partitions in rotation, every batch in flight, all
acknowledgements awaited at the end. It runs in its own process, as the service does.

Service, two edges:

- Kafka edge ``text.in → text.raw``: a fresh ingest service (its own process) starts on fresh
  topics and joins its consumer group; then the same batching writer (own process) writes the raw
  JSON events to ``text.in`` while the service consumes, validates and writes them to ``text.raw``;
- HTTP batch: concurrent clients POST 500-event JSON batches to the running service (a 202 means
  acknowledged by Kafka).

One clock for all three: wall clock from the first send to the moment the last record is visible
to a consumer tailing the output topic in this process (started before the load, same code for
all). "First send" is when the writer starts writing (the reference's records, or the edge's
input to ``text.in``: the service's whole work is inside the clock, its start-up is not) and the
first POST for the HTTP edge.

Each load runs ``--rounds`` times (fresh topics, a fresh writer and a fresh service per round, raw
first): a round's ratio is service / reference of that round, the figure the median of the
rounds' ratios, because the 2-core machine is shared and its speed drifts. Also printed: peak RSS
(VmHWM) of the ingest processes and CPU seconds per 1,000 events of the reference writer and of
the service while it works. Figures go to ``.run/bench/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from textpulse.contracts.topics import ALL_TOPICS, TEXT_RAW
from textpulse.datasets import load_text_examples
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.kafka.broker import producer_options
from textpulse.kafka.tansu import free_port
from textpulse.settings import KafkaSettings

from bench.common import (
    REPO,
    console,
    cpu_seconds,
    delete_run_topics,
    peak_rss_mb,
    real_kafka,
    start_service,
    stop_service,
    table,
    wait_ready,
)

LOG = REPO / ".run/bench/ingest.log"


def events(n: int, prefix: str) -> list[dict[str, object]]:
    """Real tweets (cycled) as ingest input."""
    texts = [e.text for e in load_text_examples("twitter_fin_sentiment/sent_train.csv")]
    return [
        {
            "id": f"{prefix}-{i}",
            "source": "bench",
            "channel": "social",
            "text": texts[i % len(texts)],
            "metadata": {"i": i},
        }
        for i in range(n)
    ]


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]


def service_records(n: int, prefix: str) -> list[Record]:
    """The ``text.raw`` records the service writes for ``events(n, prefix)``: (key, value, headers)."""
    from services.ingest.core import now, to_record, validate_event

    ingest_time = now()
    out: list[Record] = []
    for e in events(n, prefix):
        rec = to_record(validate_event(e, ingest_time=ingest_time))
        out.append((rec.key, rec.value, [(k, v.encode()) for k, v in rec.headers.items()]))
    return out


async def batched_write(producer: AIOKafkaProducer, topic: str, records: list[Record]) -> None:
    """Full per-partition batches (``create_batch``/``send_batch``), partitions in rotation, all in flight.

    Keyed records go to the partition of the default (murmur2) partitioner, as with ``send``;
    keyless ones fill one batch after the other, each on the next partition.
    """
    partitions = sorted(await producer.partitions_for(topic))
    partitioner = producer._partitioner  # the producer's own (murmur2) partitioner, as ``send`` uses
    open_batches: dict[int, Any] = {}
    futures: list[asyncio.Future[Any]] = []
    turn = 0
    for key, value, headers in records:
        part = partitioner(key, partitions, partitions) if key is not None else partitions[turn % len(partitions)]
        batch = open_batches.get(part)
        if batch is None:
            batch = open_batches[part] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            futures.append(await producer.send_batch(batch, topic, partition=part))
            del open_batches[part]
            if key is None:
                turn += 1  # that partition's batch is full: the next keyless records go to the next one
                part = partitions[turn % len(partitions)]
            batch = open_batches.get(part) or producer.create_batch()
            open_batches[part] = batch
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                msg = f"a record of {len(value)} bytes does not fit an empty batch"
                raise ValueError(msg)
    for part, batch in open_batches.items():
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=part))
    await asyncio.gather(*futures)


async def raw_writer(topic: str, records: list[Record]) -> dict[str, float]:
    """The reference, in this (separate) process: settings from ``IngestSettings`` as the service reads them."""
    from services.ingest.settings import IngestSettings

    kafka = IngestSettings().kafka
    producer = AIOKafkaProducer(**client_options(kafka), **producer_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        await producer.partitions_for(topic)  # metadata before the clock, as the service has it
        cpu0, wall0 = time.process_time(), time.time()
        await batched_write(producer, topic, records)
        return {"first_send": wall0, "cpu_s": time.process_time() - cpu0, "wall_to_last_ack_s": time.time() - wall0}
    finally:
        await producer.stop()


@dataclass
class Seen:
    """What the tailing consumer saw: records, the earliest CreateTime (s) and when the last arrived (s)."""

    count: int
    first_stamp_s: float
    last_visible_s: float


class Tail:
    """A consumer on every partition of ``topic`` from its current end: counts what arrives.

    Started before the load; the same code ends the clock of every path ("last record visible").
    """

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)  # type: ignore[arg-type]

    async def start(self) -> None:
        await self.consumer.start()
        tps: list[TopicPartition] = []
        while not tps:
            tps = await topic_partitions(self.consumer, self.topic)
            if not tps:
                await asyncio.sleep(0.1)
        self.consumer.assign(tps)
        # explicit offsets, not seek_to_end (resolved lazily, after records may have arrived)
        for tp, offset in (await self.consumer.end_offsets(tps)).items():
            self.consumer.seek(tp, offset)

    async def until(self, n: int, timeout_s: float = 900) -> Seen:
        count, first = 0, float("inf")
        deadline = time.monotonic() + timeout_s
        while count < n:
            if time.monotonic() > deadline:
                msg = f"only {count} of {n} records visible in {self.topic} after {timeout_s:.0f}s"
                raise TimeoutError(msg)
            for records in (await self.consumer.getmany(timeout_ms=100, max_records=100_000)).values():
                count += len(records)
                first = min(first, min(r.timestamp for r in records) / 1000)
        return Seen(count, first, time.time())

    async def stop(self) -> None:
        await self.consumer.stop()


def _env(bootstrap: str, names: dict[str, str], port: int, group: str) -> dict[str, str]:
    return {
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "TEXTPULSE_INGEST_HTTP_PORT": str(port),
        "TEXTPULSE_INGEST_TOPIC_IN": names["text.in"],
        "TEXTPULSE_INGEST_TOPIC_OUT": names["text.raw"],
        "TEXTPULSE_INGEST_TOPIC_DLQ": names["dlq.ingest"],
        "TEXTPULSE_INGEST_GROUP_ID": group,
        "TEXTPULSE_LOG_LEVEL": "WARNING",
    }


async def _fresh_topics(kafka: KafkaSettings, tag: str) -> dict[str, str]:
    names = {s.name: f"bench.{tag}.{s.name}" for s in ALL_TOPICS}
    await create_topics(kafka, ALL_TOPICS, rename=names)
    return names


@dataclass
class Round:
    rate: float  # events/s, first send → last record visible
    cpu_per_1k: float  # CPU seconds per 1,000 events of the writing process
    rss_mb: float = float("nan")


def raw_topic(tag: str) -> str:
    return f"bench.{tag}.raw-producer"


async def run_writer(bootstrap: str, topic: str, n: int, *, json_events: bool) -> dict[str, float]:
    """The batching writer in a child process: the service's records (reference) or raw JSON (``text.in``)."""
    args = ["--raw-writer", topic, "--events", str(n)] + (["--json-events"] if json_events else [])
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_ingest",
        *args,
        cwd=REPO,
        env={**os.environ, "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TEXTPULSE_LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, f"writer failed ({proc.returncode})"
    stats: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return stats


async def raw_round(kafka: KafkaSettings, bootstrap: str, n: int, tag: str) -> Round:
    """The reference on a fresh ``text.raw``-like topic, in a child process (as the service runs)."""
    topic = raw_topic(tag)
    await create_topics(kafka, [TEXT_RAW], rename={TEXT_RAW.name: topic})  # no-op when made up front
    tail = Tail(kafka, topic)
    await tail.start()
    try:
        writer = asyncio.create_task(run_writer(bootstrap, topic, n, json_events=False))
        seen = await tail.until(n)
        stats = await writer
    finally:
        await tail.stop()
    return Round(n / (seen.last_visible_s - stats["first_send"]), 1000 * stats["cpu_s"] / n)


async def group_stable(kafka: KafkaSettings, group: str, timeout_s: float = 120) -> None:
    """Until ``group`` has joined and been assigned its partitions (then input is consumed at once)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))  # type: ignore[arg-type]
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_consumer_groups([group])
            groups = described[0].groups if described else []
            if groups and groups[0][2] == "Stable" and groups[0][5]:
                return
            if time.monotonic() > deadline:
                msg = f"consumer group {group} not stable after {timeout_s:.0f}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def edge_round(kafka: KafkaSettings, bootstrap: str, n: int, tag: str) -> Round:
    """One Kafka-edge round on fresh topics: a fresh service, joined and idle, then ``text.in`` is written.

    The clock starts when the input writer (the reference's batching writer, raw JSON, its own
    process) starts writing ``text.in``, and ends when the last record is visible in ``text.raw``:
    the service's consumption, validation and writing all fall inside it.
    """
    names = await _fresh_topics(kafka, tag)  # no-op when made up front
    port = free_port()
    group = f"bench-{tag}"
    proc = start_service("services.ingest.app", _env(bootstrap, names, port, group), LOG)
    tail = Tail(kafka, names["text.raw"])
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        await group_stable(kafka, group)
        await tail.start()
        cpu0 = cpu_seconds(proc.pid)
        writer = asyncio.create_task(run_writer(bootstrap, names["text.in"], n, json_events=True))
        seen = await tail.until(n)
        cpu = cpu_seconds(proc.pid) - cpu0
        stats = await writer
        return Round(n / (seen.last_visible_s - stats["first_send"]), 1000 * cpu / n, peak_rss_mb(proc.pid))
    finally:
        await tail.stop()
        stop_service(proc)


async def http_round(
    kafka: KafkaSettings, url: str, topic: str, pid: int, evs: list[dict[str, object]], batch: int, concurrency: int
) -> Round:
    """POST ``evs`` in batches from ``concurrency`` clients; first POST → last record visible in ``topic``."""
    chunks = [orjson.dumps(evs[i : i + batch]) for i in range(0, len(evs), batch)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            resp = await client.post(
                f"{url}/v1/events/batch", content=body, headers={"content-type": "application/json"}
            )
            assert resp.status_code == 202, resp.text[:300]

    tail = Tail(kafka, topic)
    await tail.start()
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            cpu0 = cpu_seconds(pid)
            started = time.time()
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            seen = await tail.until(len(evs))
            cpu = cpu_seconds(pid) - cpu0
    finally:
        await tail.stop()
    return Round(len(evs) / (seen.last_visible_s - min(started, seen.first_stamp_s)), 1000 * cpu / len(evs))


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def _fmt(xs: list[float], spec: str) -> str:
    return ", ".join(format(x, spec) for x in xs)


async def main(n: int, batch: int, concurrency: int, rounds: int) -> dict[str, object]:
    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        tag = uuid.uuid4().hex[:6]
        try:
            # Every topic up front: a topic just created answers NotLeaderForPartition for a moment
            # (after its leaders appear in the metadata), and those retries must not land in a clock.
            tags = [f"{tag}{r}" for r in range(rounds)] + [f"{tag}h"]
            for t in tags:
                await _fresh_topics(kafka, t)
            for t in [f"{tag}w", *(f"{tag}r{r}" for r in range(rounds))]:
                await create_topics(kafka, [TEXT_RAW], rename={TEXT_RAW.name: raw_topic(t)})
            await asyncio.sleep(3)
            await raw_round(kafka, bootstrap, min(n, 5000), f"{tag}w")  # warm-up: broker caches, page cache
            raw: list[Round] = []
            edge: list[Round] = []
            http: list[Round] = []
            for r in range(rounds):
                console.print(f"round {r + 1}/{rounds}: raw batching producer, then the Kafka edge ({n:,} events each)")
                raw.append(await raw_round(kafka, bootstrap, n, f"{tag}r{r}"))
                edge.append(await edge_round(kafka, bootstrap, n, f"{tag}{r}"))
            names = await _fresh_topics(kafka, f"{tag}h")
            port = free_port()
            proc = start_service("services.ingest.app", _env(bootstrap, names, port, f"bench-{tag}h"), LOG)
            try:
                url = f"http://127.0.0.1:{port}"
                await wait_ready(url)
                for r in range(rounds):
                    console.print(
                        f"HTTP batch round {r + 1}/{rounds}: {n:,} events, batches of {batch}, {concurrency} clients"
                    )
                    http.append(
                        await http_round(
                            kafka, url, names["text.raw"], proc.pid, events(n, f"http{tag}{r}"), batch, concurrency
                        )
                    )
                http_rss = peak_rss_mb(proc.pid)
            finally:
                stop_service(proc)
        finally:
            # Every topic of this run is named bench.<tag>...: delete them, or each run leaves ~110 behind (3 rounds).
            await delete_run_topics(kafka, f"bench.{tag}")
    from services.ingest.settings import IngestSettings

    settings = IngestSettings()
    edge_ratios = [e.rate / r.rate for e, r in zip(edge, raw, strict=True)]
    http_ratios = [h.rate / r.rate for h, r in zip(http, raw, strict=True)]
    edge_ratio, http_ratio = median(edge_ratios), median(http_ratios)
    rss_max = max([e.rss_mb for e in edge] + [http_rss])
    raw_rates, edge_rates, http_rates = [x.rate for x in raw], [x.rate for x in edge], [x.rate for x in http]
    results: dict[str, object] = {
        "events_per_round": n,
        "rounds": rounds,
        "clock": "wall clock, first send -> last record visible to a tailing consumer",
        "producer_options": {k: v for k, v in producer_options(settings.kafka).items() if k != "request_timeout_ms"},
        "raw_producer_ev_s": raw_rates,
        "kafka_edge_ev_s": edge_rates,
        "http_batch_ev_s": http_rates,
        "edge_ratio_per_round": edge_ratios,
        "edge_ratio_median": edge_ratio,
        "http_ratio_per_round": http_ratios,
        "http_ratio_median": http_ratio,
        "raw_cpu_s_per_1k": [x.cpu_per_1k for x in raw],
        "edge_cpu_s_per_1k": [x.cpu_per_1k for x in edge],
        "http_cpu_s_per_1k": [x.cpu_per_1k for x in http],
        "ingest_peak_rss_mb": rss_max,
    }
    ok = {"edge": edge_ratio >= 0.5, "http": median(http_rates) >= 5000, "rss": rss_max <= 300}
    opts = producer_options(settings.kafka)
    console.print(
        table(
            f"ingest benchmark — {rounds} rounds × {n:,} real tweets; clock: first send → last record visible",
            [
                (
                    "reference: raw aiokafka, create_batch/send_batch",
                    f"{median(raw_rates):,.0f} ev/s",
                    "reference",
                    "rounds " + _fmt(raw_rates, ",.0f"),
                ),
                (
                    "service: Kafka edge text.in → text.raw",
                    f"{median(edge_rates):,.0f} ev/s",
                    "",
                    "rounds " + _fmt(edge_rates, ",.0f"),
                ),
                (
                    "Kafka edge / reference (median of rounds)",
                    f"{edge_ratio:.2f}×",
                    "≥ 0.5×",
                    ("PASS" if ok["edge"] else "FAIL") + " (rounds " + _fmt(edge_ratios, ".2f") + ")",
                ),
                (
                    "service: HTTP batch endpoint",
                    f"{median(http_rates):,.0f} ev/s",
                    "≥ 5,000 ev/s",
                    ("PASS" if ok["http"] else "FAIL") + " (rounds " + _fmt(http_rates, ",.0f") + ")",
                ),
                (
                    "HTTP batch / reference (median of rounds)",
                    f"{http_ratio:.2f}×",
                    "",
                    "rounds " + _fmt(http_ratios, ".2f"),
                ),
                ("ingest peak RSS", f"{rss_max:,.0f} MiB", "≤ 300 MiB", "PASS" if ok["rss"] else "FAIL"),
                ("CPU, reference producer", f"{median(results['raw_cpu_s_per_1k']):.3f} s / 1k ev", "", ""),  # type: ignore[arg-type]
                (
                    "CPU, ingest Kafka edge",
                    f"{median(results['edge_cpu_s_per_1k']):.3f} s / 1k ev",
                    "",
                    "",
                ),  # type: ignore[arg-type]
                ("CPU, ingest HTTP batch", f"{median(results['http_cpu_s_per_1k']):.3f} s / 1k ev", "", ""),  # type: ignore[arg-type]
            ],
        )
    )
    console.print(
        "producer settings of both sides (IngestSettings().kafka): "
        + ", ".join(
            f"{k}={opts[k]}" for k in ("acks", "enable_idempotence", "compression_type", "linger_ms", "max_batch_size")
        )
    )
    for name, ratio in (("Kafka edge", edge_ratio), ("HTTP batch", http_ratio)):
        if ratio > 1.0:
            console.print(
                f"[bold red]{name} is above its reference ({ratio:.2f}×): the reference is weaker than the service "
                "(it writes the same records with the same settings, so it should be the ceiling) — fix "
                "bench.bench_ingest.batched_write before quoting this figure.[/]"
            )
    out = REPO / ".run/bench/ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"written {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    # the batching writer's own process (run_writer): the reference, or the Kafka edge's input
    parser.add_argument("--raw-writer", metavar="TOPIC", help=argparse.SUPPRESS)
    parser.add_argument("--json-events", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_writer:
        # records built before the clock; the last stdout line is read by run_writer
        prefix = uuid.uuid4().hex[:6]
        records: list[Record] = (
            [(None, orjson.dumps(e), []) for e in events(args.events, f"edge-{prefix}")]
            if args.json_events
            else service_records(args.events, f"raw-{prefix}")
        )
        print(json.dumps(asyncio.run(raw_writer(args.raw_writer, records))))
    else:
        asyncio.run(main(args.events, args.batch, args.concurrency, args.rounds))
