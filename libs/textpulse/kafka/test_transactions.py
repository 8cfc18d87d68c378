"""When the exactly-once runner closes what a lost transaction may have left open (ExactlyOnce._fence_orphans)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from textpulse.settings import KafkaSettings

from .transactions import ExactlyOnce, add_partitions, transaction_partitions

IN = TopicPartition("in", 0)
OUT = {TopicPartition("out", 0), TopicPartition("out", 2), TopicPartition("dlq", 1)}


class Cluster:
    def __init__(self, topics: dict[str, set[int]]) -> None:
        self.topics = topics

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.topics.get(topic)


class Client:
    def __init__(self) -> None:
        self.topics = {"out": {0, 1, 2}, "dlq": {0, 1}}

    async def fetch_all_metadata(self) -> Cluster:
        return Cluster(self.topics)


class Producer:
    """Records what a transaction of the fence did."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.client = Client()

    async def begin_transaction(self) -> None:
        self.calls.append(("begin", None))

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: str) -> None:
        self.calls.append(("offsets", offsets))

    async def abort_transaction(self) -> None:
        self.calls.append(("abort", None))


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> tuple[ExactlyOnce, Producer]:
    eos = ExactlyOnce(KafkaSettings(flavor="apache"), group_id="g", service="test")
    producer = Producer()

    async def get(tp: TopicPartition) -> Producer:
        return producer

    added: list[TopicPartition] = []
    monkeypatch.setattr(eos, "_producer", get)
    monkeypatch.setattr("textpulse.kafka.transactions.add_partitions", lambda p, parts: added.extend(sorted(parts)))
    producer.added = added  # type: ignore[attr-defined]
    return eos, producer


async def test_after_a_failure_the_written_partitions_get_an_abort_marker(runner: tuple[ExactlyOnce, Producer]) -> None:
    eos, producer = runner
    eos._unconfirmed[IN] = set(OUT)
    eos._failed.add(IN)
    await eos._fence_orphans(IN, committed=40)
    assert producer.calls == [("begin", None), ("offsets", {IN: 40}), ("abort", None)]
    assert producer.added == sorted(OUT)  # type: ignore[attr-defined]
    assert eos.fenced_transactions == 1
    # Checked: the next check starts from nothing.
    assert IN not in eos._unconfirmed
    assert IN not in eos._failed


async def test_a_commit_the_broker_lost_is_fenced_without_a_failure(runner: tuple[ExactlyOnce, Producer]) -> None:
    eos, producer = runner
    eos._unconfirmed[IN] = set(OUT)
    eos._seen_committed[IN] = 50  # this process saw a commit up to 50; the broker says 40
    await eos._fence_orphans(IN, committed=40)
    assert eos.fenced_transactions == 1
    assert producer.calls[-1] == ("abort", None)


@pytest.mark.parametrize("committed", [50, 60], ids=["as-seen", "moved-on-by-another-owner"])
async def test_nothing_is_fenced_when_the_committed_offset_holds(
    runner: tuple[ExactlyOnce, Producer], committed: int
) -> None:
    eos, producer = runner
    eos._unconfirmed[IN] = set(OUT)
    eos._seen_committed[IN] = 50
    await eos._fence_orphans(IN, committed=committed)
    assert producer.calls == []
    assert eos.fenced_transactions == 0
    assert IN not in eos._unconfirmed


async def test_a_failure_with_nothing_written_needs_no_fence(runner: tuple[ExactlyOnce, Producer]) -> None:
    eos, producer = runner
    eos._failed.add(IN)
    await eos._fence_orphans(IN, committed=None)
    assert producer.calls == []


async def test_the_transaction_partitions_are_read_from_aiokafka() -> None:
    # transaction_partitions/add_partitions read aiokafka 0.14's transaction manager: fail loudly if it changes.
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", transactional_id="t")
    manager = producer._txn_manager
    manager.set_pid_and_epoch(7, 0)  # what InitProducerId does on start()
    manager.begin_transaction()
    add_partitions(producer, {TopicPartition("out", 1)})
    assert transaction_partitions(producer) == {TopicPartition("out", 1)}
    manager.partition_added(TopicPartition("out", 1))
    assert transaction_partitions(producer) == {TopicPartition("out", 1)}
    await producer.client.close()


async def test_a_deleted_topic_is_left_out_of_the_fence(runner: tuple[ExactlyOnce, Producer]) -> None:
    # aiokafka retries adding a partition that does not exist for ever: the fence would never end.
    eos, producer = runner
    producer.client.topics.pop("dlq")
    eos._unconfirmed[IN] = set(OUT)
    eos._failed.add(IN)
    await eos._fence_orphans(IN, committed=None)
    assert producer.added == sorted(o for o in OUT if o.topic == "out")  # type: ignore[attr-defined]
