"""Ingest benchmark (``make bench``): HTTP → Kafka and text.in → text.raw vs raw aiokafka, in one run.

Figures (real Apache Kafka, this machine):
- raw aiokafka producer: the platform's producer settings (acks=all, idempotent, lz4, linger 5 ms),
  ``send()`` per record and one gather per 1,000 — the ceiling for a Python producer here;
- Kafka edge: ``text.in`` pre-filled, then the ingest service drains it; rate from the first to the
  last ``text.raw`` record timestamp (set by ingest's producer when it wrote them);
- HTTP batch: concurrent clients POST 500-event JSON batches; a 202 means acknowledged by Kafka;
- peak RSS (VmHWM) of the ingest process after both loads, and its CPU seconds per 1,000 events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


async def main(n: int, batch: int, concurrency: int) -> dict[str, float]:
    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        tag = uuid.uuid4().hex[:6]
        names = {s.name: f"bench.{tag}.{s.name}" for s in ALL_TOPICS}
        await create_topics(kafka, ALL_TOPICS, rename=names)
        raw_topic = f"bench.{tag}.raw-producer"
        await create_topics(kafka, [ALL_TOPICS[1]], rename={ALL_TOPICS[1].name: raw_topic})

        edge_events = events(n, f"edge{tag}")
        values = [orjson.dumps(e) for e in edge_events]
        console.print(f"raw aiokafka producer: {n:,} records …")
        raw_rate = await raw_producer(kafka, raw_topic, values)

        console.print("pre-filling text.in …")
        await raw_producer(kafka, names["text.in"], values)
        port = free_port()
        env = {
            "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TEXTPULSE_INGEST_HTTP_PORT": str(port),
            "TEXTPULSE_INGEST_TOPIC_IN": names["text.in"],
            "TEXTPULSE_INGEST_TOPIC_OUT": names["text.raw"],
            "TEXTPULSE_INGEST_TOPIC_DLQ": names["dlq.ingest"],
            "TEXTPULSE_INGEST_GROUP_ID": f"bench-{tag}",
            "TEXTPULSE_LOG_LEVEL": "WARNING",
        }
        proc = start_service("services.ingest.app", env, REPO / ".run/bench/ingest.log")
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_ready(url)
            console.print("Kafka edge: draining text.in → text.raw …")
            cpu0 = cpu_seconds(proc.pid)
            edge_rate = await rate_from_timestamps(kafka, names["text.raw"], n)
            edge_cpu = cpu_seconds(proc.pid) - cpu0
            console.print(f"HTTP batch: {n:,} events, batches of {batch}, {concurrency} clients …")
            cpu0 = cpu_seconds(proc.pid)
            http_rate = await http_load(url, events(n, f"http{tag}"), batch, concurrency)
            http_cpu = cpu_seconds(proc.pid) - cpu0
            total = sum((await end_offsets(kafka, names["text.raw"])).values())
            rss = peak_rss_mb(proc.pid)
        finally:
            stop_service(proc)
    results = {
        "events": n,
        "raw_aiokafka_ev_s": raw_rate,
        "kafka_edge_ev_s": edge_rate,
        "edge_ratio": edge_rate / raw_rate,
        "http_batch_ev_s": http_rate,
        "ingest_peak_rss_mb": rss,
        "text_raw_records": total,
        "edge_cpu_s_per_1k": 1000 * edge_cpu / n,
        "http_cpu_s_per_1k": 1000 * http_cpu / n,
    }
    ok = {"ratio": results["edge_ratio"] >= 0.5, "http": http_rate >= 5000, "rss": rss <= 300}
    console.print(
        table(
            f"ingest benchmark — {n:,} real tweets per load, 2-core machine",
            [
                ("raw aiokafka producer", f"{raw_rate:,.0f} ev/s", "reference", ""),
                ("Kafka edge text.in → text.raw", f"{edge_rate:,.0f} ev/s", "", ""),
                ("edge / raw aiokafka", f"{results['edge_ratio']:.2f}×", "≥ 0.5×", "PASS" if ok["ratio"] else "FAIL"),
                ("HTTP batch endpoint", f"{http_rate:,.0f} ev/s", "≥ 5,000 ev/s", "PASS" if ok["http"] else "FAIL"),
                ("ingest peak RSS", f"{rss:,.0f} MiB", "≤ 300 MiB", "PASS" if ok["rss"] else "FAIL"),
                ("ingest CPU, Kafka edge", f"{results['edge_cpu_s_per_1k']:.3f} s / 1k ev", "", ""),
                ("ingest CPU, HTTP batch", f"{results['http_cpu_s_per_1k']:.3f} s / 1k ev", "", ""),
                ("records in text.raw", f"{total:,}", f"{2 * n:,}", "PASS" if total == 2 * n else "FAIL"),
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
    args = parser.parse_args()
    asyncio.run(main(args.events, args.batch, args.concurrency))
