"""Index benchmark (``make bench-index``): service indexing rate vs a raw bulk-load, and search p95.

In one run, against the real Elasticsearch and the real Apache Kafka:

- raw bulk-load: the same documents the service builds (same builder, same
  template, same refresh interval, same client factory), written with
  ``elasticsearch.helpers.async_bulk`` (chunks of 1,000) into fresh indices — the
  ceiling for a Python client here. Raw and service alternate in ``--rounds``
  rounds of N/rounds documents each, raw first and once more at the end (the
  machine is shared, its speed drifts): a round's ratio is the service rate over
  the mean of the raw rates just before and just after it, and the figure is the
  median of the rounds' ratios. Both paths first index 20,000 uncounted documents
  (Elasticsearch warms up over tens of thousands), and every round of either path
  writes into its own fresh monthly index (event times moved by whole months);
- service: the index service runs in-process with its Kafka subscriber. After a
  warm-up record, each round's records are produced to ``text.enriched`` while
  the service's consumer is paused (so the bench's own producer does not share
  the service's process and event loop, and the service starts from the same
  place the raw path does: all its input ready); the clock starts when the
  consumer resumes and stops when the service has indexed all of them (its own
  counter). That includes Kafka consumption, JSON/contract validation, PII
  redaction, bulk writes and offset commits. ``--live`` measures the older way:
  produce inside the clock, in the same process, while the service consumes;
- search: p50/p95 latency of ``/v1/search``, ``/v1/entities/{key}/sentiment`` and
  ``/v1/support/similar`` through the service's ASGI app, varied queries, on the
  service-indexed documents.

Data: real financial tweets (social, cashtags as entities, sentiment from their
labels) and Banking77 support messages (intent from their labels), cycled to N.
Figures go to ``.run/bench/index.json``. Target: service ≥ 0.8 × raw.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import logging
import os
import random
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk
from textpulse.contracts.topics import ALERTS_FINANCIAL, SUPPORT_ROUTED, TEXT_ENRICHED, dlq
from textpulse.datasets import load_text_examples
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.broker import producer_options
from textpulse.settings import KafkaSettings

from bench.common import REPO, console, port_open, real_kafka, table
from services.index.app import create_app
from services.index.bulk import action
from services.index.documents import BuildOptions, enriched_document
from services.index.settings import IndexSettings
from services.index.store import install_templates, make_client
from tests.helpers import running

CASHTAG = re.compile(r"\$([A-Za-z]{1,6})\b")
TWEET_SENTIMENT = {"Bearish": "negative", "Bullish": "positive", "Neutral": "neutral"}
BASE = datetime(2026, 11, 1, tzinfo=UTC)
#: Documents each path indexes before the measured rounds.
WARM_DOCS = 20_000


@contextmanager
def real_es(port: int = int(os.environ.get("ES_HTTP_PORT", "9200"))) -> Iterator[str]:
    """The local Elasticsearch: reuse a running one, else start it with the deploy script (and stop it after)."""
    started = False
    if not port_open(port):
        subprocess.run(["bash", str(REPO / "deploy/elasticsearch/start.sh")], check=True)
        started = True
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run(["bash", str(REPO / "deploy/elasticsearch/stop.sh")], check=False)


def corpus(n: int) -> list[dict[str, Any]]:
    """N enriched events from real texts: 2/3 tweets (cashtag entities, sentiment), 1/3 support (intent)."""
    tweets = load_text_examples("twitter_fin_sentiment/sent_train.csv")
    support = load_text_examples("banking77/train.csv")
    model = {"name": "bench", "version": "1"}
    out = []
    for i in range(n):
        is_support = i % 3 == 2
        ex = support[i % len(support)] if is_support else tweets[i % len(tweets)]
        when = BASE + timedelta(seconds=37 * i)
        entities = [
            {
                "surface": m.group(),
                "type": "TICKER",
                "start": m.start(),
                "end": m.end(),
                "key": m.group(1).upper(),
                "score": 1.0,
                "origin": "rule",
            }
            for m in CASHTAG.finditer(ex.text)
        ]
        sentiment = "neutral" if is_support else TWEET_SENTIMENT.get(ex.label or "", "neutral")
        out.append(
            {
                "event": {
                    "id": f"b-{i}",
                    "source": "bench",
                    "channel": "support" if is_support else "social",
                    "text": ex.text,
                    "event_time": when.isoformat(),
                    "ingest_time": when.isoformat(),
                    "conversation_id": f"c-{i}" if is_support else None,
                    "metadata": {"i": i},
                },
                "sentiment": {"label": sentiment, "score": 0.5 + (i % 50) / 100, "model": model},
                "topic": None,
                "intent": {"label": ex.label, "score": 0.9, "model": model} if is_support else None,
                "entities": entities,
                "enriched_time": when.isoformat(),
            }
        )
    return out


async def raw_bulk(es: AsyncElasticsearch, settings: IndexSettings, values: list[bytes]) -> float:
    """docs/s of async_bulk on the documents the service would build (built before the clock starts)."""
    await install_templates(es, settings)
    opts = BuildOptions(prefix=settings.index_prefix, redact=settings.redact_pii)
    now = datetime.now(UTC)
    docs = [enriched_document(v, now, opts) for v in values]
    started = time.perf_counter()
    ok, errors = await async_bulk(
        es,
        (action(d) for d in docs),
        chunk_size=settings.bulk_chunk_docs,
        max_chunk_bytes=settings.bulk_chunk_bytes,
        raise_on_error=False,
    )
    elapsed = time.perf_counter() - started
    assert ok == len(values), errors
    return len(values) / elapsed


def indexed(app: Any) -> float:
    """The service's indexed-documents counter, read from its own child.

    ``registry.get_sample_value`` would collect every metric of the registry
    (per-document histograms included) on each poll, in the service's process:
    polled every 10 ms that alone cost a sizeable share of the service's CPU.
    """
    samples = app.state.metrics.documents.labels("index", "events", "indexed").collect()[0].samples
    return float(samples[0].value) if samples else 0.0


def consumers(app: Any) -> list[Any]:
    """The aiokafka consumers of the service's subscribers (to pause them while the bench produces)."""
    return [sub.consumer for sub in app.state.broker.subscribers if getattr(sub, "consumer", None) is not None]


