"""Shared benchmark plumbing: the real Kafka, service processes, RSS, result tables."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from tests.support.servers import TritonServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
console = Console(width=150)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def real_kafka(port: int = int(os.environ.get("KAFKA_PORT", "9092"))) -> Iterator[str]:
    """The real Apache Kafka: reuse a running one, else start it with the deploy script (and stop it after)."""
    started = False
    if not port_open(port):
        subprocess.run(["bash", str(REPO / "deploy/kafka/start.sh")], check=True)
        started = True
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if started:
            subprocess.run(["bash", str(REPO / "deploy/kafka/stop.sh")], check=False)


async def delete_run_topics(kafka: Any, prefix: str) -> None:
    """Delete the topics a run created (names starting with ``prefix``); a failure is reported, never fatal.

    As the tests do: a broker keeps every partition's files, indexes and timers, and 56 pipeline runs
    had left ~6,400 partition directories (519 MB) on the local broker the next runs shared.
    """
    from textpulse.kafka.admin import delete_topics, list_topics

    try:
        deleted = await delete_topics(kafka, await list_topics(kafka, prefix))
        console.print(f"deleted {len(deleted)} benchmark topic(s) under {prefix}*")
    except Exception as exc:  # the measurements are done: report and go on
        console.print(f"[yellow]could not delete the benchmark topics under {prefix}*: {exc!r}[/]")


@contextlib.contextmanager
def tritonserver(repo: Path, models: list[str], run_dir: Path) -> Iterator[tuple[str, str, int]]:
    """A tritonserver (deploy/triton) over ``models`` of ``repo`` on free ports; yields (grpc url, metrics url, pid)."""
    server = TritonServer.on_free_ports(repo, models, run_dir)
    for script in ("fetch.sh", "start.sh"):
        done = server.run(script, timeout=1800)
        if done.returncode != 0:
            server.run("stop.sh")
            msg = f"deploy/triton/{script} failed ({done.returncode}): {(done.stdout + done.stderr)[-2000:]}"
            raise RuntimeError(msg)
    try:
        yield server.url, server.metrics_url, server.pid
    finally:
        server.run("stop.sh")


def start_service(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the peak resident set size of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_ready(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"{url}/ready")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise TimeoutError(url)


def table(
    title: str,
    rows: list[tuple[str, str, str, str]],
    columns: tuple[str, str, str, str] = ("measure", "value", "target", "verdict"),
) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    return t


def _loopback_socket() -> socket.socket:
    """A socket bound to a free 127.0.0.1 port, handed to uvicorn as is (no free-port-then-bind race)."""
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so (accepted ones
    # inherit it), and without it Nagle + delayed ACKs add ~40 ms to every keep-alive request.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app: Any, lifespan: Literal["on", "off", "auto"], log_level: str) -> uvicorn.Config:
    # The services' own ``serve`` (textpulse.observability.http): default loop and HTTP parser
    # (uvloop / httptools when installed), no access log, logging left as configured.
    return uvicorn.Config(app, lifespan=lifespan, log_level=log_level, log_config=None, access_log=False)


@contextlib.contextmanager
def serve_uvicorn(
    app: Any,
    *,
    lifespan: Literal["on", "off", "auto"] = "on",
    log_level: str = "warning",
    startup_timeout_s: float = 120.0,
) -> Iterator[str]:
    """Serve the ASGI ``app`` with a real uvicorn server on loopback; yields its base URL.

    ``with serve_uvicorn(app) as url:`` → ``url`` is ``"http://127.0.0.1:<free port>"``; measure
    latencies with an ``httpx`` client over TCP against it (not ``httpx.ASGITransport``, which skips
    the socket, the HTTP parser and uvicorn). The server runs in a daemon thread with its own event
    loop, configured like the services' ``serve`` (uvicorn defaults, no access log), and runs the
    app's lifespan there (``lifespan="on"``): the app's clients (Kafka, Elasticsearch, …) are then
    created in that loop, so do not also start the lifespan in the caller's loop. The block's exit
    stops the server gracefully (lifespan shutdown included) and waits for the thread.
    Raises ``RuntimeError`` when the server does not start (e.g. the lifespan startup failed).

    For an app whose lifespan already runs in the caller's event loop (e.g. ``tests.helpers.running``
    to reach its ``app.state``), use :func:`serve_uvicorn_here` instead: same server, in that loop.
    """
    sock = _loopback_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(_uvicorn_config(app, lifespan, log_level))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                msg = f"uvicorn on 127.0.0.1:{port} did not start (lifespan failed or timed out)"
                raise RuntimeError(msg)
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


class _NoSignalServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone (it is not the process's server)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serve_uvicorn_here(
    app: Any, *, lifespan: Literal["on", "off", "auto"] = "off", log_level: str = "warning"
) -> AsyncIterator[str]:
    """:func:`serve_uvicorn` in the caller's running event loop; yields the base URL.

    For an app already started in this loop (``lifespan="off"``, the default: e.g. inside
    ``tests.helpers.running(app)``, whose clients belong to this loop). The server shares the loop
    with the caller, as a service's HTTP API shares its loop with its Kafka consumers; measure
    sequential requests so that the client's own waiting does not queue behind the server's work.
    """
    sock = _loopback_socket()
    port = sock.getsockname()[1]
    server = _NoSignalServer(_uvicorn_config(app, lifespan, log_level))
    task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{port}")
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raises the server's error, if any
                msg = f"uvicorn on 127.0.0.1:{port} did not start"
                raise RuntimeError(msg)
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
