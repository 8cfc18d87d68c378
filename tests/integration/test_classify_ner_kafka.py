"""classify → NER end to end on the real Apache Kafka with the in-process backend (tiny models).

What must hold: N events in → N enriched out (after de-duplication by event
id), each with its labels and entities whose offsets slice the original text
exactly; one entity mention per entity key, keyed by it; a worker killed with
``kill -9`` mid-replay and restarted loses nothing; two NER workers in one
consumer group split the partitions and both make progress.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from textpulse.contracts import ClassifiedEvent, EnrichedEvent, EntityMention, TextEvent
from textpulse.inference.settings import InferenceSettings
from textpulse.kafka.admin import client_options
from textpulse.kafka.broker import producer_options
from textpulse.settings import KafkaSettings

from services.classify.app import create_app as create_classify
from services.classify.settings import ClassifySettings
from services.ingest.core import now, to_record, validate_event
from services.ner.app import create_app as create_ner
from services.ner.settings import NerSettings
from tests.conftest import REPO, missing
from tests.helpers import read_all
from tests.support.inference import build_tiny_repo, tiny_repo_from_env

pytestmark = [pytest.mark.slow]

SUPPORT = [
    "what is my current account balance",
    "please transfer 200 dollars from checking to savings",
    "my card was declined at the store, why?",
    "tell me a joke",
]


@pytest.fixture(scope="session")
def model_repo() -> Path:
    """The tiny model repository (finance, support, single-task models, ner; cached under .cache/test-model-repo)."""
    try:
        return build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("tiny model repository (datasets + base model)", repr(exc))
        raise


def replay_events(n: int, *, support_every: int = 10) -> list[TextEvent]:
    """``n`` real tweets (social) with a support message every ``support_every`` events."""
    from textpulse.replay import build_events

    tweets = build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=n)
    out = []
    ingest_time = now()
    for i, tweet in enumerate(tweets):
        raw = tweet
        if support_every and i % support_every == support_every - 1:
            raw = {**tweet, "channel": "support", "text": SUPPORT[i % len(SUPPORT)], "id": f"support-{i}"}
        out.append(validate_event(raw, ingest_time=ingest_time))
    return out


async def produce(settings: KafkaSettings, topic: str, events: Sequence[TextEvent], *, pause_s: float = 0.0) -> None:
    """Write events to ``topic`` the way ingest does (same key and headers)."""
    producer = AIOKafkaProducer(**client_options(settings), **producer_options(settings))  # type: ignore[arg-type]
    await producer.start()
    try:
        for event in events:
            rec = to_record(event)
            await producer.send(
                topic, rec.value, key=rec.key, headers=[(k, v.encode()) for k, v in rec.headers.items()]
            )
            if pause_s:
                await asyncio.sleep(pause_s)
        await producer.flush()
    finally:
        await producer.stop()


def inference_env(repo: Path) -> dict[str, str]:
    return {"TEXTPULSE_MODEL_REPO": str(repo), "TEXTPULSE_LOCAL_THREADS": "1"}


def local_inference(repo: Path) -> InferenceSettings:
    """The test repository, one thread; the rest (a Triton URL a test sets) from the environment, left as it was."""
    return InferenceSettings(model_repo=repo, local_threads=1)


def classify_settings(kafka: KafkaSettings, topics: dict[str, str], repo: Path, **kw: Any) -> ClassifySettings:
    kw.setdefault("inference", local_inference(repo))
    return ClassifySettings(
        kafka=kafka,
        topic_in=topics["text.raw"],
        topic_out=topics["text.classified"],
        topic_dlq=topics["dlq.classify"],
        group_id=f"classify-{topics['text.raw']}",
        lag_refresh_s=3600,
        **kw,
    )


def ner_settings(kafka: KafkaSettings, topics: dict[str, str], repo: Path, **kw: Any) -> NerSettings:
    kw.setdefault("inference", local_inference(repo))
    return NerSettings(
        kafka=kafka,
        topic_in=topics["text.classified"],
        topic_out=topics["text.enriched"],
        topic_mentions=topics["entity.mentions"],
        topic_dlq=topics["dlq.ner"],
        group_id=f"ner-{topics['text.raw']}",
        lag_refresh_s=3600,
        **kw,
    )


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[Any]:
    """Run a FastStream app (lifespan + broker) inside the test's event loop."""
    async with app.lifespan_context():
        await app.start()
        try:
            yield app
        finally:
            await app.stop()


