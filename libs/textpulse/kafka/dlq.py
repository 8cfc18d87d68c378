"""Dead-letter topic helper: republish the original bytes with the reason in headers.

Two guarantees every service gets from here:

- **A dead letter always fits.** The DLQ copy is the original record plus ~400 bytes of
  ``x-dlq-*`` headers, so a record just under the broker's limit would be refused
  (``MessageSizeTooLargeError``) and jam its partition. :meth:`DeadLetters.start` reads the
  DLQ topic's ``max.message.bytes`` once at start-up; a copy that would not fit carries a
  prefix of the value, ``x-dlq-truncated: true``, the original's size and SHA-256, and the
  source coordinates (always present). The full original stays addressable at
  ``x-dlq-source-topic`` / ``-partition`` / ``-offset`` until the source topic's retention
  deletes it. Why not an overflow topic with a larger limit: it needs a second topic per
  service whose limit must exceed every input's (and the broker's ``message.max.bytes``, the
  producers' request size and the consumers' fetch sizes with it), and a record too big for
  *that* still jams; truncation has no such ceiling and adds no topic.
- **No record is retried for ever.** :meth:`DeadLetters.guard` wraps a batch handler: a
  batch that fails at the same offsets ``max_attempts - 1`` times is, on the next try, handled
  one record at a time, and a record that still fails alone is dead-lettered with the reason
  ``retries exhausted`` (and the last error; category ``retries_exhausted``); the rest of the
  batch is processed normally and the partition moves on. Each failure pauses before the
  redelivery (0.1 s doubling to 5 s; exactly-once backs off in its runner) so a failing batch
  does not spin. Outages
  (:func:`is_transient`: time-outs, lost connections, retriable Kafka errors, exceptions marked
  ``transient = True`` such as an unavailable inference backend or Elasticsearch) are not
  counted: they are not the record's fault, and draining a partition into the DLQ during an
  outage would lose the order and the outputs (they are paced like the others, not counted).
- **One vocabulary, counted once.** Every dead letter has a category
  (:class:`~textpulse.contracts.dead_letters.DeadLetterReason`, header ``x-dlq-category``) beside
  its free-text reason (``x-dlq-reason``), and :meth:`DeadLetters.send` counts it in
  ``textpulse_dlq_messages_total{service, topic, reason=<category>}``: no service counts its own,
  so the label values cannot drift apart and the ``retries exhausted`` letters are counted too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    CorruptRecordException,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from textpulse.contracts import dlq
from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, FieldError
from textpulse.observability.metrics import ServiceMetrics
from textpulse.settings import KafkaSettings

from .admin import client_options
from .transactions import active_producer

log = logging.getLogger(__name__)

#: Headers attached to every dead-lettered record.
H_REASON = "x-dlq-reason"
H_EXC_TYPE = "x-dlq-exception-type"
H_SOURCE_TOPIC = "x-dlq-source-topic"
H_SOURCE_PARTITION = "x-dlq-source-partition"
H_SOURCE_OFFSET = "x-dlq-source-offset"
H_TIME = "x-dlq-time"
H_SERVICE = "x-dlq-service"
#: The category (:class:`DeadLetterReason`); ``x-dlq-reason`` is the free-text detail.
H_CATEGORY = "x-dlq-category"
#: The error code (``textpulse.contracts.errors.ErrorCode``, as in the HTTP ``errors`` list) of the
#: first mistake, and its field path; present when the reason came from the shared vocabulary.
H_CODE = "x-dlq-code"
H_FIELD = "x-dlq-field"
#: Only on a copy cut to fit the DLQ topic's limit.
H_TRUNCATED = "x-dlq-truncated"
H_ORIGINAL_SIZE = "x-dlq-original-size"
H_ORIGINAL_SHA256 = "x-dlq-original-sha256"
H_HEADERS_DROPPED = "x-dlq-headers-dropped"
H_KEY_SIZE = "x-dlq-original-key-size"
H_KEY_SHA256 = "x-dlq-original-key-sha256"
#: Only on a record dead-lettered by :meth:`DeadLetters.guard`.
H_ATTEMPTS = "x-dlq-attempts"

#: The reason (prefix) of a record that failed ``max_attempts`` times.
RETRIES_EXHAUSTED = "retries exhausted"
#: Apache Kafka's default ``message.max.bytes`` (the topic default of ``max.message.bytes``).
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REASON_CHARS = 1000
#: Errors about one record's bytes (never transient, whatever wraps them).
_RECORD_ERRORS = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, CorruptRecordException)


class RecordLike(Protocol):
    """The parts of an aiokafka ``ConsumerRecord`` the DLQ needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