def pause(app: Any) -> None:
    for consumer in consumers(app):
        consumer.pause(*consumer.assignment())


def resume(app: Any) -> None:
    for consumer in consumers(app):
        consumer.resume(*consumer.assignment())


async def wait_indexed(app: Any, target: int, timeout_s: float) -> None:
    """Until the service's counter reaches ``target`` (polled every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if indexed(app) >= target:
            return
        if time.monotonic() > deadline:
            msg = f"service indexed {indexed(app):.0f} of {target} documents in {timeout_s:.0f}s"
            raise TimeoutError(msg)
        await asyncio.sleep(0.01)


async def produce(kafka: KafkaSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(kafka), **producer_options(kafka))  # type: ignore[arg-type]
    await producer.start()
    try:
        for i in range(0, len(values), 2000):
            await asyncio.gather(
                *[await producer.send(topic, v, key=str(j).encode()) for j, v in enumerate(values[i : i + 2000], i)]
            )
    finally:
        await producer.stop()


async def service_round(app: Any, kafka: KafkaSettings, topic: str, values: list[bytes], *, live: bool) -> float:
    """docs/s of the service on ``values``: from a backlog (consumer paused while producing), or ``live``."""
    target = indexed(app) + len(values)
    if live:
        started = time.perf_counter()
        await produce(kafka, topic, values)
    else:
        pause(app)
        await produce(kafka, topic, values)
        started = time.perf_counter()
        resume(app)
    await wait_indexed(app, int(target), 1800)
    return len(values) / (time.perf_counter() - started)


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


async def search_latencies(
    client: httpx.AsyncClient, events: list[dict[str, Any]], queries: int
) -> dict[str, list[float]]:
    """Sequential requests per endpoint with varied parameters; seconds per request."""
    rng = random.Random(7)
    words = [w for e in events[:2000] for w in e["event"]["text"].split() if w.isalpha() and len(w) > 4] or ["card"]
    keys = sorted({ent["key"] for e in events for ent in e["entities"]}) or ["AAPL"]
    support = [e["event"]["text"] for e in events if e["event"]["channel"] == "support"] or ["my card"]
    out: dict[str, list[float]] = {"search": [], "entity_sentiment": [], "support_similar": []}
    for _ in range(queries):
        params: dict[str, Any] = {"q": " ".join(rng.sample(words, 1)), "size": 20}
        if rng.random() < 0.5:
            params["sentiment"] = rng.choice(["positive", "negative", "neutral"])
        if rng.random() < 0.3:
            params["channel"] = rng.choice(["social", "support"])
        calls = [
            ("search", "/v1/search", params),
            (
                "entity_sentiment",
                f"/v1/entities/{rng.choice(keys)}/sentiment",
                {"interval": rng.choice(["hour", "day"])},
            ),
            ("support_similar", "/v1/support/similar", {"text": rng.choice(support), "size": 5}),
        ]
        for name, path, prm in calls:
            started = time.perf_counter()
            resp = await client.get(path, params=prm)
            out[name].append(time.perf_counter() - started)
            assert resp.status_code == 200, resp.text
    return out


def report(
    raw_rates: list[float],
    svc_rates: list[float],
    lat: dict[str, list[float]],
    total: int,
    queries: int,
    config: dict[str, Any],
    per_round: int,
) -> dict[str, Any]:
    """Print the table and write ``.run/bench/index.json``."""
    rounds = len(svc_rates)
    total_indexed = per_round * rounds
    # raw ran before and after each service round: compare with their mean (cancels a linear drift)
    around = [(a + b) / 2 for a, b in itertools.pairwise(raw_rates)]
    ratios = [s_ / r_ for s_, r_ in zip(svc_rates, around, strict=True)]
    ratio = statistics.median(ratios)
    results: dict[str, Any] = {
        "docs_per_path": total_indexed,
        "docs_per_round": per_round,
        "rounds": rounds,
        "raw_bulk_docs_per_s": [round(x, 1) for x in raw_rates],
        "service_docs_per_s": [round(x, 1) for x in svc_rates],
        "ratio_per_round": [round(x, 3) for x in ratios],
        "ratio_median": round(ratio, 3),
        "search_docs": total,
        **{f"{k}_p50_ms": round(p(v, 50) * 1000, 1) for k, v in lat.items()},
        **{f"{k}_p95_ms": round(p(v, 95) * 1000, 1) for k, v in lat.items()},
        "queries_per_endpoint": queries,
        **config,
    }
    verdict = "ok" if ratio >= 0.8 else "BELOW"
    rows = [
        ("raw async_bulk, before each round and after", " / ".join(f"{x:,.0f}" for x in raw_rates) + " docs/s", "", ""),
        ("index service (Kafka → ES), per round", " / ".join(f"{x:,.0f}" for x in svc_rates) + " docs/s", "", ""),
        ("ratio per round", " / ".join(f"{x:.2f}" for x in ratios), "", ""),
        ("ratio service / raw (median of rounds)", f"{ratio:.2f}", "≥ 0.80", verdict),
        *[(f"{k} p50 / p95", f"{results[f'{k}_p50_ms']} / {results[f'{k}_p95_ms']} ms", "", "") for k in lat],
    ]
    console.print(table(f"index benchmark ({total_indexed:,} docs per path, search on {total:,})", rows))
    out = REPO / ".run/bench/index.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"written {out}")
    return results


def months_before(when: datetime, months: int) -> datetime:
    """``when`` moved back by whole calendar months (day kept; the corpus starts on the 1st)."""
    total = when.year * 12 + (when.month - 1) - months
    return when.replace(year=total // 12, month=total % 12 + 1)


def with_round(events: list[dict[str, Any]], r: int) -> list[bytes]:
    """The events of round ``r``: distinct ids, and event times moved ``r + 2`` months back.

    Indices are monthly by event time, so every round of either path writes into
    its own fresh, empty monthly index — the service does not pay for merging into
    an index grown by earlier rounds while each raw round starts empty.
    """
    shift = timedelta(0)
    if events:
        first = datetime.fromisoformat(events[0]["event"]["event_time"])
        shift = months_before(first, r + 2) - first

    def moved(e: dict[str, Any]) -> dict[str, Any]:
        when = (datetime.fromisoformat(e["event"]["event_time"]) + shift).isoformat()
        event = {**e["event"], "id": f"r{r}-{e['event']['id']}", "event_time": when, "ingest_time": when}
        return {**e, "event": event, "enriched_time": when}

    return [orjson.dumps(moved(e)) for e in events]


async def main(n: int, queries: int, rounds: int, keep: bool, live: bool = False) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    tag = uuid.uuid4().hex[:6]
    per_round = n // rounds
    events = corpus(per_round)
    # The in-process service shares the interpreter with the bench's corpus (hundreds of
    # thousands of dicts): without this every full collection in the service's clock would
    # walk them, a cost the service's own process never has.
    gc.freeze()
    raw_rates: list[float] = []
    svc_rates: list[float] = []
    prefixes = [f"bench-warm-{tag}", f"bench-svc-{tag}", *(f"bench-raw{r}-{tag}" for r in range(rounds + 1))]
    with real_kafka() as bootstrap, real_es() as es_url:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        specs = [TEXT_ENRICHED, SUPPORT_ROUTED, ALERTS_FINANCIAL, dlq("index")]
        names = {s.name: f"bench.{tag}.{s.name}" for s in specs}
        await create_topics(kafka, specs, rename=names)
        common: dict[str, Any] = {"kafka": kafka, "es_url": es_url, "refresh_interval": "1s"}
        # the service's own client factory (same serializer), with a longer timeout for big chunks
        es = make_client(IndexSettings(es_url=es_url, es_request_timeout_s=120))
        try:
            # Elasticsearch's JIT and caches warm up over tens of thousands of documents: a short
            # warm-up left the first raw round at half the speed of the later ones.
            warm_n = min(per_round, WARM_DOCS)
            console.print(f"warm-up: raw async_bulk and the service, {warm_n:,} docs each (not counted) …")
            await raw_bulk(es, IndexSettings(index_prefix=prefixes[0], **common), with_round(events[:warm_n], -1))
            svc = IndexSettings(
                index_prefix=prefixes[1],
                topic_enriched=names[TEXT_ENRICHED.name],
                topic_routed=names[SUPPORT_ROUTED.name],
                topic_alerts=names[ALERTS_FINANCIAL.name],
                topic_dlq=names[dlq("index").name],
                group_id=f"bench-{tag}",
                **common,
            )
            app = create_app(svc, lag_probe=False, retention=False)
            async with running(app) as client:
                warm = orjson.dumps({**events[0], "event": {**events[0]["event"], "id": "warm-up"}})
                await produce(kafka, svc.topic_enriched, [warm])
                await wait_indexed(app, 1, 120)
                await service_round(app, kafka, svc.topic_enriched, with_round(events[:warm_n], -2), live=live)
                for r in range(rounds):
                    values = with_round(events, r)
                    console.print(
                        f"round {r + 1}/{rounds}: raw async_bulk, then the service, {per_round:,} docs each …"
                    )
                    raw_settings = IndexSettings(index_prefix=prefixes[2 + r], **common)
                    raw_rates.append(await raw_bulk(es, raw_settings, values))
                    svc_rates.append(await service_round(app, kafka, svc.topic_enriched, values, live=live))
                console.print("raw async_bulk once more (each service round sits between two raw ones) …")
                last = IndexSettings(index_prefix=prefixes[2 + rounds], **common)
                raw_rates.append(await raw_bulk(es, last, with_round(events, rounds)))
                await es.indices.refresh(index=f"{svc.index_prefix}-events")
                total = int((await es.count(index=f"{svc.index_prefix}-events")).body["count"])
                console.print(f"search: {queries} requests per endpoint on {total:,} docs …")
                lat = await search_latencies(client, events, queries)
        finally:
            if not keep:
                await es.indices.delete(index=f"bench-*-{tag}-*", ignore_unavailable=True, allow_no_indices=True)
                for prefix in prefixes:
                    for fam in ("events", "routes", "alerts"):
                        await es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-{fam}")
            await es.close()
    config = {
        "method": "live" if live else "backlog",
        "bulk_chunk_docs": svc.bulk_chunk_docs,
        "bulk_concurrency": svc.bulk_concurrency,
        "kafka_batch_records": svc.kafka_batch_records,
        "warm_up_docs_per_path": warm_n,
    }
    return report(raw_rates, svc_rates, lat, total, queries, config, per_round)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--docs", type=int, default=100_000, help="documents indexed by each path (100k for the target)"
    )
    parser.add_argument("--queries", type=int, default=300, help="requests per search endpoint")
    parser.add_argument("--rounds", type=int, default=3, help="alternate raw and service this many times")
    parser.add_argument("--keep", action="store_true", help="keep the bench indices")
    parser.add_argument(
        "--live", action="store_true", help="produce inside the service's clock, in this process (the older method)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.docs, args.queries, args.rounds, args.keep, args.live))
