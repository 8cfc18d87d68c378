"""Dead-letter topic helper: republish the original bytes with the reason in headers."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from textpulse.contracts import dlq

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

_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
MAX_REASON_CHARS = 1000


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


def dlq_headers(record: RecordLike, *, service: str, reason: str, exc: BaseException | None = None) -> dict[str, str]:
    """Original headers (decoded leniently) plus the dead-letter headers."""
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
    return headers


PublishFn = Callable[..., Awaitable[Any]]


class DeadLetters:
    """Sends records a service cannot process to ``dlq.<service>`` and waits for the ack.

    ``publish`` is the broker's ``publish`` (FastStream), so the same code runs on
    a real broker and inside ``TestKafkaBroker``; inside an exactly-once transaction
    the record goes through the transaction's producer (it commits with the offsets).
    """

    def __init__(self, publish: PublishFn, *, service: str, topic: str | None = None) -> None:
        self._publish = publish
        self.service = service
        self.topic = topic or dlq(service).name

    async def send(self, record: RecordLike, reason: str, exc: BaseException | None = None) -> None:
        """Republish ``record`` unchanged (value and key) with reason headers."""
        headers = dlq_headers(record, service=self.service, reason=reason, exc=exc)
        log.warning(
            "dead-lettered record",
            extra={
                "dlq_topic": self.topic,
                "reason": headers[H_REASON][:200],
                "source_topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
        )
        producer = active_producer()
        if producer is not None:
            raw = [(k, v.encode()) for k, v in headers.items()]
            await producer.send_and_wait(self.topic, record.value or b"", key=record.key, headers=raw)
            return
        await self._publish(record.value or b"", self.topic, key=record.key, headers=headers)
