"""Property: whatever arrives, every record of every consumer service ends in one place (issue #22, item 1).

Each of the seven consumer services runs as its real app (its lifespan, its FastStream
subscribers, its handlers) against the real Apache Kafka, on topics of its own whose input
and DLQ limit (``max.message.bytes``) is 64 KiB, so records at the limit stay cheap; the
service reads the DLQ topic's limit at start-up, as in production. Hypothesis draws batches of
records from 0 bytes up to the limit, each of one kind:

- ``valid`` (the contract's value) and ``padded`` (the same, grown to the drawn size with JSON
  whitespace) land in the output exactly once and never in the DLQ;
- ``not_json`` (garbage, invalid UTF-8, or 0 bytes), ``wrong_shape`` (JSON, not the contract)
  and ``tombstone`` (a NULL value) land in the DLQ exactly once, with a reason header;
- ``forever``: a valid value the handler fails on every time (the handler is wrapped, by a
  header on the record) lands in the DLQ as ``retries exhausted`` after the configured
  ``dlq_max_attempts`` (3 here), tried no more than that;
- ``flaky``: a valid value the handler fails on once lands exactly once, in the output or (when
  its one failure happened while the guard was already trying records one by one) in the DLQ as
  ``retries exhausted``.

Every example ends with a valid record behind the others on the same partition: it must
arrive, so the partition kept moving. A dead letter at the limit is cut to fit, with the
original's size and SHA-256 (see :mod:`textpulse.kafka.dlq`). Bad values are incompressible
(base64 of SHAKE-256): the broker checks its limit on the compressed batch, so a dead letter of
repeated bytes would fit even uncut and hide a copy that is too big. Outputs are recognised by
event id (for index: the Elasticsearch document; for alert: the entity's state changelog
record, which may be written again when its window moves, so "at least once" there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from textpulse.contracts.events import Channel, Classification, ClassifiedEvent, ModelRef, TextEvent, encode
from textpulse.contracts.recs import Interaction
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import client_options, create_topics, topic_partitions
from textpulse.kafka.dlq import (
    H_ATTEMPTS,
    H_ORIGINAL_SHA256,
    H_ORIGINAL_SIZE,
    H_REASON,
    H_SOURCE_TOPIC,
    H_TRUNCATED,
    RETRIES_EXHAUSTED,
)
from textpulse.settings import KafkaSettings

from tests.conftest import TEST_TOPICS, missing
from tests.helpers import headers
from tests.property.loop import LoopThread
from tests.support.alert_synth import mention
from tests.support.route_synth import support_event

pytestmark = [pytest.mark.kafka]

LIMIT = 64 * 1024
#: The largest value put on a 64 KiB topic (key, the marker header and the batch overhead fit in the rest).
VALUE_MAX = LIMIT - 256
ATTEMPTS = 3
MARK = "x-test-poison"
KINDS = ("valid", "padded", "not_json", "wrong_shape", "tombstone", "forever", "flaky")
SPECS = {s.name: s for s in ALL_TOPICS}
NOW = datetime.now(UTC)


# --- what each service reads and writes ---------------------------------------------------------------------------


def _text_event(uid: str) -> TextEvent:
    return TextEvent(
        id=uid,
        source="test",
        channel=Channel.NEWS,
        text="Shares of ACME rose 3% today.",
        event_time=NOW,
        ingest_time=NOW,
    )


def _classified(uid: str) -> bytes:
    sentiment = Classification(label="Bullish", score=0.9, model=ModelRef(name="sentiment", version="1"))
    return encode(ClassifiedEvent(event=_text_event(uid), sentiment=sentiment, classified_time=NOW))


def _interaction(uid: str) -> bytes:
    return encode(Interaction(event_id=uid, user_id=uid, item_id="m1", action="like", time=NOW))  # type: ignore[arg-type]


def _json_id(*path: str) -> Callable[[ConsumerRecord[bytes, bytes]], str]:
    def get(rec: ConsumerRecord[bytes, bytes]) -> str:
        value: Any = orjson.loads(rec.value)
        for step in path:
            value = value[step]
        return str(value)

    return get


@dataclass(frozen=True)
class Service:
    """One consumer service: its input, its DLQ, where a valid record's output shows, how to start it."""

    name: str
    input: str
    #: Declared output topic → id of the input record behind an output record.
    outputs: dict[str, Callable[[ConsumerRecord[bytes, bytes]], str]]
    #: Other declared topics the app needs (consumed, restored or written).
    extra: tuple[str, ...]
    valid: Callable[[str], bytes]
    #: Where the handler the DLQ guard calls lives: (module, attribute path), and the records argument's position.
    wrapped: tuple[str, str, int]
    #: Whether a valid record may show more than once in the output (a changelog written again when its window moves).
    repeats: bool = False

    @property
    def dlq(self) -> str:
        return f"dlq.{self.name}"


