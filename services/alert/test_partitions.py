"""Unit tests of the co-partitioned entity state (no Kafka): which keys belong to which
partition, drop / restore on rebalance, the watermark after a partition left, and the
changelog writes going to the key's partition."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from textpulse.contracts.alerts import KeyKind
from textpulse.kafka import DeadLetters
from textpulse.kafka.writer import OutRecord, RecordWriter

from .config import load_config
from .engine import Engine, KeyState
from .metrics import AlertMetrics
from .partitions import PartitionsMoving, PartitionState, entity_partition, owned_by, startup_state
from .processor import Outputs, Processor, TextCache
from .settings import AlertSettings
from .test_engine import Feed, sentiment

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
M = "t.entity.mentions"
E = "t.text.enriched"


def engine() -> Engine:
    return Engine(load_config(AlertSettings().config_path))


def add(eng: Engine, entity: str, partition: int, offset: int, minute: float = 0.0) -> str:
    return eng.add(
        key=f"entity:{entity}",
        kind=KeyKind.ENTITY,
        subject=entity,
        event_id=f"{entity}-{offset}",
        event_time=T0 + timedelta(minutes=minute),
        sentiment=sentiment("Bearish", 0.9),
        source=f"{M}:{partition}",
        offset=offset,
        partition=partition,
    )


def add_topic(eng: Engine, label: str, offset: int) -> None:
    eng.add(
        key=f"topic:{label}",
        kind=KeyKind.TOPIC,
        subject=label,
        event_id=f"{label}-{offset}",
        event_time=T0,
        sentiment=None,
        source=f"{E}:0",
        offset=offset,
    )


# -- engine: state, keys per partition, watermark ---------------------------------------


def test_partition_is_recorded_and_round_trips() -> None:
    eng = engine()
    add(eng, "ACME", 3, 10)
    state = eng.keys["entity:ACME"]
    assert state.partition == 3
    assert Engine.load(Engine.dump(state)).partition == 3


def test_state_without_partition_field_still_loads() -> None:
    """Changelog records written before the field existed: partition unknown."""
    eng = engine()
    add(eng, "ACME", 3, 10)
    data = orjson.loads(Engine.dump(eng.keys["entity:ACME"]))
    del data["partition"]
    legacy = Engine.load(orjson.dumps(data))
    assert legacy.partition is None
    assert legacy.offsets == {f"{M}:3": 10}


def test_keys_of_a_partition_and_drop() -> None:
    eng = engine()
    add(eng, "A", 0, 1)
    add(eng, "B", 1, 1)
    add(eng, "C", 1, 2)
    add_topic(eng, "rates", 1)
    assert sorted(eng.partition_keys({1})) == ["entity:B", "entity:C"]
    assert eng.partition_keys({2}) == []
    assert eng.drop_partitions({1}) == 2
    assert sorted(eng.keys) == ["entity:A", "topic:rates"]
    # A dropped key is not written any more (its new owner writes it).
    assert [s.key for s in eng.take_dirty()] == ["entity:A", "topic:rates"]


def test_watermark_no_longer_held_by_a_partition_that_left() -> None:
    eng = engine()
    lateness = eng.config.window.allowed_lateness_s
    add(eng, "SLOW", 0, 1, minute=0)
    add(eng, "FAST", 1, 1, minute=30)
    eng.advance()
    assert eng.watermark == (T0 + timedelta(minutes=0)).timestamp() - lateness
    eng.forget_sources([f"{M}:0"])
    eng.advance()
    assert eng.watermark == (T0 + timedelta(minutes=30)).timestamp() - lateness
    # Forgetting a source the engine never saw is harmless.
    eng.forget_sources([f"{M}:9"])


def test_entity_partition_is_kafkas_murmur2() -> None:
    """Same placement as the Java client and aiokafka (Kafka's murmur2 test vector for b"foobar")."""
    java_murmur2 = -790332482
    for n in (1, 2, 5, 6):
        assert entity_partition("foobar", range(n)) == (java_murmur2 & 0x7FFFFFFF) % n


def test_restore_filters() -> None:
    entity = KeyState(key="entity:A", kind=KeyKind.ENTITY, subject="A", partition=2)
    legacy = KeyState(key="entity:B", kind=KeyKind.ENTITY, subject="B")
    topic = KeyState(key="topic:rates", kind=KeyKind.TOPIC, subject="rates")
    assert [startup_state(s) for s in (entity, legacy, topic)] == [False, True, True]
    assert [owned_by({2})(s) for s in (entity, legacy, topic)] == [True, False, False]
    assert owned_by({1})(entity) is False


# -- rebalance bookkeeping --------------------------------------------------------------


class Changelog:
    """The changelog as the reader sees it: partition → states in log order."""

    def __init__(self) -> None:
        self.parts: dict[int, list[KeyState]] = {}
        self.reads: list[set[int] | None] = []
        self.fail: set[int] = set()

    def put(self, state: KeyState, partition: int) -> None:
        self.parts.setdefault(partition, []).append(state.model_copy(deep=True))

    async def read(self, eng: Engine, partitions: Collection[int] | None, select: Callable[[KeyState], bool]) -> int:
        self.reads.append(None if partitions is None else set(partitions))
        if partitions is not None and self.fail & set(partitions):
            raise TimeoutError("changelog not readable")
        count = 0
        for p, states in sorted(self.parts.items()):
            if partitions is not None and p not in partitions:
                continue
            for s in states:
                count += 1
                if select(s):
                    eng.install(s.model_copy(deep=True))
        return count


class Rec:
    def __init__(self, topic: str, partition: int, offset: int = 0) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.value: bytes | None = None
        self.key: bytes | None = None


def fixture(changelog: Changelog) -> tuple[PartitionState, Processor, list[dict[str, Any]]]:
    settings = AlertSettings(topic_mentions=M, topic_enriched=E, alertmanager_url=None)
    processor = Processor(engine(), TextCache(10), AlertMetrics(), topic_kind={M: "mention", E: "enriched"})
    written: list[dict[str, Any]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        written.append({"topic": topic, "value": value, **kw})

    processor.outputs = Outputs(
        state=RecordWriter(publish, "state"),
        alerts=RecordWriter(publish, "alerts"),
        dead_letters=DeadLetters(publish, service="alert", topic="dlq"),
        notifier=None,
    )
    ps = PartitionState(processor, settings, reader=changelog.read)
    ps.partitions = [0, 1, 2]
    return ps, processor, written


def tps(*parts: int, topic: str = M) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for p in parts}


def owner_state(entity: str, partition: int, offset: int) -> KeyState:
    eng = engine()
    add(eng, entity, partition, offset)
    return eng.keys[f"entity:{entity}"]


async def test_assignment_restores_new_partitions_and_drops_lost_ones() -> None:
    log = Changelog()
    for p, entity in enumerate(["A", "B", "C"]):
        log.put(owner_state(entity, p, 41), p)
    ps, processor, _ = fixture(log)
    add_topic(processor.engine, "rates", 1)

    await ps.on_partitions_assigned(tps(0, 1) | tps(0, topic=E))
    assert log.reads == [{0, 1}]
    assert ps.owned == {0, 1}
    assert sorted(processor.engine.keys) == ["entity:A", "entity:B", "topic:rates"]
    assert processor.metrics.partitions.labels("alert")._value.get() == 2
    add(processor.engine, "B", 1, 42)
    assert f"{M}:1" in processor.engine.source_max

    await ps.on_partitions_revoked(tps(0, 1))
    await ps.on_partitions_assigned(tps(1, 2))
    assert log.reads == [{0, 1}, {2}]  # partition 1 stayed: not read again
    assert ps.owned == {1, 2}
    assert sorted(processor.engine.keys) == ["entity:B", "entity:C", "topic:rates"]
    assert processor.engine.keys["entity:B"].offsets[f"{M}:1"] == 42  # kept, not replaced by the changelog
    assert f"{M}:0" not in processor.engine.source_max
    assert processor.metrics.keys.labels("alert")._value.get() == 3


async def test_new_owner_skips_records_the_old_owner_applied() -> None:
    """A batch the old owner applied but did not commit is redelivered: the restored offsets skip it."""
    log = Changelog()
    log.put(owner_state("A", 0, 41), 0)
    ps, processor, _ = fixture(log)
    await ps.on_partitions_assigned(tps(0))
    assert add(processor.engine, "A", 0, 41) == "duplicate"
    assert add(processor.engine, "A", 0, 42) == "added"


async def test_batches_during_a_rebalance_are_refused() -> None:
    ps, _processor, _ = fixture(Changelog())
    with pytest.raises(PartitionsMoving):  # nothing assigned yet
        await ps.before_batch([Rec(M, 0)])
    await ps.on_partitions_assigned(tps(0))
    await ps.before_batch([Rec(M, 0)])
    with pytest.raises(PartitionsMoving):  # not (or no longer) assigned here
        await ps.before_batch([Rec(M, 1)])
    await ps.on_partitions_revoked(tps(0))
    with pytest.raises(PartitionsMoving):
        await ps.before_batch([Rec(M, 0)])


async def test_failed_restore_is_retried_by_the_first_batch() -> None:
    log = Changelog()
    log.put(owner_state("A", 0, 41), 0)
    log.fail = {0}
    ps, processor, _ = fixture(log)
    await ps.on_partitions_assigned(tps(0))
    assert ps.owned == set()
    assert "entity:A" not in processor.engine.keys
    log.fail = set()
    await ps.before_batch([Rec(M, 0, 42)])
    assert ps.owned == {0}
    assert processor.engine.keys["entity:A"].offsets == {f"{M}:0": 41}


async def test_rebuild_restores_topic_keys_and_owned_partitions_only() -> None:
    """The exactly-once abort path: a fresh engine gets what this replica owns, nothing else."""
    log = Changelog()
    log.put(owner_state("A", 0, 41), 0)
    log.put(owner_state("B", 1, 41), 1)
    log.put(KeyState(key="topic:rates", kind=KeyKind.TOPIC, subject="rates"), 1)
    log.put(KeyState(key="entity:TSLA", kind=KeyKind.ENTITY, subject="TSLA"), 1)  # legacy, lands on 2
    ps, _processor, _ = fixture(log)
    await ps.on_partitions_assigned(tps(0))
    fresh = engine()
    assert await ps.rebuild(fresh) == 4 + 1
    assert log.reads[-2:] == [None, {0}]
    assert sorted(fresh.keys) == ["entity:A", "topic:rates"]


async def test_legacy_keys_are_adopted_dropped_or_rewritten() -> None:
    log = Changelog()
    ps, processor, written = fixture(log)
    eng = processor.engine
    entities = ("foobar", "abc", "21", "ACME", "TSLA")
    for entity in entities:
        eng.install(KeyState(key=f"entity:{entity}", kind=KeyKind.ENTITY, subject=entity))
    add_topic(eng, "rates", 1)
    eng.take_dirty()
    assert ps.adopt_legacy(eng) == len(entities)
    where = {k: s.partition for k, s in eng.keys.items() if s.kind is KeyKind.ENTITY}
    assert where == {f"entity:{e}": entity_partition(e, [0, 1, 2]) for e in entities}
    mine = where["entity:foobar"]
    assert set(where.values()) == {0, 1, 2}  # ACME and TSLA land elsewhere: dropped below
    # A newer copy of another legacy key of the same partition is in the changelog partition: it wins.
    newer = [k for k, p in where.items() if p == mine and k != "entity:foobar"]
    for key in newer:
        log.put(owner_state(key.removeprefix("entity:"), mine, 7), mine)
    await ps.on_partitions_assigned(tps(mine))
    assert {k for k, s in eng.keys.items() if s.kind is KeyKind.ENTITY} == {k for k, p in where.items() if p == mine}
    # The legacy key without a newer copy is rewritten to its partition; the others stay as restored.
    state_writes = [w for w in written if w["topic"] == "state"]
    assert [(w["key"], w.get("partition")) for w in state_writes] == [(b"entity:foobar", mine)]
    for key in newer:
        assert eng.keys[key].offsets == {f"{M}:{mine}": 7}


async def test_restored_outbox_is_published_and_state_goes_to_its_partition() -> None:
    log = Changelog()
    feed_engine = engine()
    feed = Feed(feed_engine, key="ACME")
    feed.background(0, 30)
    feed.minute(30, total=40, neg=36)
    feed.minute(31, total=40, neg=36)
    feed.minute(32, total=10, neg=2)
    state = feed_engine.keys["entity:ACME"]
    assert state.outbox, "the surge fired and the alert was not confirmed published"
    state.partition = 2
    log.put(state, 2)
    ps, processor, written = fixture(log)
    add_topic(processor.engine, "rates", 1)
    processor.engine.take_dirty()
    await ps.on_partitions_assigned(tps(2))
    alerts = [orjson.loads(w["value"]) for w in written if w["topic"] == "alerts"]
    assert [a["status"] for a in alerts] == ["firing"] * len(alerts)
    assert {a["key"] for a in alerts} == {"entity:ACME"}
    assert processor.engine.keys["entity:ACME"].outbox == []
    state_writes = [w for w in written if w["topic"] == "state"]
    assert [(w["key"], w["partition"]) for w in state_writes] == [(b"entity:ACME", 2)]


# -- writer: explicit partitions --------------------------------------------------------


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any, headers: Any) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    def __init__(self, partitions: int) -> None:
        self.n = partitions
        self.sent: dict[int, list[tuple[bytes | None, bytes]]] = {}

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.n))

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.setdefault(partition, []).extend(batch.records)
        fut: Any = __import__("asyncio").get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_writer_explicit_partition_and_partitioner() -> None:
    producer = FakeProducer(6)

    async def unused(*_a: Any, **_k: Any) -> None:
        raise AssertionError("the producer path is used")

    writer = RecordWriter(unused, "state", producer=lambda: producer)  # type: ignore[arg-type, return-value]
    await writer.write([OutRecord(b"1", b"foobar", {}, partition=4), OutRecord(b"2", b"foobar", {})])
    assert producer.sent[4] == [(b"foobar", b"1")]
    assert producer.sent[entity_partition("foobar", range(6))] == [(b"foobar", b"2")]
    with pytest.raises(Exception, match="partition 6 of state does not exist"):
        await writer.write([OutRecord(b"3", b"k", {}, partition=6)])


