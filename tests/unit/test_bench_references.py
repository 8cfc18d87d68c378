"""The benchmarks' shared pieces: a real uvicorn server on loopback, and the ingest reference's batching."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from bench.bench_ingest import batched_write
from bench.common import _loopback_socket, serve_uvicorn, serve_uvicorn_here


def _app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_loopback_socket_says_tcp_so_asyncio_sets_nodelay() -> None:
    # proto 0 would leave Nagle on for every accepted connection (~40 ms per keep-alive request)
    sock = _loopback_socket()
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_serve_uvicorn_runs_the_lifespan_and_answers_over_tcp() -> None:
    events: list[str] = []
    with serve_uvicorn(_app(events)) as url:
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url) as client:
            assert client.get("/ping").json() == {"pong": "yes"}
            started = time.perf_counter()
            for _ in range(5):  # keep-alive requests: no Nagle / delayed-ACK stall
                client.get("/ping")
            assert (time.perf_counter() - started) / 5 < 0.035
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped


async def test_serve_uvicorn_here_shares_the_callers_loop() -> None:
    events: list[str] = []
    app = _app(events)
    async with (
        app.router.lifespan_context(app),
        serve_uvicorn_here(app) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/ping")).json() == {"pong": "yes"}
    assert events == ["startup", "shutdown"]  # the caller's lifespan only, not a second one


class _Batch:
    def __init__(self, capacity: int) -> None:
        self.capacity, self.records = capacity, []

    def append(self, *, key: bytes | None, value: bytes, timestamp: None, headers: Any) -> object | None:
        if len(self.records) >= self.capacity:
            return None
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _Producer:
    """create_batch / send_batch / partitions_for, recording what was sent where."""

    def __init__(self, partitions: int, capacity: int) -> None:
        self.parts, self.capacity = partitions, capacity
        self.sent: list[tuple[int, list[tuple[bytes | None, bytes]]]] = []
        self._partitioner = lambda key, all_parts, available: int(key) % len(all_parts)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.parts))

    def create_batch(self) -> _Batch:
        return _Batch(self.capacity)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> asyncio.Future[None]:
        self.sent.append((partition, batch.records))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


async def test_batched_write_fills_batches_in_rotation_and_keeps_keys_on_their_partition() -> None:
    producer = _Producer(partitions=3, capacity=4)
    keyless = [(None, f"v{i}".encode(), []) for i in range(10)]
    keyed = [(str(k).encode(), b"k", []) for k in (0, 1, 2, 4)]
    await batched_write(producer, "t", keyless + keyed)  # type: ignore[arg-type]
    sent = [r for _, recs in producer.sent for r in recs]
    assert sorted(v for _, v in sent) == sorted(v for _, v, _ in keyless + keyed)  # each record once
    assert all(len(recs) <= 4 for _, recs in producer.sent)
    keyless_parts = [p for p, recs in producer.sent if any(k is None for k, _ in recs)]
    assert keyless_parts[:3] == [0, 1, 2]  # full batches, each on the next partition
    for part, recs in producer.sent:
        assert all(int(k) % 3 == part for k, _ in recs if k is not None)
