"""``make bench-alert``: detection delay and false alerts of services/alert on a replayed day of real tweets.

Stream: every labelled tweet of ``twitter_fin_sentiment/sent_train.csv``
(``--passes`` times, each pass with fresh ids and times), with event times
spread uniformly over one simulated day; the sentiment signal is each tweet's
TRUE label (Bearish / Bullish / Neutral) with a simulated confidence. Entity
attribution: cashtags where present, else a Zipf-drawn ticker among the data
set's ``--entities`` most frequent cashtags (see tests/support/alert_synth.py).
Injected: ``--burst-size`` real Bearish tweets about one entity starting at
``--burst-at`` (hours into the day) over ``--burst-minutes``.

Figures: detection delay (event time of the first firing notification on the
burst entity minus the burst start; the watermark waits ``allowed_lateness_s``,
part of the delay by design), and false alerts: every firing alert that is not
on the burst entity within [burst start, burst end + 30 min], per detector.
Default: the detector engine in-process (fast, deterministic). ``--kafka``: the
same stream through the real alert service on real Kafka (entity.mentions →
alerts.financial), adding wall-clock throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from rich.table import Table
from textpulse.contracts.alerts import AlertStatus, KeyKind
from textpulse.datasets import load_text_examples

from bench.common import console, delete_run_topics, real_kafka
from services.alert.config import DEFAULT_CONFIG, load_config
from services.alert.engine import Engine
from tests.support.alert_synth import Planned, day_stream, universe

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
GRACE = timedelta(minutes=30)


@dataclass(frozen=True, slots=True)
class Fired:
    subject: str
    detector: str
    at: datetime


def replay_engine(plan: Sequence[Planned], config_path: Path | None) -> tuple[list[Fired], float]:
    """Run the engine over the plan (advancing every 100 mentions, like consumed batches)."""
    engine = Engine(load_config(config_path))
    fired: list[Fired] = []
    started = time.perf_counter()

    def collect() -> None:
        for note in engine.advance():
            a = note.alert
            if a.status is AlertStatus.FIRING and a.sequence == 1:
                fired.append(Fired(a.subject, a.detector.value, a.updated_at))

    for i, p in enumerate(plan):
        m = p.mention
        engine.add(
            key=f"entity:{m.entity_key}",
            kind=KeyKind.ENTITY,
            subject=m.entity_key,
            event_id=m.event_id,
            event_time=m.event_time,
            sentiment=m.sentiment,
            ingest_time=m.ingest_time,
            text=p.text,
        )
        if i % 100 == 99:
            collect()
    engine.close_all(2 * 3600)  # end of the replay: close every window of the day
    collect()
    return fired, time.perf_counter() - started


async def replay_kafka(plan: Sequence[Planned], config_path: Path | None) -> tuple[list[Fired], float]:
    """The same through the real service: produce everything, wait until the alerts stop coming."""
    from aiokafka import AIOKafkaProducer
    from textpulse.contracts.events import encode
    from textpulse.contracts.topics import ALL_TOPICS, STREAM_PARTITIONS, TopicSpec
    from textpulse.kafka.admin import client_options, create_topics
    from textpulse.kafka.read import read_until as read_all
    from textpulse.settings import KafkaSettings

    from services.alert.app import create_app
    from services.alert.settings import AlertSettings

    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        tag = f"bench-alert-{uuid.uuid4().hex[:6]}"
        names = {s.name: f"{tag}.{s.name}" for s in ALL_TOPICS}
        await create_topics(kafka, ALL_TOPICS, rename=names)
        try:
            state = TopicSpec(f"{tag}.alerts.state", STREAM_PARTITIONS, "k", "bench", compacted=True)
            await create_topics(kafka, [state])
            settings = AlertSettings(
                kafka=kafka,
                topic_mentions=names["entity.mentions"],
                topic_enriched=names["text.enriched"],
                topic_out=names["alerts.financial"],
                topic_state=state.name,
                topic_dlq=names["dlq.alert"],
                group_id=f"{tag}-alert",
                alertmanager_url=None,
                config_path=config_path or DEFAULT_CONFIG,
            )
            # One flush marker far in the future closes every window of the day.
            last = plan[-1].mention
            closer = last.model_copy(update={"event_id": "closer", "entity_key": "__closer__"})
            closer = closer.model_copy(update={"event_time": last.event_time + timedelta(hours=2)})
            prod = AIOKafkaProducer(**client_options(kafka), acks="all", linger_ms=20)  # type: ignore[arg-type]
            await prod.start()
            try:
                for p in plan:
                    await prod.send(settings.topic_mentions, encode(p.mention), key=p.mention.entity_key.encode())
                await prod.send(settings.topic_mentions, encode(closer), key=b"__closer__")
                await prod.flush()
            finally:
                await prod.stop()
            app = create_app(settings)
            started = time.perf_counter()
            async with app.start_lifespan_context():
                registry = app.alert_processor.metrics.registry  # type: ignore[attr-defined]
                labels = {"service": "alert", "topic": settings.topic_mentions}
                done = "textpulse_messages_processed_total"
                while (registry.get_sample_value(done, labels) or 0) < len(plan) + 1:  # noqa: ASYNC110 - polls a metric
                    await asyncio.sleep(0.1)
                elapsed = time.perf_counter() - started
                outcomes = {
                    s.labels["outcome"]: int(s.value)
                    for metric in registry.collect()
                    if metric.name == "textpulse_alert_mentions"
                    for s in metric.samples
                    if s.name.endswith("_total") and s.labels.get("kind") == "mention"
                }
                console.print(f"mentions by outcome in the service: {outcomes}")
                records = await read_all(kafka, settings.topic_out, idle_s=2.0, timeout_s=120)
        finally:  # the topics go even when the service or the read fails
            await delete_run_topics(kafka, f"{tag}.")
    fired = []
    for r in records:
        a = orjson.loads(r.value)
        if a["status"] == "firing" and a["sequence"] == 1:
            fired.append(Fired(a["subject"], a["detector"], datetime.fromisoformat(a["updated_at"])))
    return fired, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=3, help="Replays of the data set over the day.")
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--burst-rank", type=int, default=4, help="Rank of the burst entity among the tickers.")
    parser.add_argument("--burst-at", type=float, default=14.0, help="Hours into the simulated day.")
    parser.add_argument("--burst-size", type=int, default=30)
    parser.add_argument("--burst-minutes", type=float, default=10.0)
    parser.add_argument("--config", type=Path, default=None, help="Detector YAML (default services/alert/alert.yaml).")
    parser.add_argument("--kafka", action="store_true", help="Replay through the real service on real Kafka.")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    tweets = load_text_examples("twitter_fin_sentiment/sent_train.csv")
    entity = universe(tweets, args.entities)[args.burst_rank]
    burst_at = timedelta(hours=args.burst_at)
    plan = day_stream(
        tweets,
        start=DAY0,
        burst_entity=entity,
        burst_at=burst_at,
        burst_size=args.burst_size,
        burst_minutes=args.burst_minutes,
        passes=args.passes,
        entities=args.entities,
        seed=args.seed,
    )
    labels = Counter(p.mention.sentiment.label for p in plan if p.mention.sentiment)
    on_entity = sum(p.mention.entity_key == entity and not p.burst for p in plan)
    console.print(
        f"{len(plan)} mentions over 24 h ({dict(labels)}), {len({p.mention.entity_key for p in plan})} entities; "
        f"burst: {args.burst_size} real Bearish tweets on ${entity} at +{args.burst_at:g} h over "
        f"{args.burst_minutes:g} min (its background: {on_entity} mentions/day)"
    )
    if args.kafka:
        fired, elapsed = asyncio.run(replay_kafka(plan, args.config))
        mode = "real alert service on real Kafka"
    else:
        fired, elapsed = replay_engine(plan, args.config)
        mode = "detector engine in-process"
    start = DAY0 + burst_at
    end = start + timedelta(minutes=args.burst_minutes) + GRACE
    hits = [f for f in fired if f.subject == entity and start <= f.at <= end]
    false = [f for f in fired if f not in hits]
    table = Table(title=f"Alerting on a replayed day ({mode})")
    for col in ("measure", "value"):
        table.add_column(col)
    for det in ("negative_surge", "volume_spike", "reversal"):
        first = min((f.at for f in hits if f.detector == det), default=None)
        table.add_row(
            f"detection delay, {det}", f"{(first - start).total_seconds() / 60:.1f} min" if first else "no alert"
        )
    by_det = Counter(f.detector for f in false)
    for det in ("negative_surge", "volume_spike", "reversal"):
        table.add_row(f"false alerts / day, {det}", str(by_det.get(det, 0)))
    entity_days = len({p.mention.entity_key for p in plan})
    table.add_row("false alerts per 1000 entity-days (all detectors)", f"{1000 * len(false) / entity_days:.1f}")
    table.add_row("replay time", f"{elapsed:.1f} s ({len(plan) / max(elapsed, 1e-9):,.0f} mentions/s)")
    console.print(table)
    for f in false[:10]:
        console.print(f"  false alert: {f.detector} on ${f.subject} at {f.at:%H:%M}")


if __name__ == "__main__":
    main()
