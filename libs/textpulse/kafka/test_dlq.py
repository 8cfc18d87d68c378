"""DLQ headers (sanitised), dead letters cut to the topic limit, and the retry limit of ``DeadLetters.guard``."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import given, settings
from hypothesis import strategies as st

from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, FieldError, error, reason

from .dlq import (
    H_ATTEMPTS,
    H_CATEGORY,
    H_CODE,
    H_EXC_TYPE,
    H_FIELD,
    H_HEADERS_DROPPED,
    H_KEY_SHA256,
    H_KEY_SIZE,
    H_ORIGINAL_SHA256,
    H_ORIGINAL_SIZE,
    H_REASON,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_TRUNCATED,
    RETRIES_EXHAUSTED,
    DeadLetters,
    dlq_headers,
    fit_to_limit,
    is_transient,
    record_size,
)
from .writer import WriteError


@dataclass
class Rec:
    topic: str = "text.in"
    partition: int = 3
    offset: int = 42
    key: bytes | None = b"k"
    value: bytes | None = b"\xff raw"
    headers: Any = field(default_factory=lambda: [("trace", b"abc"), ("x-dlq-reason", b"old")])


def test_headers() -> None:
    h = dlq_headers(Rec(), service="ingest", reason="bad\r\nInjected: yes", exc=ValueError("x"))
    assert h[H_REASON] == "bad Injected: yes"
    assert h[H_EXC_TYPE] == "ValueError"
    assert (h[H_SOURCE_TOPIC], h[H_SOURCE_PARTITION], h[H_SOURCE_OFFSET]) == ("text.in", "3", "42")
    assert h["trace"] == "abc"


async def test_send_republishes_original_bytes() -> None:
    sent: list[tuple[Any, ...]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append((value, topic, kw))

    await DeadLetters(publish, service="ner").send(Rec(), DeadLetterReason.INVALID_RECORD, "boom")
    ((value, topic, kw),) = sent
    assert value == b"\xff raw"
    assert topic == "dlq.ner"
    assert kw["key"] == b"k"
    assert H_CODE not in kw["headers"]  # a free-text reason has no code


async def test_send_takes_code_and_field_from_the_exception() -> None:
    sent: list[dict[str, str]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append(kw["headers"])

    class Refused(ValueError):
        def __init__(self, errors: list[FieldError]) -> None:
            super().__init__(reason(errors))
            self.errors = errors

    errors = [error(ErrorCode.TEXT_TOO_LONG, "text", limit=10), error(ErrorCode.UNKNOWN_FIELD, "x\r\ny")]
    exc = Refused(errors)
    await DeadLetters(publish, service="ingest").send(Rec(), DeadLetterReason.INVALID_RECORD, str(exc), exc)
    (headers,) = sent
    assert (headers[H_CODE], headers[H_FIELD]) == ("text_too_long", "text")
    assert (
        headers[H_REASON] == "text_too_long at text: the text is longer than 10 characters (after normalisation)"
        "; unknown_field at x y: unknown field"
    )


# --- size limit -----------------------------------------------------------------------------------------------


def test_fits_unchanged() -> None:
    h = dlq_headers(Rec(), service="ingest", reason="bad")
    assert fit_to_limit(b"k", b"v" * 100, h, 65536) == (b"k", b"v" * 100, h)


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 70_000),
    key=st.one_of(st.none(), st.binary(max_size=300)),
    n_headers=st.integers(0, 5),
    limit=st.sampled_from([4096, 16_384, 65_536]),
)
def test_fit_never_exceeds_the_limit(size: int, key: bytes | None, n_headers: int, limit: int) -> None:
    value = bytes(i % 251 for i in range(size))
    rec = Rec(key=key, value=value, headers=[(f"h{i}", b"x" * 500) for i in range(n_headers)])
    h = dlq_headers(rec, service="ingest", reason="r" * 2000)
    k, v, out = fit_to_limit(key, value, h, limit)
    assert record_size(k, v, out) + 128 <= limit
    assert value.startswith(v)
    # The source coordinates survive every cut.
    assert (out[H_SOURCE_TOPIC], out[H_SOURCE_OFFSET]) == ("text.in", "42")
    if v != value or k != key:
        assert out[H_TRUNCATED] == "true"
        assert out[H_ORIGINAL_SIZE] == str(size)
        assert out[H_ORIGINAL_SHA256] == hashlib.sha256(value).hexdigest()
    else:
        assert H_TRUNCATED not in out


def test_headers_then_key_dropped_when_even_an_empty_value_does_not_fit() -> None:
    rec = Rec(key=b"K" * 3000, value=b"v" * 100, headers=[("big", b"x" * 900)])
    h = dlq_headers(rec, service="ingest", reason="bad")
    k, v, out = fit_to_limit(rec.key, b"v" * 100, h, 2048)
    assert k is None
    assert v == b"v" * 100  # without the key the value fits again
    assert out[H_HEADERS_DROPPED] == "1"
    assert "big" not in out
    assert out[H_KEY_SIZE] == "3000"
    assert out[H_KEY_SHA256] == hashlib.sha256(b"K" * 3000).hexdigest()


async def test_send_truncates_to_the_limit() -> None:
    sent: list[tuple[Any, ...]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append((value, topic, kw))

    dl = DeadLetters(publish, service="ingest", max_bytes=65_536)
    await dl.send(Rec(value=b"x" * 65_000), DeadLetterReason.INVALID_RECORD, "bad json")
    ((value, _topic, kw),) = sent
    assert len(value) < 65_000
    assert kw["headers"][H_TRUNCATED] == "true"
    assert kw["headers"][H_ORIGINAL_SIZE] == "65000"
    assert dl.truncated == 1


# --- transient or not ----------------------------------------------------------------------------------------


class Marked(RuntimeError):
    transient = True


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        raise outer from inner
    except Exception as exc:  # noqa: BLE001 - building a chained exception
        return exc


def test_is_transient() -> None:
    assert is_transient(TimeoutError())
    assert is_transient(KafkaConnectionError())
    assert is_transient(Marked())
    assert is_transient(_raised_from(WriteError("x"), KafkaTimeoutError()))
    # A record too large is the record's fault, whatever wraps it.
    assert not is_transient(_raised_from(WriteError("x"), MessageSizeTooLargeError()))
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(ValueError("bug"))


# --- retries exhausted ---------------------------------------------------------------------------------------


class Partition:
    """A fake partition: redelivers from the first record until the guard returns (what NACK does)."""

    def __init__(self, dl: DeadLetters, records: list[Rec]) -> None:
        self.dl, self.records, self.position, self.tries = dl, records, 0, 0

    async def poll(self, handle: Any, batch: int = 10) -> bool:
        self.tries += 1
        chunk = self.records[self.position : self.position + batch]
        try:
            await self.dl.guard(chunk, handle)
        except Exception:  # noqa: BLE001 - redelivered, as the consumer does
            return False
        self.position += len(chunk)
        return True


def _dl(sent: list[tuple[Any, ...]], attempts: int = 3) -> DeadLetters:
    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append((value, topic, kw))

    return DeadLetters(publish, service="route", max_attempts=attempts, backoff_s=(0.0, 0.0))


async def test_a_record_failing_every_time_is_dead_lettered_after_n_tries() -> None:
    sent: list[tuple[Any, ...]] = []
    dl = _dl(sent, attempts=3)
    records = [Rec(offset=i, value=f"v{i}".encode()) for i in range(5)]
    done: list[int] = []
    tried: list[int] = []

    async def handle(batch: Sequence[Rec]) -> None:
        tried.extend(r.offset for r in batch if r.offset == 2)
        if any(r.offset == 2 for r in batch):
            raise ValueError("cannot handle 2")
        done.extend(r.offset for r in batch)

    part = Partition(dl, records)
    for _ in range(10):
        if await part.poll(handle) and part.position == len(records):
            break
    assert part.tries == 3  # 2 failed batches, then one by one
    assert tried == [2, 2, 2]
    assert sorted(done) == [0, 1, 3, 4]
    ((value, topic, kw),) = sent
    assert (value, topic) == (b"v2", "dlq.route")
    assert kw["headers"][H_REASON].startswith(f"{RETRIES_EXHAUSTED} after 3 attempts: ValueError('cannot handle 2')")
    assert kw["headers"][H_ATTEMPTS] == "3"
    assert kw["headers"][H_CODE] == ErrorCode.RETRIES_EXHAUSTED.value
    assert dl.exhausted == 1


async def test_transient_failures_are_retried_for_ever() -> None:
    sent: list[tuple[Any, ...]] = []
    dl = _dl(sent, attempts=2)
    fails = 20

    async def handle(batch: Sequence[Rec]) -> None:
        nonlocal fails
        if fails:
            fails -= 1
            raise Marked("backend down")

    part = Partition(dl, [Rec(offset=i) for i in range(3)])
    while not await part.poll(handle):
        pass
    assert part.tries == 21
    assert sent == []


async def test_success_resets_the_count() -> None:
    sent: list[tuple[Any, ...]] = []
    dl = _dl(sent, attempts=3)
    flaky = iter([True, False, True, False])

    async def handle(batch: Sequence[Rec]) -> None:
        if next(flaky, False):
            raise ValueError("flaky")

    part = Partition(dl, [Rec(offset=i) for i in range(20)])
    while part.position < 20:
        await part.poll(handle)
    assert sent == []  # never twice in a row at the same offset


async def test_send_counts_the_dead_letter_by_service_topic_and_category() -> None:
    from textpulse.observability.metrics import ServiceMetrics

    sent: list[dict[str, str]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append(kw["headers"])

    metrics = ServiceMetrics("ingest", enabled=True)
    dl = DeadLetters(publish, service="ingest", metrics=metrics)
    await dl.send(Rec(), DeadLetterReason.INVALID_RECORD, "not_json: the value is not valid JSON")
    await dl.send(Rec(), DeadLetterReason.INVALID_RECORD, "empty_value")
    (first, _) = sent
    assert first[H_CATEGORY] == "invalid_record"
    assert first[H_REASON] == "not_json: the value is not valid JSON"  # the detail keeps its header
    labels = {"service": "ingest", "topic": "text.in", "reason": "invalid_record"}
    assert metrics.registry.get_sample_value("textpulse_dlq_messages_total", labels) == 2


async def test_retries_exhausted_is_counted_under_its_category() -> None:
    from textpulse.observability.metrics import ServiceMetrics

    sent: list[dict[str, str]] = []

    async def publish(value: bytes, topic: str, **kw: Any) -> None:
        sent.append(kw["headers"])

    async def handle(records: Sequence[Any]) -> None:
        raise ValueError("always")

    metrics = ServiceMetrics("route", enabled=True)
    dl = DeadLetters(publish, service="route", max_attempts=2, backoff_s=(0.0, 0.0), metrics=metrics)
    with pytest.raises(ValueError, match="always"):  # the first failure is redelivered
        await dl.guard([Rec()], handle)
    await dl.guard([Rec()], handle)
    (headers,) = sent
    assert headers[H_CATEGORY] == "retries_exhausted"
    labels = {"service": "route", "topic": "text.in", "reason": "retries_exhausted"}
    assert metrics.registry.get_sample_value("textpulse_dlq_messages_total", labels) == 1
