"""The local stack of a chaos run: components that start, answer a readiness probe and die by SIGKILL.

Infrastructure (Kafka, Elasticsearch, Triton, Prometheus) runs through the ``deploy/<component>``
scripts with the chaos ports and run dirs in the environment; the services run as
``python -m services.<name>.app`` child processes. Each component knows its PID, so a fault is a
plain ``kill -9`` of that PID (Triton's whole process group, so the python backend stubs die with
it as they would in a container).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import httpx
from textpulse.contracts.services import runnable
from textpulse.kafka.admin import wait_for_broker
from textpulse.settings import REPO_ROOT, KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ports:
    """Ports of the chaos stack: none of them is used by the usual stack or by the tests."""

    kafka: int = 9292
    kafka_controller: int = 9293
    kafka_jmx: int = 9494
    es_http: int = 9250
    es_transport: int = 9350
    triton_http: int = 18000
    triton_grpc: int = 18001
    triton_metrics: int = 18002
    service_base: int = 18080
    prometheus: int = 19090


#: service name → offset from ``Ports.service_base`` (ingest 18080 … index 18085)
#: (the registry's services that need at most the models and Elasticsearch: recommend, which needs
#: the recsys artefacts, is not part of the chaos stack)
SERVICES = tuple(s.name for s in runnable(have={"models", "elasticsearch"}))
#: services whose processing guarantee ``--delivery`` switches
TRANSACTIONAL = ("classify", "ner", "alert", "route")


@dataclass
class Component:
    """Something the harness starts, probes, kills and restarts."""

    name: str
    kind: str  # "infra" or "service"
    run_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    starts: int = 0
    #: restarts by the harness's supervisor beyond the one a fault asks for
    supervisor_restarts: int = 0

    async def start(self) -> None:
        raise NotImplementedError

    def pid(self) -> int | None:
        raise NotImplementedError

    async def ready(self) -> bool:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def log_files(self) -> list[Path]:
        raise NotImplementedError

    def kill(self) -> int | None:
        """SIGKILL the component; returns the PID killed (None when it was not running)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pid

    async def wait_ready(self, timeout_s: float) -> float:
        """Seconds until the readiness probe passes; TimeoutError after ``timeout_s``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(Exception):
                if await self.ready():
                    return time.monotonic() - started
            await asyncio.sleep(0.25)
        msg = f"{self.name} not ready after {timeout_s:.0f}s (logs: {', '.join(map(str, self.log_files()))})"
        raise TimeoutError(msg)


def _read_pid(path: Path) -> int | None:
    try:
        text = "".join(ch for ch in path.read_text() if ch.isdigit())
    except OSError:
        return None
    if not text:
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


@dataclass
class ScriptComponent(Component):
    """A ``deploy/<dir>/{start,stop}.sh`` component; the PID comes from its pid file."""

    deploy_dir: str = ""
    pid_file: Path = Path()
    logs: list[Path] = field(default_factory=list)
    probe_url: str | None = None
    kafka: KafkaSettings | None = None
    kill_group: bool = False

    async def _script(self, script: str, *args: str, timeout_s: float = 300.0) -> None:
        out = self.run_dir / f"{self.name}.scripts.log"
        with out.open("ab") as fh:
            proc = await asyncio.create_subprocess_exec(
                str(REPO_ROOT / "deploy" / self.deploy_dir / script),
                *args,
                env={**os.environ, **self.env},
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
            try:
                rc = await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                raise
        if rc != 0:
            msg = f"deploy/{self.deploy_dir}/{script} failed with {rc}; see {out}"
            raise RuntimeError(msg)

    async def start(self) -> None:
        """start.sh, tried a second time after a failure (a supervisor's restart policy: a start can
        fail for reasons of the moment, e.g. a port still held by the process that just died)."""
        self.starts += 1
        try:
            await self._script("start.sh")
        except RuntimeError:
            log.warning("chaos: %s start failed once; retrying", self.name)
            self.supervisor_restarts += 1
            await asyncio.sleep(2.0)
            await self._script("start.sh")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._script("stop.sh", timeout_s=120)

    def pid(self) -> int | None:
        return _read_pid(self.pid_file)

    def kill(self) -> int | None:
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.kill_group:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        return pid

    async def ready(self) -> bool:
        if self.kafka is not None:
            try:
                await wait_for_broker(self.kafka, timeout_s=2)
            except TimeoutError:
                return False
            return True
        assert self.probe_url is not None
        async with httpx.AsyncClient(timeout=2.0) as client:
            resp = await client.get(self.probe_url)
        if resp.status_code != HTTPStatus.OK:
            return False
        if "_cluster/health" in self.probe_url:
            return bool(resp.json().get("status") in {"green", "yellow"})
        return True

    def log_files(self) -> list[Path]:
        return [p for p in [*self.logs, self.run_dir / f"{self.name}.scripts.log"] if p.exists()]


@dataclass
class ServiceComponent(Component):
    """``python -m services.<name>.app``; stdout and stderr appended to one log per service."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    #: seconds a started process may stay unready before the supervisor replaces it
    stuck_s: float = 150.0

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    async def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as fh:
            # Popen returns as soon as the child is spawned; a Popen handle is what poll/kill need.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}.app"],
                env={**os.environ, **self.env},
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )

    def pid(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None
        return self.proc.pid

    def kill(self) -> int | None:
        pid = super().kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        return pid

    async def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        async with httpx.AsyncClient(timeout=2.0) as client:
            resp = await client.get(f"http://127.0.0.1:{self.port}/ready")
        return resp.status_code == HTTPStatus.OK

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)

    def log_files(self) -> list[Path]:
        return [self.log_path] if self.log_path.exists() else []

    async def wait_ready(self, timeout_s: float) -> float:
        """Readiness with a supervisor's restart policy, as Kubernetes would apply it: a process that
        exited, or that stays unready for ``stuck_s`` (a failed start-up that never exits), is
        killed and started again. ``supervisor_restarts`` counts those."""
        started = time.monotonic()
        attempt_started = started
        while time.monotonic() - started < timeout_s:
            with contextlib.suppress(Exception):
                if await self.ready():
                    return time.monotonic() - started
            exited = self.proc is None or self.proc.poll() is not None
            if exited or time.monotonic() - attempt_started > self.stuck_s:
                # Back off like a crash-looping pod: 1, 2, 4 … 10 s between restarts.
                backoff = min(10.0, 2.0 ** min(self.supervisor_restarts, 4) / 2)
                log.warning(
                    "chaos: %s %s; supervisor restarts it in %.0fs", self.name, "exited" if exited else "stuck", backoff
                )
                self.supervisor_restarts += 1
                self.kill()
                await asyncio.sleep(backoff)
                await self.start()
                attempt_started = time.monotonic()
            await asyncio.sleep(0.25)
        msg = f"{self.name} not ready after {timeout_s:.0f}s (log: {self.log_path})"
        raise TimeoutError(msg)