class FakeConsumer:
    """What the timer asks the consumer: the readable end and the position per partition."""

    def __init__(self, ends: dict[TopicPartition, int | None], positions: dict[TopicPartition, int]) -> None:
        self.ends, self.positions = ends, positions

    def last_stable_offset(self, tp: TopicPartition) -> int | None:
        return -1  # as aiokafka reports it where the broker gives none

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp]

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


async def _alone(work: Callable[[], Any]) -> None:
    await work()


async def test_timer_releases_empty_partitions_and_closes_windows() -> None:
    """Only p0 has records: p1 is empty, p2 not fetched yet (holds until it is), the enriched one caught up."""
    ps, processor, written = fixture(Changelog())
    await ps.on_partitions_assigned(tps(0, 1, 2) | tps(0, topic=E))
    eng = processor.engine
    assert sorted(eng.waiting_sources()) == sorted([f"{M}:0", f"{M}:1", f"{M}:2", f"{E}:0"])
    for offset in range(30):
        add(eng, "A", 0, offset, minute=offset / 3)
    assert not await processor.tick(_alone)  # no consumer known yet: the three keep holding
    ends: dict[TopicPartition, int | None] = {TopicPartition(M, 1): 0, TopicPartition(M, 2): None}
    ends[TopicPartition(E, 0)] = 7
    processor.consumer = FakeConsumer(ends, dict.fromkeys(ends, 0) | {TopicPartition(E, 0): 7})
    assert not await processor.tick(_alone)  # p2 is still unknown
    assert eng.waiting_sources() == [f"{M}:2"]
    ends[TopicPartition(M, 2)] = 0
    written.clear()
    assert await processor.tick(_alone)
    assert eng.waiting_sources() == []
    assert eng.watermark == (T0 + timedelta(minutes=29 / 3, seconds=-60)).timestamp()
    assert eng.keys["entity:A"].last_end is not None
    assert [w["topic"] for w in written] == ["state"]  # the evaluated key's state
    assert not await processor.tick(_alone)  # nothing new to evaluate


async def test_timer_waits_while_the_group_rebalances() -> None:
    ps, processor, written = fixture(Changelog())
    ps.hook()
    await ps.on_partitions_assigned(tps(0))
    add(processor.engine, "A", 0, 1, minute=10)
    await ps.on_partitions_revoked(tps(0))
    assert not await processor.tick(_alone)
    await ps.on_partitions_assigned(tps(0))
    assert await processor.tick(_alone)
    assert written