def by_id(records: Sequence[Any], model: type[Any]) -> dict[str, tuple[Any, Any]]:
    """De-duplicate output records by event id (at-least-once → exactly-once view)."""
    out: dict[str, tuple[Any, Any]] = {}
    for rec in records:
        value = model.model_validate_json(rec.value)
        out.setdefault(value.event.id, (rec, value))
    return out


def check_enriched(events: Sequence[TextEvent], enriched: dict[str, tuple[Any, EnrichedEvent]]) -> None:
    """Every event exactly once, labels by channel, offsets that slice the original text."""
    assert set(enriched) == {e.id for e in events}
    originals = {e.id: e for e in events}
    for event_id, (rec, value) in enriched.items():
        original = originals[event_id]
        assert value.event.text == original.text
        assert rec.key == to_record(original).key
        assert value.sentiment is not None
        # default settings: one multi-head pass per event (support -> support, else finance)
        if original.channel == "support":
            assert value.intent is not None
            assert value.topic is None
            assert value.intent.model.name == value.sentiment.model.name == "support"
        else:
            assert value.topic is not None
            assert value.intent is None
            assert value.topic.model.name == value.sentiment.model.name == "finance"
        assert value.ner_model is not None
        for entity in value.entities:
            assert original.text[entity.start : entity.end] == entity.surface


def check_mentions(enriched: dict[str, tuple[Any, EnrichedEvent]], mention_records: Sequence[Any]) -> None:
    expected = {(eid, e.key) for eid, (_, v) in enriched.items() for e in v.entities}
    seen = set()
    for rec in mention_records:
        mention = EntityMention.model_validate_json(rec.value)
        assert rec.key == mention.entity_key.encode()
        seen.add((mention.event_id, mention.entity_key))
    assert seen == expected


