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

The request is built here rather than by ``helpers.async_streaming_bulk``: each
document is serialised once with orjson into the NDJSON body (not again on each
retry), and the response is asked for with ``filter_path`` so Elasticsearch
returns one status per item (plus the error of failed ones) instead of the
full item, and a request without ``errors`` is accounted for without touching
its items. Measured on the benchmark's documents this is most of the client's
own cost per document (see services/index/README.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from .documents import Doc
from .pii import redact

log = logging.getLogger(__name__)

HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500
#: Only what the writer reads from a bulk response.
FILTER_PATH = "errors,items.*.status,items.*.error"


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

    #: Elasticsearch is down or overloaded, not the records' fault: never counted towards ``retries exhausted``.
    transient = True


@dataclass
class BulkOutcome:
    """Result of one write: indexed count, rejected positions with their reasons, retries made."""

    indexed: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    retries: int = 0


def action(doc: Doc) -> dict[str, Any]:
    """The bulk action of a document: ``index`` (create or overwrite) with ``_id`` = its id."""
    return {"_op_type": "index", "_index": doc.index, "_id": doc.id, "_source": doc.source}


def ndjson(doc: Doc) -> bytes:
    """The two NDJSON lines of a document's ``index`` action (raises ``orjson.JSONEncodeError``)."""
    head = orjson.dumps({"index": {"_index": doc.index, "_id": doc.id}})
    return head + b"\n" + orjson.dumps(doc.source) + b"\n"


class BulkWriter:
    """Writes documents with the bulk API; retries with exponential backoff and jitter."""

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
        """Index ``docs`` in order; return what was rejected for good. Raises :class:`BulkRetryExhausted`."""
        outcome = BulkOutcome()
        lines: list[bytes] = []
        pending: list[int] = []
        for pos, doc in enumerate(docs):
            try:
                lines.append(ndjson(doc))
            except orjson.JSONEncodeError as exc:
                # not JSON-serialisable: Elasticsearch would never accept it either
                lines.append(b"")
                outcome.rejected.append((pos, redact(f"not serialisable: {exc}")))
                continue
            pending.append(pos)
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
                    pending = await self._once(docs, lines, pending, outcome)
        except _Retry as exc:
            msg = f"{len(pending)} documents not written after {self.deadline_s:.0f}s: {exc.reason}"
            raise BulkRetryExhausted(msg) from exc
        outcome.rejected.sort()
        return outcome

    def _requests(self, lines: list[bytes], pending: list[int]) -> list[list[int]]:
        """``pending`` cut into requests of at most ``chunk_docs`` documents and ``chunk_bytes`` bytes."""
        out: list[list[int]] = []
        current: list[int] = []
        size = 0
        for pos in pending:
            n = len(lines[pos])
            if current and (len(current) >= self.chunk_docs or size + n > self.chunk_bytes):
                out.append(current)
                current, size = [], 0
            current.append(pos)
            size += n
        if current:
            out.append(current)
        return out

    async def _once(
        self, docs: Sequence[Doc], lines: list[bytes], pending: list[int], outcome: BulkOutcome
    ) -> list[int]:
        """One pass over ``pending``, request after request; raises :class:`_Retry` with the positions left."""
        started = time.perf_counter()
        retry: list[int] = []
        last_reason = ""
        requests = self._requests(lines, pending)
        for k, positions in enumerate(requests):
            try:
                # A ready NDJSON body: the client's NDJSON serializer forwards bytes unchanged (its own
                # bulk helpers pass serialised lines the same way, with the same type: ignore).
                body = b"".join(lines[p] for p in positions)
                resp = await self.es.bulk(operations=body, filter_path=FILTER_PATH)  # type: ignore[arg-type]
            except ApiError as exc:
                if not retryable_status(exc.meta.status):
                    raise
                retry.extend(p for req in requests[k:] for p in req)
                last_reason = f"{exc.meta.status}: {redact(str(exc))[:300]}"
                break
            except TransportError as exc:
                retry.extend(p for req in requests[k:] for p in req)
                last_reason = f"{type(exc).__name__}: {redact(str(exc))[:300]}"
                break
            answer = resp.body
            if not answer.get("errors"):
                outcome.indexed += len(positions)
                continue
            items = answer.get("items") or []
            if len(items) != len(positions):
                # cannot tell which item is which: send the whole request again (idempotent by id)
                retry.extend(positions)
                last_reason = f"bulk response has {len(items)} items for {len(positions)} actions"
                continue
            reason = self._classify(positions, items, outcome, retry)
            last_reason = reason or last_reason
        log.debug("bulk pass", extra={"docs": len(pending), "seconds": round(time.perf_counter() - started, 4)})
        if retry:
            keep = _not_superseded(docs, pending, retry, outcome)
            if keep:
                pending[:] = keep
                raise _Retry(last_reason)
        return []

    @staticmethod
    def _classify(positions: list[int], items: list[dict[str, Any]], outcome: BulkOutcome, retry: list[int]) -> str:
        """Account the items of one request, adding the positions to retry; the last retry reason."""
        reason = ""
        for pos, item in zip(positions, items, strict=True):
            result = next(iter(item.values())) if item else {}
            status = int(result.get("status", 0) or 0)
            if 200 <= status < 300:  # noqa: PLR2004 - HTTP success range
                outcome.indexed += 1
            elif retryable_status(status):
                retry.append(pos)
                reason = item_reason(result)
            else:
                outcome.rejected.append((pos, item_reason(result)))
        return reason


def _not_superseded(docs: Sequence[Doc], pending: list[int], retry: list[int], outcome: BulkOutcome) -> list[int]:
    """The positions to send again, in order, minus those a later document of the same id overwrote.

    Re-sending such a one would put the older version back over the newer (it
    counts as indexed: its id holds a newer document). Only runs when some
    documents must be retried.
    """
    again = set(retry)
    rejected = {pos for pos, _ in outcome.rejected}
    ids = {docs[pos].id for pos in again}
    last_ok: dict[str, int] = {}
    for pos in pending:
        if pos not in again and pos not in rejected and docs[pos].id in ids:
            last_ok[docs[pos].id] = pos
    keep = [pos for pos in sorted(again) if last_ok.get(docs[pos].id, -1) < pos]
    outcome.indexed += len(again) - len(keep)
    return keep