SERVICES = {
    s.name: s
    for s in (
        Service(
            "ingest",
            "text.in",
            {"text.raw": _json_id("id")},
            (),
            lambda uid: orjson.dumps({"id": uid, "source": "test", "channel": "news", "text": "ACME rose 3% today."}),
            ("services.ingest.handlers", "handle_records", 0),
        ),
        Service(
            "classify",
            "text.raw",
            {"text.classified": _json_id("event", "id")},
            (),
            lambda uid: encode(_text_event(uid)),
            ("services.classify.handlers", "handle_records", 0),
        ),
        Service(
            "ner",
            "text.classified",
            {"text.enriched": _json_id("event", "id")},
            ("entity.mentions",),
            _classified,
            ("services.ner.handlers", "handle_records", 0),
        ),
        Service(
            "route",
            "text.enriched",
            {"support.routed": _json_id("event_id")},
            tuple(n for n in SPECS if n.startswith("support.queue.")),
            lambda uid: encode(
                support_event(uid, "When will my new card arrive?", "card_arrival", 0.9, conversation=uid)
            ),
            ("services.route.handlers", "handle_records", 0),
        ),
        Service(
            "alert",
            "entity.mentions",
            {"alerts.state": lambda rec: (rec.key or b"").decode().removeprefix("entity:")},
            ("text.enriched", "alerts.financial"),
            lambda uid: encode(
                mention(event_id=uid, entity=uid, label="Bearish", confidence=0.9, event_time=NOW, ingest_time=NOW)
            ),
            ("services.alert.processor", "Processor.handle", 1),
            repeats=True,
        ),
        Service(
            "index",
            "text.enriched",
            {},  # Elasticsearch documents, looked up by id
            (),
            lambda uid: encode(
                support_event(uid, "When will my new card arrive?", "card_arrival", 0.9, conversation=uid)
            ),
            ("services.index.indexer", "Indexer.handle", 1),
        ),
        Service(
            "recommend",
            "user.interactions",
            {"recs.profiles": lambda rec: (rec.key or b"").decode()},
            ("items", "recs.scores"),
            _interaction,
            ("services.recommend.core", "Processor.handle", 1),
        ),
    )
}


async def make_service_topics(kafka: KafkaSettings, svc: Service, names: dict[str, str]) -> str:
    """The service's topics, one partition each; input and DLQ limited to 64 KiB. Returns the cleanup prefix."""
    prefix = TEST_TOPICS.track_names(names)
    small = {"max.message.bytes": str(LIMIT)}
    wanted = [svc.input, svc.dlq, *svc.outputs, *svc.extra]
    specs = [
        replace(
            SPECS[n],
            partitions=1,
            configs={**SPECS[n].configs, **small} if n in (svc.input, svc.dlq) else SPECS[n].configs,
        )
        for n in dict.fromkeys(wanted)
    ]
    await create_topics(kafka, specs, rename=names)
    return prefix


