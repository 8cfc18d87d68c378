"""Ingest benchmark (``make bench``): HTTP → Kafka and text.in → text.raw vs raw aiokafka, in one run.

Figures (real Apache Kafka, this machine):
- raw aiokafka producer: the platform's producer settings (acks=all, idempotent, lz4, linger 5 ms),
  ``send()`` per record and one gather per 1,000 — the ceiling for a Python producer here;
- Kafka edge: ``text.in`` pre-filled, then the ingest service drains it; rate from the first to the
  last ``text.raw`` record timestamp (set by ingest's producer when it wrote them);
- HTTP batch: concurrent clients POST 500-event JSON batches; a 202 means acknowledged by Kafka;
- peak RSS (VmHWM) of the ingest processes, and their CPU seconds per 1,000 events.
Each load runs ``--rounds`` times (fresh topics and a fresh service per edge round); medians are
reported with every round, because single runs on a shared 2-core machine vary by up to 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.datasets import load_text_examples
from textpulse.kafka.admin import client_options, create_topics, end_offsets
from textpulse.kafka.broker import producer_options
from textpulse.kafka.tansu import free_port
from textpulse.settings import KafkaSettings

from bench.common import (
    REPO,
    console,
    cpu_seconds,
    peak_rss_mb,
    real_kafka,
    start_service,
    stop_service,
    table,
    wait_ready,
)
from tests.helpers import read_all


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


async def raw_producer(kafka: KafkaSettings, topic: str, values: list[bytes]) -> float:
    producer = AIOKafkaProducer(**client_options(kafka), **producer_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        started = time.perf_counter()
        for i in range(0, len(values), 1000):
            futures = [
                await producer.send(topic, v, key=str(i + j).encode()) for j, v in enumerate(values[i : i + 1000])
            ]
            await asyncio.gather(*futures)
        return len(values) / (time.perf_counter() - started)
    finally:
        await producer.stop()


async def rate_from_timestamps(kafka: KafkaSettings, topic: str, n: int) -> float:
    records = await read_all(kafka, topic, expect=n, timeout_s=600, idle_s=0.5)
    assert len(records) >= n, f"only {len(records)} of {n} records in {topic}"
    stamps = sorted(r.timestamp for r in records)
    return (len(stamps) - 1) / max(1e-3, (stamps[-1] - stamps[0]) / 1000)


async def http_load(url: str, evs: list[dict[str, object]], batch: int, concurrency: int) -> float:
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

    async with httpx.AsyncClient(timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return len(evs) / (time.perf_counter() - started)


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


async def edge_round(kafka: KafkaSettings, bootstrap: str, n: int, tag: str) -> tuple[float, float, float]:
    """One Kafka-edge round on fresh topics: (events/s, CPU s per 1k events, peak RSS MiB)."""
    names = await _fresh_topics(kafka, tag)
    await raw_producer(kafka, names["text.in"], [orjson.dumps(e) for e in events(n, f"edge{tag}")])
    port = free_port()
    proc = start_service("services.ingest.app", _env(bootstrap, names, port, f"bench-{tag}"), LOG)
    try:
        await wait_ready(f"http://127.0.0.1:{port}")
        cpu0 = cpu_seconds(proc.pid)
        rate = await rate_from_timestamps(kafka, names["text.raw"], n)
        return rate, 1000 * (cpu_seconds(proc.pid) - cpu0) / n, peak_rss_mb(proc.pid)
    finally:
        stop_service(proc)


LOG = REPO / ".run/bench/ingest.log"


def median(xs: list[float]) -> float:
    return statistics.median(xs)


async def main(n: int, batch: int, concurrency: int, rounds: int) -> dict[str, object]:
    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        tag = uuid.uuid4().hex[:6]
        raw_topic = f"bench.{tag}.raw-producer"
        await create_topics(kafka, [ALL_TOPICS[1]], rename={ALL_TOPICS[1].name: raw_topic})
        values = [orjson.dumps(e) for e in events(n, f"raw{tag}")]
        await raw_producer(kafka, raw_topic, values[:5000])  # warm-up: connections, metadata, JIT-free caches
        raw_rates, edge_rates, edge_cpu, rss = [], [], [], []
        for r in range(rounds):
            console.print(f"round {r + 1}/{rounds}: raw aiokafka producer, then the Kafka edge ({n:,} events each)")
            raw_rates.append(await raw_producer(kafka, raw_topic, values))
            rate, cpu, peak = await edge_round(kafka, bootstrap, n, f"{tag}{r}")
            edge_rates.append(rate)
            edge_cpu.append(cpu)
            rss.append(peak)
        names = await _fresh_topics(kafka, f"{tag}h")
        port = free_port()
        proc = start_service("services.ingest.app", _env(bootstrap, names, port, f"bench-{tag}h"), LOG)
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url)
            http_rates, http_cpu = [], []
            for r in range(rounds):
                console.print(
                    f"HTTP batch round {r + 1}/{rounds}: {n:,} events, batches of {batch}, {concurrency} clients"
                )
                cpu0 = cpu_seconds(proc.pid)
                http_rates.append(await http_load(url, events(n, f"http{tag}{r}"), batch, concurrency))
                http_cpu.append(1000 * (cpu_seconds(proc.pid) - cpu0) / n)
            total = sum((await end_offsets(kafka, names["text.raw"])).values())
            rss.append(peak_rss_mb(proc.pid))
        finally:
            stop_service(proc)
    raw_m, edge_m, http_m, rss_max = median(raw_rates), median(edge_rates), median(http_rates), max(rss)
    ratios = [e / r for e, r in zip(edge_rates, raw_rates, strict=True)]
    results: dict[str, object] = {
        "events_per_round": n,
        "rounds": rounds,
        "raw_aiokafka_ev_s": raw_rates,
        "kafka_edge_ev_s": edge_rates,
        "edge_ratio_per_round": ratios,
        "edge_ratio_of_medians": edge_m / raw_m,
        "http_batch_ev_s": http_rates,
        "ingest_peak_rss_mb": rss_max,
        "edge_cpu_s_per_1k": edge_cpu,
        "http_cpu_s_per_1k": http_cpu,
        "http_records_in_text_raw": total,
    }
    ok = {"ratio": edge_m / raw_m >= 0.5, "http": http_m >= 5000, "rss": rss_max <= 300}
    fmt = ", ".join
    console.print(
        table(
            f"ingest benchmark — median of {rounds} rounds × {n:,} real tweets, 2-core machine",
            [
                ("raw aiokafka producer", f"{raw_m:,.0f} ev/s", "reference", fmt(f"{x:,.0f}" for x in raw_rates)),
                ("Kafka edge text.in → text.raw", f"{edge_m:,.0f} ev/s", "", fmt(f"{x:,.0f}" for x in edge_rates)),
                (
                    "edge / raw aiokafka",
                    f"{edge_m / raw_m:.2f}×",
                    "≥ 0.5×",
                    ("PASS" if ok["ratio"] else "FAIL") + " (rounds " + fmt(f"{x:.2f}" for x in ratios) + ")",
                ),
                ("HTTP batch endpoint", f"{http_m:,.0f} ev/s", "≥ 5,000 ev/s", "PASS" if ok["http"] else "FAIL"),
                ("ingest peak RSS", f"{rss_max:,.0f} MiB", "≤ 300 MiB", "PASS" if ok["rss"] else "FAIL"),
                ("ingest CPU, Kafka edge", f"{median(edge_cpu):.3f} s / 1k ev", "", ""),
                ("ingest CPU, HTTP batch", f"{median(http_cpu):.3f} s / 1k ev", "", ""),
                (
                    "HTTP records in text.raw",
                    f"{total:,}",
                    f"{rounds * n:,}",
                    "PASS" if total == rounds * n else "FAIL",
                ),
            ],
        )
    )
    out = REPO / ".run/bench/ingest.json"
    out.write_text(json.dumps(results, indent=2))
    console.print(f"written {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch, args.concurrency, args.rounds))