@pytest.mark.kafka
@pytest.mark.timeout(300)
async def test_end_to_end_in_process(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], model_repo: Path
) -> None:
    events = replay_events(120)
    classify = create_classify(classify_settings(kafka_settings, kafka_topics, model_repo))
    ner = create_ner(ner_settings(kafka_settings, kafka_topics, model_repo))
    async with serving(classify), serving(ner):
        await produce(kafka_settings, kafka_topics["text.raw"], events)
        enriched_records = await read_all(
            kafka_settings, kafka_topics["text.enriched"], expect=len(events), timeout_s=180
        )
    enriched = by_id(enriched_records, EnrichedEvent)
    check_enriched(events, enriched)
    assert sum(len(v.entities) for _, v in enriched.values()) > 0  # cashtags at least
    assert any(e.type == "TICKER" and e.origin == "rule" for _, v in enriched.values() for e in v.entities)
    assert any(e.origin == "model" for _, v in enriched.values() for e in v.entities)
    n_mentions = len({(eid, e.key) for eid, (_, v) in enriched.items() for e in v.entities})
    mention_records = await read_all(kafka_settings, kafka_topics["entity.mentions"], expect=n_mentions)
    check_mentions(enriched, mention_records)
    classified = await read_all(kafka_settings, kafka_topics["text.classified"], expect=len(events))
    sample = ClassifiedEvent.model_validate_json(classified[0].value)
    assert sample.sentiment is not None
    assert sample.sentiment.model.name in {"finance", "support"}  # default settings: multi-head models
    assert sample.sentiment.model.version.isdigit()
    assert not await read_all(kafka_settings, kafka_topics["dlq.classify"], timeout_s=2, idle_s=0.5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_worker(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A service as its own process (``python -m services.<name>.app``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": f"{REPO / 'libs'}:{REPO}", **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def worker_env(kafka: KafkaSettings, topics: dict[str, str], repo: Path, service: str) -> dict[str, str]:
    prefix = f"TEXTPULSE_{service.upper()}_"
    env = {
        **inference_env(repo),
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        f"{prefix}HTTP_PORT": str(_free_port()),
        f"{prefix}LOG_JSON": "false",
        f"{prefix}LAG_REFRESH_S": "3600",
    }
    if service == "classify":
        env.update(
            {
                f"{prefix}TOPIC_IN": topics["text.raw"],
                f"{prefix}TOPIC_OUT": topics["text.classified"],
                f"{prefix}TOPIC_DLQ": topics["dlq.classify"],
                f"{prefix}GROUP_ID": f"classify-{topics['text.raw']}",
                f"{prefix}KAFKA_BATCH_RECORDS": "32",
            }
        )
    else:
        env.update(
            {
                f"{prefix}TOPIC_IN": topics["text.classified"],
                f"{prefix}TOPIC_OUT": topics["text.enriched"],
                f"{prefix}TOPIC_MENTIONS": topics["entity.mentions"],
                f"{prefix}TOPIC_DLQ": topics["dlq.ner"],
                f"{prefix}GROUP_ID": f"ner-{topics['text.raw']}",
                f"{prefix}KAFKA_BATCH_RECORDS": "32",
            }
        )
    return env


async def wait_for_count(kafka: KafkaSettings, topic: str, at_least: int, timeout_s: float) -> int:
    """Poll a topic until it holds ``at_least`` records; returns the count seen."""
    from textpulse.kafka.admin import end_offsets

    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = sum((await end_offsets(kafka, topic)).values())
        if count >= at_least:
            return count
        await asyncio.sleep(0.3)
    return count


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.mark.kafka
@pytest.mark.timeout(480)
@pytest.mark.parametrize("victim", ["classify", "ner"])
async def test_kill_9_worker_mid_replay_loses_nothing(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], model_repo: Path, victim: str, tmp_path: Path
) -> None:
    events = replay_events(400)
    envs = {s: worker_env(kafka_settings, kafka_topics, model_repo, s) for s in ("classify", "ner")}
    logs = {s: REPO / ".run" / "tests" / f"{tmp_path.name}-{s}.log" for s in envs}
    procs = {s: start_worker(f"services.{s}.app", envs[s], logs[s]) for s in envs}
    try:
        await produce(kafka_settings, kafka_topics["text.raw"], events)
        watched = kafka_topics["text.classified" if victim == "classify" else "text.enriched"]
        seen = await wait_for_count(kafka_settings, watched, 40, timeout_s=120)
        assert seen >= 40, f"{victim} made no progress: see {logs[victim]}"
        os.killpg(procs[victim].pid, signal.SIGKILL)
        procs[victim].wait(10)
        killed_at = await wait_for_count(kafka_settings, watched, 0, 1)
        assert killed_at < len(events), "the replay finished before the kill; make it longer"
        procs[victim] = start_worker(f"services.{victim}.app", envs[victim], logs[victim])
        records = await read_all(kafka_settings, kafka_topics["text.enriched"], expect=len(events), timeout_s=300)
    finally:
        for proc in procs.values():
            stop(proc)
    enriched = by_id(records, EnrichedEvent)
    check_enriched(events, enriched)
    # At-least-once: redelivery after the kill may duplicate, never drop.
    assert len(records) >= len(events)


@pytest.mark.kafka
@pytest.mark.timeout(300)
async def test_two_ner_workers_split_partitions(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], model_repo: Path
) -> None:
    events = replay_events(180, support_every=0)
    settings = ner_settings(kafka_settings, kafka_topics, model_repo, kafka_batch_records=16)
    workers = [create_ner(settings), create_ner(settings)]
    classify = create_classify(classify_settings(kafka_settings, kafka_topics, model_repo))
    async with serving(workers[0]), serving(workers[1]), serving(classify):
        # a steady trickle, so the group has settled on two members while events still flow
        await produce(kafka_settings, kafka_topics["text.raw"], events, pause_s=0.03)
        records = await read_all(kafka_settings, kafka_topics["text.enriched"], expect=len(events), timeout_s=180)
    check_enriched(events, by_id(records, EnrichedEvent))
    topic = settings.topic_in
    processed = [w.state.metrics.processed.labels("ner", topic)._value.get() for w in workers]
    assert all(p > 0 for p in processed), processed
    assert sum(processed) >= len(events)


@pytest.mark.tansu
@pytest.mark.timeout(300)
async def test_end_to_end_on_tansu(
    tansu_settings: KafkaSettings, tansu_topics: dict[str, str], model_repo: Path
) -> None:
    """The embedded demo broker (``make demo``) runs the same pipeline."""
    events = replay_events(40)
    classify = create_classify(classify_settings(tansu_settings, tansu_topics, model_repo))
    ner = create_ner(ner_settings(tansu_settings, tansu_topics, model_repo))
    async with serving(classify), serving(ner):
        await produce(tansu_settings, tansu_topics["text.raw"], events)
        records = await read_all(tansu_settings, tansu_topics["text.enriched"], expect=len(events), timeout_s=180)
    check_enriched(events, by_id(records, EnrichedEvent))