async def visible_partitions(consumer: AIOKafkaConsumer, topics: Sequence[str], timeout_s: float = 30) -> list[Any]:
    """The partitions of ``topics`` once the cluster metadata lists every one of them.

    A topic just created may be missing from the metadata for a moment on a loaded broker; a
    reader assigned then would never read it (and a consumer subscribed then may not be assigned it).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        tps = await topic_partitions(consumer, *topics)
        missing_now = set(topics) - {tp.topic for tp in tps}
        if not missing_now:
            return tps
        assert time.monotonic() < deadline, f"topics not in the metadata after {timeout_s}s: {sorted(missing_now)}"
        await asyncio.sleep(0.2)


# --- starting each service's app ---------------------------------------------------------------------------------


@asynccontextmanager
async def asgi_lifespan(app: Any) -> AsyncIterator[None]:
    """A FastAPI app (ingest, index, recommend): its lifespan starts the broker."""
    async with app.router.lifespan_context(app):
        yield


def start_app(  # noqa: PLR0911 - one branch per service: each app's settings read in one place
    svc: Service, kafka: KafkaSettings, names: dict[str, str], ctx: dict[str, Any]
) -> AbstractAsyncContextManager[Any]:
    """The service's real app on the test's topics (``ctx``: the model repo, the Elasticsearch URL and index prefix)."""
    kafka = kafka.model_copy(update={"dlq_max_attempts": ATTEMPTS})
    common: dict[str, Any] = {
        "kafka": kafka,
        "group_id": f"g-{names[svc.input]}-{svc.name}",
        "kafka_batch_timeout_ms": 50,
    }
    if svc.name == "ingest":
        from services.ingest.app import create_app
        from services.ingest.settings import IngestSettings

        st_ = IngestSettings(
            topic_in=names["text.in"], topic_out=names["text.raw"], topic_dlq=names["dlq.ingest"], **common
        )
        return asgi_lifespan(create_app(st_))
    if svc.name == "classify":
        from services.classify.app import create_app as create_classify
        from services.classify.settings import ClassifySettings

        cs = ClassifySettings(
            topic_in=names["text.raw"],
            topic_out=names["text.classified"],
            topic_dlq=names["dlq.classify"],
            lag_refresh_s=3600,
            **common,
        )
        return create_classify(cs).start_lifespan_context()
    if svc.name == "ner":
        from services.ner.app import create_app as create_ner
        from services.ner.settings import NerSettings

        ns = NerSettings(
            topic_in=names["text.classified"],
            topic_out=names["text.enriched"],
            topic_mentions=names["entity.mentions"],
            topic_dlq=names["dlq.ner"],
            lag_refresh_s=3600,
            **common,
        )
        return create_ner(ns).start_lifespan_context()
    if svc.name == "route":
        from services.route.app import create_app as create_route
        from services.route.settings import RouteSettings

        prefix = names["support.routed"].removesuffix("support.routed")
        rs = RouteSettings(
            topic_in=names["text.enriched"],
            topic_out=names["support.routed"],
            topic_dlq=names["dlq.route"],
            queue_topic_prefix=f"{prefix}support.queue.",
            lag_refresh_s=3600,
            **common,
        )
        return create_route(rs).start_lifespan_context()
    if svc.name == "alert":
        from services.alert.app import create_app as create_alert
        from services.alert.settings import AlertSettings

        als = AlertSettings(
            topic_mentions=names["entity.mentions"],
            topic_enriched=names["text.enriched"],
            topic_out=names["alerts.financial"],
            topic_state=names["alerts.state"],
            topic_dlq=names["dlq.alert"],
            alertmanager_url=None,
            lag_refresh_s=3600,
            **common,
        )
        return create_alert(als).start_lifespan_context()
    if svc.name == "index":
        from services.index.app import create_app as create_index
        from services.index.settings import IndexSettings

        xs = IndexSettings(
            es_url=ctx["es_url"],
            index_prefix=ctx["index_prefix"],
            topic_enriched=names["text.enriched"],
            topic_dlq=names["dlq.index"],
            consume_routed=False,
            consume_alerts=False,
            lag_refresh_s=3600,
            **common,
        )
        return asgi_lifespan(create_index(xs, retention=False, connect_timeout_s=30))
    from services.recommend.app import create_app as create_recommend
    from services.recommend.settings import RecommendSettings
    from tests.support.recsys import HashEmbedder

    rs2 = RecommendSettings(
        topic_items=names["items"],
        topic_interactions=names["user.interactions"],
        topic_out=names["recs.scores"],
        topic_profiles=names["recs.profiles"],
        topic_dlq=names["dlq.recommend"],
        lag_refresh_s=3600,
        **common,
    )
    return asgi_lifespan(create_recommend(rs2, embedder=HashEmbedder(), connect_timeout_s=30))


# --- the records -------------------------------------------------------------------------------------------------


def wrong_shape(uid: str, size: int) -> bytes:
    """JSON of exactly ``size`` bytes (0: empty) that no contract accepts."""
    if size >= 10:
        return b'{"pad":"' + noise(uid, size - 10) + b'"}'
    if size >= 2:
        return b"[" + b" " * (size - 2) + b"]"
    return b"0"[:size]


@dataclass(frozen=True)
class Planned:
    uid: str
    kind: str
    value: bytes | None
    marked: bool


def noise(uid: str, size: int) -> bytes:
    """``size`` bytes of base64 that lz4 (the producers' compression) cannot shrink.

    Repeated bytes would compress to almost nothing, and the broker checks its limit on the
    compressed batch: a dead letter of ``b"x" * 65_000`` fits a 64 KiB topic even uncut, so it
    would not show a copy that is too big.
    """
    return base64.b64encode(hashlib.shake_256(uid.encode()).digest(size))[:size]


def plan(svc: Service, uid: str, size: int, kind: str) -> Planned:
    valid = svc.valid(uid)
    # JSON whitespace keeps the value valid (and compressible: these land in the output, not the DLQ).
    padded = valid + b" " * max(0, size - len(valid))
    value: bytes | None = {
        "valid": valid,
        "padded": padded,
        "not_json": (b"\xff" + noise(uid, size))[:size],
        "wrong_shape": wrong_shape(uid, size),
        "tombstone": None,
        # The wrapped handler fails on it before reading it: incompressible bytes after the value.
        "forever": (valid + noise(uid, size))[: max(size, len(valid))],
        "flaky": padded,
    }[kind]
    return Planned(uid, kind, value, kind in ("forever", "flaky"))


# --- the harness -------------------------------------------------------------------------------------------------


@dataclass
class Harness:
    """A service's app on its topics, a producer, and everything it wrote to its outputs and its DLQ."""

    svc: Service
    kafka: KafkaSettings
    names: dict[str, str]
    producer: AIOKafkaProducer
    es: Any = None
    index_prefix: str = ""
    out: Counter[str] = field(default_factory=Counter)
    dlq: dict[str, list[ConsumerRecord[bytes, bytes]]] = field(default_factory=dict)
    tries: Counter[str] = field(default_factory=Counter)
    serial: int = 0

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(**client_options(self.kafka), enable_auto_commit=False)  # type: ignore[arg-type]
        await consumer.start()
        try:
            by_topic = {self.names[t]: get for t, get in self.svc.outputs.items()}
            dlq_topic = self.names[self.svc.dlq]
            tps = await visible_partitions(consumer, [dlq_topic, *by_topic])
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    for r in records:
                        if tp.topic == dlq_topic:
                            self.dlq.setdefault((r.key or b"").decode(), []).append(r)
                        else:
                            self.out[by_topic[tp.topic](r)] += 1
        finally:
            await consumer.stop()

    async def poll_es(self, uids: Sequence[str]) -> None:
        """Index: a document per valid record (its id is the event id); idempotent, so 1 when present."""
        await self.es.indices.refresh(index=f"{self.index_prefix}-*", ignore_unavailable=True, allow_no_indices=True)
        resp = await self.es.search(
            index=f"{self.index_prefix}-*", query={"ids": {"values": list(uids)}}, size=len(uids), source=False
        )
        for hit in resp["hits"]["hits"]:
            self.out[hit["_id"]] = 1

    def landed(self, uid: str) -> int:
        return self.out[uid] + len(self.dlq.get(uid, []))

    async def roundtrip(self, cases: Sequence[tuple[int, str]]) -> None:
        made = []
        for size, kind in [*cases, (0, "valid")]:  # the last one: a valid record behind the others
            self.serial += 1
            made.append(plan(self.svc, f"p{self.serial}-{uuid.uuid4().hex[:6]}", size, kind))
        topic = self.names[self.svc.input]
        for p in made:
            # One at a time: two near-limit records in one produce batch would exceed the topic's limit.
            hdrs = [(MARK, p.kind.encode())] if p.marked else []
            await self.producer.send_and_wait(topic, p.value, key=p.uid.encode(), headers=hdrs, partition=0)
        deadline = time.monotonic() + 45
        while True:
            if self.es is not None:
                await self.poll_es([p.uid for p in made])
            if all(self.landed(p.uid) for p in made):
                break
            assert time.monotonic() < deadline, (
                f"{self.svc.name}: not delivered: {[(p.uid, p.kind) for p in made if not self.landed(p.uid)]}"
            )
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.4)  # room for a duplicate to show up
        if self.es is not None:
            await self.poll_es([p.uid for p in made])
        for p in made:
            self.check(p)

    def check(self, p: Planned) -> None:
        out, dead = self.out[p.uid], self.dlq.get(p.uid, [])
        where = f"{self.svc.name} {p.kind} {len(p.value) if p.value is not None else None} bytes ({p.uid})"
        reasons = [headers(r).get(H_REASON, "") for r in dead]
        if p.kind in ("valid", "padded"):
            assert not dead, f"{where}: dead-lettered: {reasons}"
            assert out == 1 or (self.svc.repeats and out >= 1), f"{where}: {out} outputs"
            return
        if p.kind == "flaky" and out:
            assert not dead, f"{where}: {out} outputs and DLQ {reasons}"
            assert out == 1 or self.svc.repeats, f"{where}: {out} outputs"
            return
        assert out == 0, f"{where}: {out} outputs (and DLQ {reasons})"
        assert len(dead) == 1, f"{where}: {len(dead)} dead letters {reasons}"
        (rec,) = dead
        h = headers(rec)
        assert h[H_REASON], where
        assert h[H_SOURCE_TOPIC] == self.names[self.svc.input], where
        if p.kind in ("forever", "flaky"):
            assert h[H_REASON].startswith(f"{RETRIES_EXHAUSTED} after {ATTEMPTS} attempts"), f"{where}: {h[H_REASON]}"
            assert h[H_ATTEMPTS] == str(ATTEMPTS), where
            assert 1 <= self.tries[p.uid] <= ATTEMPTS, f"{where}: tried {self.tries[p.uid]} times"
        else:
            assert not h[H_REASON].startswith(RETRIES_EXHAUSTED), f"{where}: {h[H_REASON]}"
        original = p.value or b""
        if len(original) > LIMIT - 1024:  # with ~500 bytes of x-dlq-* headers the copy would not fit uncut
            assert h.get(H_TRUNCATED) == "true", f"{where}: not cut to fit"
        if h.get(H_TRUNCATED) == "true":
            # Cut to fit the DLQ topic's limit: a prefix, plus the original's size and SHA-256.
            assert original.startswith(rec.value or b""), where
            assert len(rec.value or b"") < len(original), where
            assert h[H_ORIGINAL_SIZE] == str(len(original)), where
            assert h[H_ORIGINAL_SHA256] == hashlib.sha256(original).hexdigest(), where
        else:
            assert (rec.value or b"") == original, where


