"""Free loopback ports and a tritonserver driven by deploy/triton, shared by the tests and the benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

TRITON_DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "triton"


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all sockets held until every port is chosen)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def pick_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it (127.0.0.1), else a free port."""
    with socket.socket() as probe:
        probe.settimeout(0.5)
        taken = probe.connect_ex(("127.0.0.1", preferred)) == 0
    return free_ports(1)[0] if taken else preferred


@dataclass
class TritonServer:
    """A tritonserver driven by ``deploy/triton/*.sh`` with its own ports, run directory and models."""

    env: dict[str, str]
    grpc_port: int

    @classmethod
    def on_free_ports(cls, model_repo: Path, models: Iterable[str], run_dir: Path, start_timeout_s: int = 300) -> Self:
        http, grpc, metrics = free_ports(3)
        env = {
            "TRITON_MODEL_REPO": str(model_repo),
            "TRITON_MODELS": ",".join(models),
            "TRITON_HTTP_PORT": str(http),
            "TRITON_GRPC_PORT": str(grpc),
            "TRITON_METRICS_PORT": str(metrics),
            "TRITON_RUN_DIR": str(run_dir),
            "TRITON_START_TIMEOUT": str(start_timeout_s),
        }
        return cls(env=env, grpc_port=grpc)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.env['TRITON_METRICS_PORT']}/metrics"

    @property
    def pid(self) -> int:
        """The server's pid (start.sh writes it into the run directory)."""
        return int((Path(self.env["TRITON_RUN_DIR"]) / "tritonserver.pid").read_text().strip())

    def run(self, script: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(TRITON_DEPLOY / script)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
