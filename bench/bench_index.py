"""Index benchmark (``make bench-index``): the index service vs the best raw bulk-load, and search latency.

In one run, against the real Elasticsearch and the real Apache Kafka, with one clock for both
indexing paths: wall clock from "records in hand" to "last bulk request acknowledged", documents
built inside it.

- reference: what a user would write with the same library — ``elasticsearch.helpers.
  async_streaming_bulk`` with the service's settings read from ``IndexSettings`` (so they cannot
  drift): ``bulk_concurrency`` helpers at once over one shared stream of records (the service's
  requests in flight), chunks of ``bulk_chunk_docs`` / ``bulk_chunk_bytes``, the service's
  ``filter_path`` and client factory (orjson), the same document builder (PII redaction
  included), template and refresh interval, into fresh indices. Raw and service alternate in
  ``--rounds`` rounds of N/rounds documents each, raw first and once more at the end (the machine
  is shared, its speed drifts): a round's ratio is the service rate over the mean of the raw rates
  just before and just after it, and the figure is the median of the rounds' ratios. Both paths
  first index up to 20,000 uncounted documents (Elasticsearch warms up over tens of thousands),
  and every round of either path writes into its own fresh monthly index (event times moved by
  whole months);
- service: the index service runs in-process with its Kafka subscriber. After a warm-up record,
  each round's records are produced to ``text.enriched`` while the service's consumer is paused
  (all its input ready, as the reference has its records in hand); the clock starts when the
  consumer resumes and stops when the service has indexed all of them (its own counter, raised
  after the batch's last bulk acknowledgement). That includes Kafka consumption, JSON/contract
  validation, PII redaction, bulk writes and the offset commits of all but the last batch.
  ``--live`` measures the older way: produce inside the clock, in the same process, while the
  service consumes;
- search: p50/p95 latency of ``/v1/search``, ``/v1/entities/{key}/sentiment`` and
  ``/v1/support/similar`` through a real uvicorn server on 127.0.0.1 (httpx over TCP), varied
  queries on the service-indexed documents; reference: the same Elasticsearch request(s) each
  endpoint makes, sent straight with the client, alternated query by query. Its ratio is reference
  latency / service latency (≤ 1: the service is slower, as with the rates).

Data: real financial tweets (social, cashtags as entities, sentiment from their labels) and
Banking77 support messages (intent from their labels), cycled to N. Figures go to
``.run/bench/index.json``. Target: service ≥ 0.8 × reference.
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
from elasticsearch.helpers import BULK_FLUSH, async_streaming_bulk
from textpulse.contracts.topics import ALERTS_FINANCIAL, SUPPORT_ROUTED, TEXT_ENRICHED, dlq
from textpulse.datasets import load_text_examples
from textpulse.kafka.admin import client_options, create_topics
from textpulse.kafka.broker import producer_options
from textpulse.settings import KafkaSettings

from bench.common import REPO, console, delete_run_topics, port_open, real_kafka, serve_uvicorn_here, table
from services.index.app import create_app
from services.index.bulk import FILTER_PATH
from services.index.documents import BuildOptions, enriched_document
from services.index.indexer import YIELD_EVERY
from services.index.mappings import EVENTS, ROUTES
from services.index.pii import redact
from services.index.queries import (
    Interval,
    SearchFilters,
    routes_body,
    search_body,
    sentiment_over_time_body,
    similar_body,
)
from services.index.settings import IndexSettings
from services.index.store import install_templates, make_client

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


def _serialised(item: Any) -> Any:
    """The helper's expand_action for (header, source) already serialised: used as they are."""
    return item


