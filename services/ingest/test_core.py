"""Unit tests of ingest's pure logic: keys, headers, batch parsing, the idempotency window."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from textpulse.contracts import TextEvent
from textpulse.kafka.writer import OutRecord, WriteError, WriteTimeout

from .core import Ingestor, InvalidInput, Outcome, headers_for, parse_batch, routing_key, validate_event
from .dedup import IdempotencyStore, Undecided

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def event(**kw: object) -> TextEvent:
    base: dict[str, object] = {
        "id": "e1",
        "source": "s",
        "channel": "support",
        "text": "t",
        "event_time": NOW,
        "ingest_time": NOW,
    }
    base.update(kw)
    return TextEvent.model_validate(base)


def test_routing_key_priority() -> None:
    assert routing_key(event(conversation_id="c", user_id="u", entity_key="k")) == "conv:c"
    assert routing_key(event(user_id="u", entity_key="k")) == "user:u"
    assert routing_key(event(entity_key="AAPL")) == "entity:AAPL"
    assert routing_key(event()) is None


def test_headers() -> None:
    h = headers_for(event())
    assert h["event-id"] == "e1"
    assert h["schema-version"] == "1"
    assert h["channel"] == "support"


def test_parse_batch() -> None:
    assert parse_batch(b'{"a":1}\n\n{"b":2}\n', ndjson=True) == [{"a": 1}, {"b": 2}]
    assert parse_batch(b"[1,2]", ndjson=False) == [1, 2]
    # The position of the event (blank lines skipped), as in a JSON array.
    with pytest.raises(InvalidInput, match=r"^not_json at \[1\]: ") as bad_line:
        parse_batch(b'{"a":1}\n\n{oops\n', ndjson=True)
    assert bad_line.value.status == 400
    with pytest.raises(InvalidInput, match=r"^not_an_array: a JSON batch must be an array of events, not an object$"):
        parse_batch(b'{"a":1}', ndjson=False)


class FakeWriter:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[OutRecord] = []

    async def write(self, records: Sequence[OutRecord]) -> None:
        await asyncio.sleep(0.01)
        if self.fail:
            raise WriteError("broker down")
        self.written.extend(records)


async def test_ingestor_dedups_within_and_across_calls() -> None:
    writer = FakeWriter()
    ing = Ingestor(writer, IdempotencyStore())  # type: ignore[arg-type]
    res = await ing.ingest([event(id="a"), event(id="a"), event(id="b")])
    assert [r.outcome for r in res] == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.ACCEPTED]
    res = await ing.ingest([event(id="b")])
    assert res[0].outcome is Outcome.DUPLICATE
    assert len(writer.written) == 2


async def test_failed_write_releases_ids() -> None:
    store = IdempotencyStore()
    failing = Ingestor(FakeWriter(fail=True), store)  # type: ignore[arg-type]
    with pytest.raises(WriteError):
        await failing.ingest([event(id="x")])
    ok = FakeWriter()
    res = await Ingestor(ok, store).ingest([event(id="x")])  # type: ignore[arg-type]
    assert res[0].outcome is Outcome.ACCEPTED
    assert len(ok.written) == 1


class TimingOutWriter:
    """A broker that does not answer in time while the records stay queued (``delivery`` settles them)."""

    def __init__(self) -> None:
        self.delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def write(self, records: Sequence[OutRecord]) -> None:
        raise WriteTimeout("text.raw", [self.delivery])


@pytest.mark.parametrize("delivered", [True, False])
async def test_a_timed_out_write_keeps_its_ids_until_the_queued_records_settle(delivered: bool) -> None:
    # The chaos run's duplicates in text.raw: a 503 after a time-out released the id, the client
    # retried, and the first copy was delivered anyway once the broker was back.
    store, slow = IdempotencyStore(), TimingOutWriter()
    with pytest.raises(WriteTimeout):
        await Ingestor(slow, store).ingest([event(id="x"), event(id="y")])  # type: ignore[arg-type]
    retry = FakeWriter()
    with pytest.raises(Undecided):  # a retry while undecided: 503 again, nothing written
        await Ingestor(retry, store).ingest([event(id="z"), event(id="x")])  # type: ignore[arg-type]
    assert store.undecided == 2
    if delivered:
        slow.delivery.set_result(None)
    else:
        slow.delivery.set_exception(TimeoutError("batch expired"))
    await asyncio.sleep(0.01)
    assert store.undecided == 0
    res = await Ingestor(retry, store).ingest([event(id="x"), event(id="z")])  # type: ignore[arg-type]
    expected = Outcome.DUPLICATE if delivered else Outcome.ACCEPTED
    assert [r.outcome for r in res] == [expected, Outcome.ACCEPTED]  # z was released, not lost
    assert len(retry.written) == (1 if delivered else 2)


async def test_concurrent_same_id_written_once() -> None:
    writer = FakeWriter()
    ing = Ingestor(writer, IdempotencyStore())  # type: ignore[arg-type]
    results = await asyncio.gather(*(ing.ingest([event(id="same")]) for _ in range(5)))
    outcomes = sorted(r[0].outcome.value for r in results)
    assert outcomes == ["accepted"] + ["duplicate"] * 4
    assert len(writer.written) == 1


async def test_store_bounds() -> None:
    store = IdempotencyStore(capacity=2, ttl_s=3600)
    store.add_many(["a", "b", "c"])
    assert not store.seen("a")
    assert store.seen("b")
    assert store.seen("c")
    short = IdempotencyStore(capacity=10, ttl_s=0.01)
    short.add_many(["z"])
    await asyncio.sleep(0.03)
    assert not short.seen("z")


def test_single_validation_agrees_with_the_client_contract() -> None:
    """validate_event (straight into TextEvent) and TextEventIn give the same verdict on every case."""
    from pydantic import ValidationError
    from textpulse.contracts import TextEventIn

    from tests.ingest_cases import HTTP_CASES, KAFKA_CASES

    from .core import decode_json

    bodies = [c[1] for c in HTTP_CASES] + [c[1] for c in KAFKA_CASES]
    for body in bodies:
        try:
            obj = decode_json(body)
        except InvalidInput:
            continue
        try:
            TextEventIn.model_validate(obj)
            contract_ok = True
        except ValidationError:
            contract_ok = False
        try:
            validate_event(obj, ingest_time=NOW)
            ours_ok = True
        except InvalidInput:
            ours_ok = False
        assert contract_ok == ours_ok, body[:80]