def clean_header(value: str, limit: int = MAX_REASON_CHARS) -> str:
    """Header values come from exceptions and user data: strip control characters, bound length."""
    return _UNSAFE.sub(" ", value)[:limit]


def dlq_headers(
    record: RecordLike,
    *,
    service: str,
    reason: str,
    exc: BaseException | None = None,
    errors: Sequence[FieldError] = (),
    category: DeadLetterReason | None = None,
) -> dict[str, str]:
    """Original headers (decoded leniently) plus the dead-letter headers (``errors``: code and field headers)."""
    headers: dict[str, str] = {}
    for name, raw in record.headers or ():
        if not name.startswith("x-dlq-"):
            headers[clean_header(str(name), 256)] = clean_header(
                raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
            )
    headers.update(
        {
            H_REASON: clean_header(reason),
            H_EXC_TYPE: type(exc).__name__ if exc is not None else "",
            H_SOURCE_TOPIC: record.topic,
            H_SOURCE_PARTITION: str(record.partition),
            H_SOURCE_OFFSET: str(record.offset),
            H_TIME: datetime.now(UTC).isoformat(),
            H_SERVICE: service,
        }
    )
    if category is not None:
        headers[H_CATEGORY] = category.value
    if errors:
        headers[H_CODE] = errors[0].code.value
        headers[H_FIELD] = clean_header(errors[0].field, 256)
    return headers


def record_size(key: bytes | None, value: bytes, headers: dict[str, str]) -> int:
    """Bytes of a one-record batch holding this record (aiokafka's own estimate, batch header included)."""
    raw = [(k, v.encode()) for k, v in headers.items()]
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, raw))


def _fits(size: int, limit: int) -> bool:
    # Slack for compression growing incompressible bytes (lz4: ~n/255 + a frame header) and varints.
    return size + size // 200 + 128 <= limit


def fit_to_limit(
    key: bytes | None, value: bytes, headers: dict[str, str], limit: int
) -> tuple[bytes | None, bytes, dict[str, str]]:
    """``(key, value, headers)`` of a DLQ record no larger than ``limit`` bytes.

    Unchanged when it fits. Otherwise the value is cut to a prefix and described by
    :data:`H_TRUNCATED`, :data:`H_ORIGINAL_SIZE`, :data:`H_ORIGINAL_SHA256`; if even an empty
    value does not fit, the original (non ``x-dlq-*``) headers are dropped, then the key
    (replaced by its size and SHA-256). The ``x-dlq-*`` headers (reason, source coordinates)
    always stay.
    """
    if _fits(record_size(key, value, headers), limit):
        return key, value, headers
    out = dict(headers)
    out.update(
        {H_TRUNCATED: "true", H_ORIGINAL_SIZE: str(len(value)), H_ORIGINAL_SHA256: hashlib.sha256(value).hexdigest()}
    )
    dropped = [k for k in out if not k.startswith("x-dlq-")]
    for step in ("value", "headers", "key"):
        if step == "headers" and dropped:
            out = {k: v for k, v in out.items() if k.startswith("x-dlq-")}
            out[H_HEADERS_DROPPED] = str(len(dropped))
        elif step == "key" and key is not None:
            out.update({H_KEY_SIZE: str(len(key)), H_KEY_SHA256: hashlib.sha256(key).hexdigest()})
            key = None
        fixed = record_size(key, b"", out)
        # Room for the value: what the fixed part leaves, minus the slack of _fits at the limit and the
        # value's length varint (at most 5 bytes).
        room = limit - 128 - limit // 200 - fixed - 5
        if room >= 0:
            return key, value[:room], out
    msg = f"a dead letter cannot fit {limit} bytes even without value, key and original headers"
    raise ValueError(msg)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an outage rather than a problem of the records.

    A size or corruption error of the broker is never transient. Transient: time-outs, lost
    connections, retriable Kafka errors and exceptions whose class says ``transient = True``.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__
    if any(isinstance(e, _RECORD_ERRORS) for e in chain):
        return False
    return any(
        getattr(type(e), "transient", False) is True
        or isinstance(e, TimeoutError | ConnectionError | KafkaTimeoutError)
        or (isinstance(e, KafkaError) and bool(e.retriable))
        for e in chain
    )