@dataclass
class StackConfig:
    """What to start and how."""

    run_dir: Path
    model_repo: Path
    delivery: str = "at_least_once"
    ports: Ports = field(default_factory=Ports)
    index_prefix: str = "tpchaos"
    prometheus: bool = True
    #: extra environment for every service (the fake secrets of the log scan go here)
    service_env: dict[str, str] = field(default_factory=dict)


class Stack:
    """Every component of a chaos run, started in dependency order and stopped in reverse."""

    def __init__(self, cfg: StackConfig) -> None:
        self.cfg = cfg
        p = cfg.ports
        run = cfg.run_dir
        run.mkdir(parents=True, exist_ok=True)
        self.kafka_settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{p.kafka}")
        kafka_dir = run / "kafka"
        es_dir = run / "es"
        triton_dir = run / "triton"
        self.kafka = ScriptComponent(
            "kafka",
            "infra",
            run,
            env={
                "KAFKA_PORT": str(p.kafka),
                "KAFKA_CONTROLLER_PORT": str(p.kafka_controller),
                "KAFKA_JMX_EXPORTER_PORT": str(p.kafka_jmx),
                "KAFKA_RUN_DIR": str(kafka_dir),
            },
            deploy_dir="kafka",
            pid_file=kafka_dir / "kafka.pid",
            logs=[kafka_dir / "kafka.log", kafka_dir / "kafka.out"],
            kafka=self.kafka_settings,
        )
        self.elasticsearch = ScriptComponent(
            "elasticsearch",
            "infra",
            run,
            env={"ES_HTTP_PORT": str(p.es_http), "ES_TRANSPORT_PORT": str(p.es_transport), "ES_RUN_DIR": str(es_dir)},
            deploy_dir="elasticsearch",
            pid_file=es_dir / "elasticsearch.pid",
            logs=[es_dir / "elasticsearch.out", es_dir / "logs" / "textpulse.log"],
            probe_url=f"http://127.0.0.1:{p.es_http}/_cluster/health",
        )
        self.triton = ScriptComponent(
            "triton",
            "infra",
            run,
            env={
                "TRITON_HTTP_PORT": str(p.triton_http),
                "TRITON_GRPC_PORT": str(p.triton_grpc),
                "TRITON_METRICS_PORT": str(p.triton_metrics),
                "TRITON_RUN_DIR": str(triton_dir),
                "TRITON_MODEL_REPO": str(cfg.model_repo),
            },
            deploy_dir="triton",
            pid_file=triton_dir / "tritonserver.pid",
            logs=[triton_dir / "tritonserver.log"],
            probe_url=f"http://127.0.0.1:{p.triton_http}/v2/health/ready",
            kill_group=True,
        )
        targets = {f"PROM_TARGET_{s.upper()}": f"127.0.0.1:{self.service_port(s)}" for s in SERVICES}
        targets |= {
            "PROM_TARGET_KAFKA": f"127.0.0.1:{p.kafka_jmx}",
            "PROM_TARGET_TRITON": f"127.0.0.1:{p.triton_metrics}",
            "PROM_TARGET_RECOMMEND": "",
            "PROM_TARGET_ALERTMANAGER": "",
            "PROM_TARGET_PROMETHEUS": f"127.0.0.1:{p.prometheus}",
        }
        self.prometheus = ScriptComponent(
            "prometheus",
            "infra",
            run,
            env={"PROM_PORT": str(p.prometheus), "PROM_RUN_DIR": str(run / "prometheus"), **targets},
            deploy_dir="prometheus",
            pid_file=run / "prometheus" / "prometheus.pid",
            logs=[run / "prometheus" / "prometheus.log"],
            probe_url=f"http://127.0.0.1:{p.prometheus}/-/ready",
        )
        self.services = {name: self._service(name) for name in SERVICES}

    def service_port(self, name: str) -> int:
        return self.cfg.ports.service_base + SERVICES.index(name)

    def _service(self, name: str) -> ServiceComponent:
        p = self.cfg.ports
        prefix = f"TEXTPULSE_{name.upper()}_"
        env = {
            "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": self.kafka_settings.bootstrap_servers,
            "TEXTPULSE_KAFKA_FLAVOR": "apache",
            "TEXTPULSE_TRITON_URL": f"127.0.0.1:{p.triton_grpc}",
            "TEXTPULSE_MODEL_REPO": str(self.cfg.model_repo),
            # Long enough to ride out a Triton restart at start-up (a service restarted while
            # Triton is down must wait for it rather than crash-loop).
            "TEXTPULSE_TRITON_STARTUP_TIMEOUT_S": "240",
            # A shared 2-core machine under a full stack answers a 64-text batch in seconds, not
            # milliseconds; the 10 s default deadline would open the circuit on a merely slow server.
            "TEXTPULSE_TRITON_TIMEOUT_S": "60",
            f"{prefix}HTTP_PORT": str(self.service_port(name)),
            # Faster lag probes make the recovery and load measurements finer.
            f"{prefix}LAG_REFRESH_S": "2",
            **self.cfg.service_env,
        }
        if os.environ.get("TEXTPULSE_CHAOS_STATIC_MEMBERSHIP", "1") == "1":
            # Static group membership, one stable id per replica as a pod name gives it in Kubernetes: a
            # restart takes its partitions back without a rebalance (issue #22). ``=0`` runs the services
            # as dynamic members (the library default, 10 s session) for comparison.
            env["TEXTPULSE_KAFKA_GROUP_INSTANCE_ID"] = f"{name}-0"
        if name in TRANSACTIONAL:
            env[f"{prefix}DELIVERY"] = self.cfg.delivery
        if name == "index":
            env |= {
                f"{prefix}ES_URL": f"http://127.0.0.1:{p.es_http}",
                f"{prefix}INDEX_PREFIX": self.cfg.index_prefix,
                f"{prefix}ES_CONNECT_TIMEOUT_S": "240",
            }
        if name == "alert":
            env[f"{prefix}EXTERNAL_URL"] = f"http://127.0.0.1:{self.service_port(name)}"
        return ServiceComponent(name, "service", self.cfg.run_dir, env=env, port=self.service_port(name))

    @property
    def infra(self) -> list[ScriptComponent]:
        items = [self.kafka, self.elasticsearch, self.triton]
        return [*items, self.prometheus] if self.cfg.prometheus else items

    @property
    def components(self) -> dict[str, Component]:
        found: dict[str, Component] = {c.name: c for c in self.infra}
        return found | dict(self.services)

    async def start_infra(self) -> dict[str, float]:
        """Start Kafka, Elasticsearch, Triton (and Prometheus) concurrently; seconds each took."""

        async def timed(c: ScriptComponent) -> tuple[str, float]:
            t0 = time.monotonic()
            await c.start()
            return c.name, time.monotonic() - t0

        return dict(await asyncio.gather(*(timed(c) for c in self.infra)))

    async def start_services(self, timeout_s: float = 240.0) -> dict[str, float]:
        for svc in self.services.values():
            await svc.start()
        waits = await asyncio.gather(*(s.wait_ready(timeout_s) for s in self.services.values()))
        return dict(zip(self.services, waits, strict=True))

    async def stop(self, *, services_only: bool = False) -> None:
        await asyncio.gather(*(s.stop() for s in self.services.values()))
        if not services_only:
            await asyncio.gather(*(c.stop() for c in reversed(self.infra)))

    def log_files(self) -> list[Path]:
        files: list[Path] = []
        for c in self.components.values():
            files.extend(c.log_files())
        return files

    def pids(self) -> dict[str, int]:
        return {name: pid for name, c in self.components.items() if (pid := c.pid()) is not None}
