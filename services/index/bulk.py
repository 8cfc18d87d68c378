"""Bulk writes with retries: what Elasticsearch refuses for good is returned, the rest is retried.

One call to :meth:`BulkWriter.write` ends in one of two ways:

* every document is either indexed or *rejected* (a per-item 4xx such as a
  mapping error: retrying would fail the same way; the caller dead-letters it);
* :class:`BulkRetryExhausted` after ``deadline_s`` of failures (Elasticsearch
  down, 429s, 5xx): the caller must not commit, so the batch is redelivered.

Retryable: connection errors and timeouts, a whole request answered 429/5xx,
and items answered 429/5xx (only those items are re-sent). Re-sending is safe
because every action is an ``index`` with ``_id`` = the record's id: a document
written twice is the same document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from elasticsearch.helpers import async_streaming_bulk
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from .documents import Doc
from .pii import redact

log = logging.getLogger(__name__)

HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500


def retryable_status(status: int) -> bool:
    """429 (back-pressure) and 5xx (node trouble) may succeed later; other errors will not."""
    return status == HTTP_TOO_MANY_REQUESTS or status >= HTTP_SERVER_ERROR


def item_reason(item: dict[str, Any]) -> str:
    """'<status> <type>: <reason> (caused by …)' of one failed bulk item, redacted."""
    status = item.get("status", "?")
    error = item.get("error") or {}
    if not isinstance(error, dict):
        return redact(f"{status} {error}")
    text = f"{status} {error.get('type', 'error')}: {error.get('reason', '')}"
    cause = error.get("caused_by")
    if isinstance(cause, dict):
        text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
    return redact(text)


class _Retry(Exception):
    """Internal: some documents must be sent again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BulkRetryExhausted(RuntimeError):
    """Documents still not written after the retry deadline; do not commit."""


@dataclass
class BulkOutcome:
    """Result of one write: indexed count, rejected positions with their reasons, retries made."""

    indexed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    retries: int = 0


def action(doc: Doc) -> dict[str, Any]:
    """The bulk action of a document: ``index`` (create or overwrite) with ``_id`` = its id."""
    return {"_op_type": "index", "_index": doc.index, "_id": doc.id, "_source": doc.source}


class BulkWriter:
    """Writes documents with ``async_streaming_bulk``; retries with exponential backoff and jitter."""

    def __init__(
        self,
        es: AsyncElasticsearch,
        *,
        chunk_docs: int = 1000,
        chunk_bytes: int = 8 * 1024 * 1024,
        initial_s: float = 0.5,
        max_s: float = 10.0,
        deadline_s: float = 120.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.es = es
        self.chunk_docs, self.chunk_bytes = chunk_docs, chunk_bytes
        self.initial_s, self.max_s, self.deadline_s = initial_s, max_s, deadline_s
        self.on_retry = on_retry

    async def write(self, docs: Sequence[Doc]) -> BulkOutcome:
        """Index ``docs``; return what was rejected for good. Raises :class:`BulkRetryExhausted`."""
        outcome = BulkOutcome()
        pending = list(range(len(docs)))
        if not pending:
            return outcome

        def before_sleep(state: RetryCallState) -> None:
            outcome.retries += 1
            exc = state.outcome.exception() if state.outcome else None
            reason = exc.reason if isinstance(exc, _Retry) else repr(exc)
            if self.on_retry:
                self.on_retry(reason.split(":")[0])
            log.warning(
                "bulk write incomplete; retrying",
                extra={"pending": len(pending), "attempt": state.attempt_number, "reason": reason[:300]},
            )

        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.deadline_s),
                wait=wait_exponential_jitter(multiplier=self.initial_s, max=self.max_s, jitter=self.initial_s),
                retry=retry_if_exception_type(_Retry),
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    pending = await self._once(docs, pending, outcome)
        except _Retry as exc:
            msg = f"{len(pending)} documents not written after {self.deadline_s:.0f}s: {exc.reason}"
            raise BulkRetryExhausted(msg) from exc
        return outcome

    async def _once(self, docs: Sequence[Doc], pending: list[int], outcome: BulkOutcome) -> list[int]:
        """One pass over ``pending``; raises :class:`_Retry` with the positions left to send."""
        started = time.perf_counter()
        retry: list[int] = []
        last_reason = ""
        done = 0

        async def actions() -> AsyncIterator[dict[str, Any]]:
            for pos in pending:
                yield action(docs[pos])

        try:
            async for ok, result in async_streaming_bulk(
                self.es,
                actions(),
                chunk_size=self.chunk_docs,
                max_chunk_bytes=self.chunk_bytes,
                raise_on_error=False,
                raise_on_exception=True,
                max_retries=0,
                yield_ok=True,
            ):
                pos = pending[done]
                done += 1
                if ok:
                    outcome.indexed += 1
                    continue
                item = next(iter(result.values()))
                status = int(item.get("status", 0) or 0)
                if retryable_status(status):
                    retry.append(pos)
                    last_reason = item_reason(item)
                else:
                    outcome.rejected.append((pos, item_reason(item)))
        except ApiError as exc:
            if not retryable_status(exc.meta.status):
                raise
            retry.extend(pending[done:])
            last_reason = f"{exc.meta.status}: {redact(str(exc))[:300]}"
        except TransportError as exc:
            retry.extend(pending[done:])
            last_reason = f"{type(exc).__name__}: {redact(str(exc))[:300]}"
        log.debug("bulk pass", extra={"docs": done, "seconds": round(time.perf_counter() - started, 4)})
        if retry:
            pending[:] = retry
            raise _Retry(last_reason)
        return []