async def read_max_message_bytes(settings: KafkaSettings, topic: str) -> int | None:
    """The topic's effective ``max.message.bytes`` (None when the broker does not say)."""
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    finally:
        await admin.close()
    for response in responses:
        for error_code, _msg, _type, name, entries, *_ in response.resources:
            if error_code == 0 and name == topic:
                for entry in entries:
                    if entry[0] == "max.message.bytes" and entry[1]:
                        return int(entry[1])
    return None


PublishFn = Callable[..., Awaitable[Any]]
BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]


@dataclass
class _Failures:
    """Consecutive counted failures of a partition's batch starting at ``offset``."""

    offset: int
    count: int
    last: BaseException


class DeadLetters:
    """Sends records a service cannot process to ``dlq.<service>`` and waits for the ack.

    ``publish`` is the broker's ``publish`` (FastStream), so the same code runs on
    a real broker and inside ``TestKafkaBroker``; inside an exactly-once transaction
    the record goes through the transaction's producer (it commits with the offsets).

    ``kafka`` (the service's Kafka settings) gives ``max_attempts`` (``dlq_max_attempts``) and
    caps the record size at the producer's ``max_request_bytes``; :meth:`start` reads the DLQ
    topic's own limit. Until then (and without a broker) the limit is Kafka's default, 1 MiB.

    ``metrics`` (the service's): each dead letter sent increments its ``dlq`` counter, labelled
    with this service, the source topic and the category.
    """

    def __init__(
        self,
        publish: PublishFn,
        *,
        service: str,
        topic: str | None = None,
        kafka: KafkaSettings | None = None,
        max_attempts: int | None = None,
        max_bytes: int | None = None,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        metrics: ServiceMetrics | None = None,
    ) -> None:
        """``backoff_s``: pause before a counted failure is redelivered (first, doubling up to the second)."""
        self._publish = publish
        self.service = service
        self.topic = topic or dlq(service).name
        self.kafka = kafka
        self.max_attempts = max(2, max_attempts or (kafka.dlq_max_attempts if kafka else 5))
        self._request_cap = kafka.max_request_bytes if kafka else BROKER_DEFAULT_MAX_MESSAGE_BYTES
        self.max_bytes = max_bytes or min(BROKER_DEFAULT_MAX_MESSAGE_BYTES, self._request_cap)
        self._failures: dict[tuple[str, int], _Failures] = {}
        # Consecutive transient failures (any partition): paces the redelivery during an outage.
        self._outages = 0
        self.backoff_s = backoff_s
        self.metrics = metrics
        self.exhausted = 0
        self.truncated = 0

    async def start(self) -> int:
        """Read the DLQ topic's ``max.message.bytes`` (call once at start-up); returns the limit used.

        A broker that does not answer DescribeConfigs (or a topic not created yet) keeps the
        default, with a warning: the copy is then cut at 1 MiB, which the broker may still refuse
        if the topic's limit is lower.
        """
        if self.kafka is not None:
            try:
                limit = await read_max_message_bytes(self.kafka, self.topic)
            except Exception as exc:  # noqa: BLE001 - a service must start even where the broker cannot say
                log.warning("could not read max.message.bytes of %s: %r; assuming %d", self.topic, exc, self.max_bytes)
            else:
                if limit is None:
                    log.warning("max.message.bytes of %s unknown; assuming %d", self.topic, self.max_bytes)
                else:
                    self.max_bytes = min(limit, self._request_cap)
        log.info("dead letters above %d bytes are truncated", self.max_bytes, extra={"dlq_topic": self.topic})
        return self.max_bytes

    async def send(
        self,
        record: RecordLike,
        category: DeadLetterReason,
        detail: str,
        exc: BaseException | None = None,
        *,
        attempts: int | None = None,
        errors: Sequence[FieldError] | None = None,
    ) -> None:
        """Republish ``record`` (value and key; cut to fit the DLQ topic's limit) with reason headers.

        ``category`` goes into :data:`H_CATEGORY` and the metric's ``reason`` label; ``detail``
        (the one-line reason, never the input) into :data:`H_REASON`.

        ``errors`` (default: ``exc.errors`` when it is a list of :class:`FieldError`) adds
        :data:`H_CODE` and :data:`H_FIELD`, the code and field the HTTP API would answer.
        """
        if errors is None:
            found = getattr(exc, "errors", None)
            errors = found if isinstance(found, list) and all(isinstance(e, FieldError) for e in found) else ()
        headers = dlq_headers(
            record, service=self.service, reason=detail, exc=exc, errors=errors, category=DeadLetterReason(category)
        )
        if attempts is not None:
            headers[H_ATTEMPTS] = str(attempts)
        key, value, headers = fit_to_limit(record.key, record.value or b"", headers, self.max_bytes)
        truncated = H_TRUNCATED in headers
        self.truncated += truncated
        log.warning(
            "dead-lettered record",
            extra={
                "dlq_topic": self.topic,
                "reason": headers[H_REASON][:200],
                "category": headers[H_CATEGORY],
                "source_topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "truncated": truncated,
            },
        )
        producer = active_producer()
        if producer is not None:
            raw = [(k, v.encode()) for k, v in headers.items()]
            await producer.send_and_wait(self.topic, value, key=key, headers=raw)
        else:
            await self._publish(value, self.topic, key=key, headers=headers)
        if self.metrics is not None:
            # Counted once acknowledged: a send that fails raises, and the redelivered record is counted then.
            self.metrics.dlq.labels(self.service, record.topic, headers[H_CATEGORY]).inc()

    async def guard(self, records: Sequence[Any], handle: BatchHandler) -> None:
        """Run ``handle(records)``; a record that keeps failing ends in the DLQ (``retries exhausted``).

        Counted per input partition: consecutive non-transient failures of a batch starting at the
        same offset. After ``max_attempts - 1`` of them the next try handles the records one at a
        time; each record that fails alone is dead-lettered at once, the others are handled as
        usual, and the batch returns (so it is committed). A transient error is re-raised and never
        counted. Works inside an exactly-once transaction too (the dead letter commits with it).
        """
        starts: dict[tuple[str, int], int] = {}
        for rec in records:
            starts.setdefault((rec.topic, rec.partition), rec.offset)
        done = max(
            (f.count for tp, off in starts.items() if (f := self._failures.get(tp)) is not None and f.offset == off),
            default=0,
        )
        if done < self.max_attempts - 1 or not records:
            try:
                await handle(records)
            except Exception as exc:
                if is_transient(exc):
                    # Not counted towards "retries exhausted", but paced all the same: an outage
                    # redelivered at once would spin the CPU and the logs just like a poison record.
                    self._outages += 1
                    count = self._outages
                else:
                    count = self._count(starts, exc)
                if active_producer() is None:
                    # At-least-once redelivers at once: without a pause the N tries take milliseconds
                    # (a blip would exhaust them) and a failing batch spins the CPU and the logs.
                    # Exactly-once backs off in its runner.
                    await asyncio.sleep(min(self.backoff_s[1], self.backoff_s[0] * 2 ** (count - 1)))
                raise
            self._outages = 0
            for tp in starts:
                self._failures.pop(tp, None)
            return
        log.warning(
            "batch failed %d times at the same offsets; handling its records one by one",
            done,
            extra={"partitions": {f"{t}:{p}": o for (t, p), o in starts.items()}, "records": len(records)},
        )
        for rec in records:
            try:
                await handle([rec])
            except Exception as exc:
                if is_transient(exc):
                    raise
                self.exhausted += 1
                await self.send(
                    rec,
                    DeadLetterReason.RETRIES_EXHAUSTED,
                    f"{RETRIES_EXHAUSTED} after {self.max_attempts} attempts: {exc!r}",
                    exc,
                    attempts=done + 1,
                    errors=[FieldError(ErrorCode.RETRIES_EXHAUSTED, "", f"processing failed {done + 1} times")],
                )
        for tp in starts:
            self._failures.pop(tp, None)

    def _count(self, starts: dict[tuple[str, int], int], exc: BaseException) -> int:
        """Count a failure of the batch starting at ``starts``; returns the highest count now."""
        for tp, offset in starts.items():
            f = self._failures.get(tp)
            if f is not None and f.offset == offset:
                f.count += 1
                f.last = exc
            else:
                self._failures[tp] = _Failures(offset, 1, exc)
        return max(self._failures[tp].count for tp in starts)
