"""The bulk writer's retry rules, against a scripted HTTP endpoint.

A real node cannot be made to answer 429 or 503 on demand, so this endpoint
(aiohttp, speaking the bulk API's wire format to the official client) answers
what each test scripts: per-item 429 then success, a permanent per-item 400,
whole-request 503s. The integration tests cover the real node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from .bulk import BulkRetryExhausted, BulkWriter
from .documents import Doc

Script = Callable[[int, str, dict[str, Any]], int]
"""(attempt number of the request, doc id, source) → item status; status 0 answers the whole request 503."""

HEADERS = {"X-Elastic-Product": "Elasticsearch", "Content-Type": "application/json"}
ERRORS = {
    400: {"type": "document_parsing_exception", "reason": "failed to parse field [metadata.n] of type [long]"},
    429: {"type": "es_rejected_execution_exception", "reason": "rejected execution (queue capacity 200)"},
}


@asynccontextmanager
async def scripted_es(script: Script) -> AsyncIterator[tuple[AsyncElasticsearch, Counter[str], list[int]]]:
    seen: Counter[str] = Counter()
    sizes: list[int] = []
    requests = 0

    async def bulk(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        lines = [orjson.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        actions = [next(iter(a.values())) for a in lines[0::2]]
        sizes.append(len(actions))
        if script(requests, "", {}) == 0:
            return web.Response(status=503, body=b'{"error":"unavailable","status":503}', headers=HEADERS)
        items = []
        for act, source in zip(actions, lines[1::2], strict=True):
            seen[act["_id"]] += 1
            status = script(requests, act["_id"], source)
            item: dict[str, Any] = {"_index": act["_index"], "_id": act["_id"], "status": status}
            if status in ERRORS:
                item["error"] = ERRORS[status]
            items.append({"index": item})
        body = {"took": 1, "errors": any(i["index"]["status"] >= 300 for i in items), "items": items}
        return web.Response(body=orjson.dumps(body), headers=HEADERS)

    app = web.Application()
    app.router.add_route("*", "/_bulk", bulk)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    es = AsyncElasticsearch(f"http://127.0.0.1:{port}", max_retries=0, request_timeout=5)
    try:
        yield es, seen, sizes
    finally:
        await es.close()
        await runner.cleanup()


def docs(*ids: str) -> list[Doc]:
    return [Doc(i, "tp-events-2026.11", {"event_id": i}) for i in ids]


def writer(es: AsyncElasticsearch, deadline_s: float = 10.0) -> BulkWriter:
    return BulkWriter(es, chunk_docs=2, initial_s=0.01, max_s=0.05, deadline_s=deadline_s)


async def test_item_429_is_retried_and_400_rejected() -> None:
    def script(attempt: int, doc_id: str, _: dict[str, Any]) -> int:
        if doc_id == "c":
            return 400
        if doc_id == "b" and attempt <= 2:
            return 429
        return 201

    async with scripted_es(script) as (es, seen, _):
        out = await writer(es).write(docs("a", "b", "c", "d"))
    assert out.indexed == 3
    assert [pos for pos, _ in out.rejected] == [2]
    assert out.rejected[0][1].startswith("400 document_parsing_exception: failed to parse field [metadata.n]")
    assert out.retries == 1
    assert seen == {"a": 1, "b": 2, "c": 1, "d": 1}


async def test_whole_request_503_is_retried() -> None:
    async with scripted_es(lambda attempt, _i, _s: 0 if attempt <= 2 else 201) as (es, seen, _):
        out = await writer(es).write(docs("a", "b", "c"))
    assert (out.indexed, out.rejected, out.retries) == (3, [], 2)
    assert seen == {"a": 1, "b": 1, "c": 1}


async def test_gives_up_after_the_deadline() -> None:
    async with scripted_es(lambda _a, _d, _s: 0) as (es, _, _sizes):
        with pytest.raises(BulkRetryExhausted, match="3 documents not written"):
            await writer(es, deadline_s=0.3).write(docs("a", "b", "c"))


async def test_connection_refused_is_retried_then_gives_up() -> None:
    es = AsyncElasticsearch("http://127.0.0.1:9", max_retries=0, request_timeout=1)
    try:
        with pytest.raises(BulkRetryExhausted, match="ConnectionError"):
            await writer(es, deadline_s=0.3).write(docs("a"))
    finally:
        await es.close()


async def test_a_retry_never_overwrites_a_newer_version() -> None:
    """Two versions of one id in a batch: if the older gets 429 and the newer is written, the older is dropped."""

    def script(_attempt: int, _doc_id: str, source: dict[str, Any]) -> int:
        return 429 if source.get("v") == 1 else 201

    versions = [Doc("x", "tp-events-2026.11", {"v": 1}), Doc("y", "tp-events-2026.11", {"v": 0})]
    versions.append(Doc("x", "tp-events-2026.11", {"v": 2}))
    async with scripted_es(script) as (es, seen, _):
        out = await BulkWriter(es, chunk_docs=10, initial_s=0.01, max_s=0.05, deadline_s=5).write(versions)
    assert (out.indexed, out.rejected, out.retries) == (3, [], 0)
    assert seen == {"x": 2, "y": 1}


async def test_requests_are_cut_by_documents_and_bytes_and_bad_documents_rejected() -> None:
    big = "x" * 40_000
    batch = [Doc(f"d{i}", "tp-events-2026.11", {"event_id": f"d{i}", "text": big}) for i in range(5)]
    batch.insert(2, Doc("bad", "tp-events-2026.11", {"value": object()}))  # not JSON-serialisable
    async with scripted_es(lambda _a, _d, _s: 201) as (es, seen, sizes):
        out = await BulkWriter(es, chunk_docs=3, chunk_bytes=100_000).write(batch)
    assert out.indexed == 5
    assert [pos for pos, _ in out.rejected] == [2]
    assert out.rejected[0][1].startswith("not serialisable")
    assert "bad" not in seen
    assert sizes == [2, 2, 1]  # two 40 kB documents fit under 100 kB
