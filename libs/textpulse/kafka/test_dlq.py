"""DLQ headers: reason, exception type, source coordinates; header values sanitised."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .dlq import H_EXC_TYPE, H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC, DeadLetters, dlq_headers


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

    await DeadLetters(publish, service="ner").send(Rec(), "boom")
    ((value, topic, kw),) = sent
    assert value == b"\xff raw"
    assert topic == "dlq.ner"
    assert kw["key"] == b"k"