async def raw_bulk(es: AsyncElasticsearch, settings: IndexSettings, values: list[bytes]) -> float:
    """docs/s of the reference: ``async_streaming_bulk`` with the service's chunking and requests in flight.

    Clock: the raw records in hand → the last bulk request acknowledged, documents built inside it
    (the service must build them too). As in the service, one task builds the documents a chunk
    ahead (``bulk_chunk_docs`` per chunk, yielding to the event loop every ``YIELD_EVERY``
    documents so the requests in flight progress) while ``bulk_concurrency`` helpers send the built
    chunks, each chunk one request (``BULK_FLUSH`` after its last action), with the service's
    ``bulk_chunk_bytes``, ``filter_path`` and client (orjson serializer). Each action is handed
    to the helper already serialised (orjson, header and source), as the service serialises each
    document once: with plain action dicts the helper copies and re-serialises every action, and
    the service (its own bulk body) came out faster than this reference.
    """
    await install_templates(es, settings)
    opts = BuildOptions(prefix=settings.index_prefix, redact=settings.redact_pii)
    step, helpers = settings.bulk_chunk_docs, settings.bulk_concurrency
    failed: list[dict[str, Any]] = []
    # one chunk built ahead, as the service builds chunk i+1 while its requests are in flight
    built: asyncio.Queue[list[tuple[bytes, bytes]] | None] = asyncio.Queue(maxsize=1)
    started = time.perf_counter()
    now = datetime.now(UTC)

    async def build() -> None:
        for first in range(0, len(values), step):
            chunk = []
            for k, value in enumerate(values[first : first + step], 1):
                doc = enriched_document(value, now, opts)
                chunk.append((orjson.dumps({"index": {"_index": doc.index, "_id": doc.id}}), orjson.dumps(doc.source)))
                if k % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            await built.put(chunk)
        for _ in range(helpers):
            await built.put(None)

    async def stream() -> Any:
        while (chunk := await built.get()) is not None:
            for act in chunk:
                yield act
            yield BULK_FLUSH  # send this chunk now, not when the next one's first action arrives

    async def helper() -> None:
        async for ok, info in async_streaming_bulk(
            es,
            stream(),
            expand_action_callback=_serialised,
            chunk_size=step,
            max_chunk_bytes=settings.bulk_chunk_bytes,
            raise_on_error=False,
            yield_ok=False,
            filter_path=FILTER_PATH,
        ):
            if not ok:
                failed.append(info)

    await asyncio.gather(build(), *(helper() for _ in range(helpers)))
    elapsed = time.perf_counter() - started
    assert not failed, failed[:3]
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


async def direct_es(es: AsyncElasticsearch, settings: IndexSettings, name: str, prm: dict[str, Any]) -> None:
    """The reference of one endpoint: the same Elasticsearch request(s) it makes, sent with the client."""
    events_alias = EVENTS.alias(settings.index_prefix)
    opts: dict[str, Any] = {"ignore_unavailable": True, "allow_no_indices": True}
    if name == "search":
        f = SearchFilters(sentiment=prm.get("sentiment"), channel=prm.get("channel"))
        await es.search(index=events_alias, **opts, **search_body(prm["q"], f, page=1, size=prm["size"]))
    elif name == "entity_sentiment":
        body = sentiment_over_time_body(prm["key"], SearchFilters(), Interval(prm["interval"]))
        await es.search(index=events_alias, **opts, **body)
    else:
        like = redact(prm["text"]) if settings.redact_pii else prm["text"]
        hits = (await es.search(index=events_alias, **opts, **similar_body(like, size=prm["size"]))).body
        ids = [h["_id"] for h in hits["hits"]["hits"]]
        if ids:
            await es.search(index=ROUTES.alias(settings.index_prefix), **opts, **routes_body(ids))


async def _timed(call: Any) -> float:
    started = time.perf_counter()
    await call
    return time.perf_counter() - started