def wrap_handler(svc: Service, harness_ref: dict[str, Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the service's guarded handler fail on marked records: ``forever`` always, ``flaky`` once."""
    import importlib

    module_name, path, pos = svc.wrapped
    target: Any = importlib.import_module(module_name)
    *owners, attr = path.split(".")
    for owner in owners:
        target = getattr(target, owner)
    original = getattr(target, attr)
    flaked: set[str] = set()

    async def failing(*args: Any, **kwargs: Any) -> None:
        records = args[pos]
        marks = {(r.key or b"").decode(): dict(r.headers or ()).get(MARK) for r in records}
        tries = harness_ref["h"].tries
        fail = False
        for uid, mark in marks.items():
            if mark == b"forever":
                tries[uid] += 1
                fail = True
            elif mark == b"flaky" and uid not in flaked:
                flaked.add(uid)
                tries[uid] += 1
                fail = True
        if fail:
            msg = "handler bug on a marked record"
            raise RuntimeError(msg)
        await original(*args, **kwargs)

    monkeypatch.setattr(target, attr, failing)


@asynccontextmanager
async def harness(
    svc: Service, kafka: KafkaSettings, names: dict[str, str], ctx: dict[str, Any], ref: dict[str, Harness]
) -> AsyncIterator[Harness]:
    prefix = await make_service_topics(kafka, svc, names)
    probe = AIOKafkaConsumer(**client_options(kafka))  # type: ignore[arg-type]
    await probe.start()
    try:
        # The app subscribes once: every topic it reads must be known to the cluster first.
        await visible_partitions(
            probe, [names[n] for n in dict.fromkeys([svc.input, svc.dlq, *svc.outputs, *svc.extra])]
        )
    finally:
        await probe.stop()
    es = None
    try:
        if svc.name == "index":
            from elasticsearch import AsyncElasticsearch

            es = AsyncElasticsearch(ctx["es_url"], request_timeout=30)
        producer = AIOKafkaProducer(**client_options(kafka), acks="all")  # type: ignore[arg-type]
        await producer.start()
        try:
            async with start_app(svc, kafka, names, ctx):
                h = Harness(svc, kafka, names, producer, es=es, index_prefix=ctx.get("index_prefix", ""))
                ref["h"] = h
                task = asyncio.create_task(h.follow())
                try:
                    yield h
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            await producer.stop()
    finally:
        if es is not None:
            with contextlib.suppress(Exception):
                await es.indices.delete(
                    index=f"{ctx['index_prefix']}-*", ignore_unavailable=True, allow_no_indices=True
                )
            with contextlib.suppress(Exception):
                await es.indices.delete_index_template(name=f"{ctx['index_prefix']}*")
            await es.close()
        await TEST_TOPICS.cleanup(kafka, [prefix])


@pytest.fixture
def live(
    request: pytest.FixtureRequest,
    kafka_settings: KafkaSettings,
    topic_names: Callable[[], dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[LoopThread[Harness], Harness]]:
    """The service's harness entered once on its own loop (hypothesis drives a synchronous test)."""
    svc = SERVICES[request.param]
    ctx: dict[str, Any] = {}
    if svc.name in ("classify", "ner"):
        from tests.support.inference import build_tiny_repo, tiny_repo_from_env

        try:
            repo = build_tiny_repo(tiny_repo_from_env())
        except (FileNotFoundError, ModuleNotFoundError) as exc:
            missing("tiny model repository (make test-models)", repr(exc))
        monkeypatch.setenv("TEXTPULSE_MODEL_REPO", str(repo))
        monkeypatch.setenv("TEXTPULSE_LOCAL_THREADS", "1")
    if svc.name == "index":
        # The session's node: the developer's on 9200, else one started by deploy/elasticsearch.
        es_url = request.getfixturevalue("shared_es_url")
        ctx = {"es_url": es_url, "index_prefix": f"tpt-poison-{uuid.uuid4().hex[:8]}"}
    ref: dict[str, Harness] = {}
    wrap_handler(svc, ref, monkeypatch)
    loop = LoopThread(lambda: harness(svc, kafka_settings, topic_names(), ctx, ref), timeout_s=120)
    with loop as h:
        yield loop, h


SIZES = st.one_of(st.integers(0, VALUE_MAX), st.sampled_from([0, 1, VALUE_MAX]))


@pytest.mark.timeout(180)
# The Kafka clients on the harness's loop thread use `random` while hypothesis draws; the draws do not.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize(
    "live",
    [pytest.param(n, marks=[pytest.mark.es] if n == "index" else [], id=n) for n in SERVICES],
    indirect=True,
)
@settings(
    max_examples=2,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Every kind at the edges of the size range, whatever hypothesis draws after it.
@example(cases=[(0, "not_json"), (VALUE_MAX, "not_json"), (0, "tombstone"), (VALUE_MAX, "wrong_shape")])
@example(cases=[(VALUE_MAX, "forever"), (0, "valid"), (VALUE_MAX, "padded"), (VALUE_MAX // 2, "flaky"), (1, "forever")])
@given(cases=st.lists(st.tuples(SIZES, st.sampled_from(KINDS)), min_size=1, max_size=4))
def test_every_record_lands_once_and_the_partition_moves(
    live: tuple[LoopThread[Harness], Harness], cases: list[tuple[int, str]]
) -> None:
    loop, h = live
    loop.run(h.roundtrip(cases))
