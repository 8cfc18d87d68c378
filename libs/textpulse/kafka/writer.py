"""Write many records and wait until the broker acknowledged all of them.

Each record is handed to the producer without waiting (so records to a
partition travel in one batch), then all acknowledgements are awaited together
under one deadline. A caller answers its client, or commits its input offsets,
only after :meth:`RecordWriter.write` returned.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


class WriteError(Exception):
    """The broker did not acknowledge every record in time; nothing can be assumed written."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One record to write."""

    value: bytes
    key: bytes | None
    headers: dict[str, str]


PublishFn = Callable[..., Awaitable[Any]]


class RecordWriter:
    """Publishes through a FastStream broker's ``publish`` (works with ``TestKafkaBroker`` too)."""

    def __init__(self, publish: PublishFn, topic: str, *, timeout_s: float = 10.0) -> None:
        self._publish = publish
        self.topic = topic
        self.timeout_s = timeout_s

    async def write(self, records: Sequence[OutRecord]) -> None:
        """Write ``records``; raise :class:`WriteError` unless all were acknowledged."""
        if not records:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                pending = []
                for rec in records:
                    result = await self._publish(
                        rec.value, self.topic, key=rec.key, headers=rec.headers, no_confirm=True
                    )
                    if inspect.isawaitable(result):
                        pending.append(result)
                if pending:
                    await asyncio.gather(*pending)
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            msg = f"write to {self.topic} failed: {exc!r}"
            raise WriteError(msg) from exc
