"""Structured JSON logging: one JSON object per line, on stderr.

Repeats are rate limited (:class:`RepeatFilter`): a record failing in a loop is logged
once per interval with the count of what was left out, not at the loop's speed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from cachetools import LRUCache

from .tracing import TraceContextFilter, init_tracing

#: LogRecord attributes that are not user-supplied ``extra`` fields.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with the service name and any ``extra=`` fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")})
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            payload["exc"] = "".join(traceback.format_exception(*record.exc_info))[-4000:]
        return orjson.dumps(payload, default=str).decode()


#: Log-record fields that differ between repeats of one failure (FastStream's id of a polled batch
#: grows with the records behind a poison one): left out of the repeat key.
_VOLATILE = frozenset({"message_id", "retry_in_s"})


class RepeatFilter(logging.Filter):
    """Lets a WARNING-or-worse line through once per ``interval_s`` per distinct line; counts the rest.

    Distinct: logger, level, message, exception type and text, and the ``extra`` fields (so two
    dead-lettered offsets are two lines, the 29th failure a second of the same batch is not).
    The first line after a quiet interval carries ``repeats_suppressed`` (how many were left
    out). Lines below ``level`` always pass. At most ``max_keys`` lines are remembered (oldest
    forgotten first), so memory stays bounded whatever the input.

    Hand-written (about 30 lines) rather than a package: the maintained logging limiters key a
    stream by its format string or by one ``extra`` field chosen at the call site, which would
    either merge different poison records into one line or need every library's call sites
    (FastStream's, aiokafka's) to pass that field.
    """

    def __init__(
        self,
        interval_s: float = 60.0,
        *,
        level: int = logging.WARNING,
        max_keys: int = 2048,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.level = level
        self.max_keys = max_keys
        self.clock = clock
        # key -> [time the line last went out, repeats left out since]
        self._seen: LRUCache[tuple[object, ...], list[float]] = LRUCache(maxsize=max(1, max_keys))

    def _key(self, record: logging.LogRecord) -> tuple[object, ...]:
        exc = record.exc_info[1] if record.exc_info else None
        extras = tuple(
            sorted(
                (k, repr(v)[:200])
                for k, v in vars(record).items()
                if k not in _STANDARD_ATTRS and k not in _VOLATILE and not k.startswith("_")
            )
        )
        msg = record.getMessage()[:500]
        return (record.name, record.levelno, msg, type(exc).__name__, str(exc)[:300], extras)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or self.interval_s <= 0:
            return True
        key = self._key(record)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.repeats_suppressed = int(seen[1])
        self._seen[key] = [now, 0]
        return True


def repeat_interval_from_env() -> float:
    """``TEXTPULSE_LOG_REPEAT_INTERVAL_S`` (default 60; 0 switches the rate limit off)."""
    return float(os.environ.get("TEXTPULSE_LOG_REPEAT_INTERVAL_S", "60"))


def configure_logging(service: str, level: str = "INFO", *, json: bool = True) -> None:
    """Route all logging (ours, FastStream's, aiokafka's, uvicorn's) through one handler.

    The handler drops repeats of a WARNING-or-worse line within ``TEXTPULSE_LOG_REPEAT_INTERVAL_S``
    (:class:`RepeatFilter`), then adds the trace, span and event ids (:class:`TraceContextFilter`:
    after the repeat filter, so ids that differ per batch do not make every repeat a new line).
    Every service calls this first, so it also switches tracing on when an OTLP endpoint is
    configured (:func:`~textpulse.observability.tracing.init_tracing`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter(repeat_interval_from_env()))
    handler.addFilter(TraceContextFilter())
    if json:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream", "faststream.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # aiokafka logs every reconnect attempt at WARNING+; keep it, but not its DEBUG chatter.
    logging.getLogger("aiokafka").setLevel(max(logging.INFO, logging.getLevelName(level)))
    init_tracing(service)