async def search_latencies(
    client: httpx.AsyncClient,
    es: AsyncElasticsearch,
    settings: IndexSettings,
    events: list[dict[str, Any]],
    queries: int,
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per request, (service over HTTP, direct Elasticsearch) per endpoint: varied, sequential, alternated.

    Each query is sent both ways one after the other (each way first every other query), so both
    see the same machine at the same moment; one uncounted pass first (connections).
    """
    rng = random.Random(7)
    words = [w for e in events[:2000] for w in e["event"]["text"].split() if w.isalpha() and len(w) > 4] or ["card"]
    keys = sorted({ent["key"] for e in events for ent in e["entities"]}) or ["AAPL"]
    support = [e["event"]["text"] for e in events if e["event"]["channel"] == "support"] or ["my card"]
    names = ("search", "entity_sentiment", "support_similar")
    svc: dict[str, list[float]] = {k: [] for k in names}
    ref: dict[str, list[float]] = {k: [] for k in names}
    for i in range(queries + 1):
        params: dict[str, Any] = {"q": " ".join(rng.sample(words, 1)), "size": 20}
        if rng.random() < 0.5:
            params["sentiment"] = rng.choice(["positive", "negative", "neutral"])
        if rng.random() < 0.3:
            params["channel"] = rng.choice(["social", "support"])
        key, interval = rng.choice(keys), rng.choice(["hour", "day"])
        calls = [
            ("search", "/v1/search", params, params),
            (
                "entity_sentiment",
                f"/v1/entities/{key}/sentiment",
                {"interval": interval},
                {"key": key, "interval": interval},
            ),
            ("support_similar", "/v1/support/similar", sp := {"text": rng.choice(support), "size": 5}, sp),
        ]
        for name, path, prm, direct in calls:
            # each side goes first every other query: the second of two identical aggregations
            # may be answered from Elasticsearch's shard request cache
            took_ref = await _timed(direct_es(es, settings, name, direct)) if i % 2 else 0.0
            started = time.perf_counter()
            # POST for similar tickets: the ticket text (possibly personal data) stays out of URLs and logs
            resp = await (client.post(path, json=prm) if name == "support_similar" else client.get(path, params=prm))
            took = time.perf_counter() - started
            assert resp.status_code == 200, resp.text
            if not i % 2:
                took_ref = await _timed(direct_es(es, settings, name, direct))
            if i:
                svc[name].append(took)
                ref[name].append(took_ref)
    return svc, ref


def report(
    raw_rates: list[float],
    svc_rates: list[float],
    lat: dict[str, list[float]],
    ref_lat: dict[str, list[float]],
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
    ms = {k: (p(v, 50) * 1000, p(v, 95) * 1000) for k, v in lat.items()}
    ref_ms = {k: (p(v, 50) * 1000, p(v, 95) * 1000) for k, v in ref_lat.items()}
    # latency: reference / service, so that ≤ 1 means the service is slower, as for the rates
    lat_ratio = {k: ref_ms[k][0] / ms[k][0] for k in lat}
    results: dict[str, Any] = {
        "clock_indexing": "wall clock, records in hand -> last bulk request acknowledged (documents built inside)",
        "docs_per_path": total_indexed,
        "docs_per_round": per_round,
        "rounds": rounds,
        "raw_streaming_bulk_docs_per_s": [round(x, 1) for x in raw_rates],
        "service_docs_per_s": [round(x, 1) for x in svc_rates],
        "ratio_per_round": [round(x, 3) for x in ratios],
        "ratio_median": round(ratio, 3),
        "search_docs": total,
        "search_transport": "uvicorn on 127.0.0.1, httpx over TCP",
        **{f"{k}_p50_ms": round(v[0], 1) for k, v in ms.items()},
        **{f"{k}_p95_ms": round(v[1], 1) for k, v in ms.items()},
        **{f"{k}_direct_es_p50_ms": round(v[0], 1) for k, v in ref_ms.items()},
        **{f"{k}_direct_es_p95_ms": round(v[1], 1) for k, v in ref_ms.items()},
        **{f"{k}_p50_ratio_direct_over_service": round(v, 3) for k, v in lat_ratio.items()},
        "queries_per_endpoint": queries,
        **config,
    }
    verdict = "ok" if ratio >= 0.8 else "BELOW"
    c = config
    rows = [
        (
            f"reference: {c['bulk_concurrency']} × async_streaming_bulk, chunks of {c['bulk_chunk_docs']:,}, per round",
            " / ".join(f"{x:,.0f}" for x in raw_rates) + " docs/s",
            "",
            "before each round and after",
        ),
        ("service: Kafka → index → ES, per round", " / ".join(f"{x:,.0f}" for x in svc_rates) + " docs/s", "", ""),
        ("ratio per round", " / ".join(f"{x:.2f}" for x in ratios), "", ""),
        ("ratio service / reference (median of rounds)", f"{ratio:.2f}", "≥ 0.80", verdict),
    ]
    rows.extend(
        (
            f"{k}: direct ES → service over uvicorn p50 / p95",
            f"{ref_ms[k][0]:.1f} / {ref_ms[k][1]:.1f} → {ms[k][0]:.1f} / {ms[k][1]:.1f} ms",
            "",
            f"speed ratio {lat_ratio[k]:.2f}",
        )
        for k in lat
    )
    console.print(
        table(
            f"index benchmark ({total_indexed:,} docs per path, search on {total:,}); "
            "clock: records in hand → last bulk acknowledged",
            rows,
        )
    )
    if ratio > 1.0:
        console.print(
            f"[bold red]the service is above its reference ({ratio:.2f}): the reference is weaker than the service "
            "(it has the service's chunking, requests in flight, client and filter_path, so it should be the "
            "ceiling) — fix bench.bench_index.raw_bulk before quoting this figure.[/]"
        )
    for k, v in lat_ratio.items():
        if v > 1.0:
            console.print(
                f"[bold red]{k}: the service answers faster than the same query sent straight to Elasticsearch "
                f"({v:.2f}): the direct reference is weaker — fix bench.bench_index.direct_es.[/]"
            )
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
            console.print(
                f"warm-up: reference (async_streaming_bulk) and the service, {warm_n:,} docs each (not counted) …"
            )
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
            async with app.router.lifespan_context(app):  # the lifespan only: search goes through uvicorn below
                warm = orjson.dumps({**events[0], "event": {**events[0]["event"], "id": "warm-up"}})
                await produce(kafka, svc.topic_enriched, [warm])
                await wait_indexed(app, 1, 120)
                await service_round(app, kafka, svc.topic_enriched, with_round(events[:warm_n], -2), live=live)
                for r in range(rounds):
                    values = with_round(events, r)
                    console.print(
                        f"round {r + 1}/{rounds}: reference (async_streaming_bulk), then the service, "
                        f"{per_round:,} docs each …"
                    )
                    raw_settings = IndexSettings(index_prefix=prefixes[2 + r], **common)
                    raw_rates.append(await raw_bulk(es, raw_settings, values))
                    svc_rates.append(await service_round(app, kafka, svc.topic_enriched, values, live=live))
                console.print("reference once more (each service round sits between two reference rounds) …")
                last = IndexSettings(index_prefix=prefixes[2 + rounds], **common)
                raw_rates.append(await raw_bulk(es, last, with_round(events, rounds)))
                await es.indices.refresh(index=f"{svc.index_prefix}-events")
                total = int((await es.count(index=f"{svc.index_prefix}-events")).body["count"])
                console.print(
                    f"search: {queries} requests per endpoint on {total:,} docs, each also sent straight to "
                    "Elasticsearch; the service's API on a real uvicorn server on 127.0.0.1 …"
                )
                async with serve_uvicorn_here(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
                    lat, ref_lat = await search_latencies(http, es, svc, events, queries)
        finally:
            if not keep:
                await es.indices.delete(index=f"bench-*-{tag}-*", ignore_unavailable=True, allow_no_indices=True)
                for prefix in prefixes:
                    for fam in ("events", "routes", "alerts"):
                        await es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}-{fam}")
                await delete_run_topics(kafka, f"bench.{tag}.")
            await es.close()
    config = {
        "method": "live" if live else "backlog",
        "bulk_chunk_docs": svc.bulk_chunk_docs,
        "bulk_concurrency": svc.bulk_concurrency,
        "kafka_batch_records": svc.kafka_batch_records,
        "warm_up_docs_per_path": warm_n,
    }
    return report(raw_rates, svc_rates, lat, ref_lat, total, queries, config, per_round)


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
