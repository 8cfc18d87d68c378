"""Elasticsearch nodes for tests, started by the project's own ``deploy/elasticsearch`` scripts.

One copy of what the index, observability and poison tests need: a node on free ports with its
own run dir (:func:`own_node`), and the ``shared_es_url`` session fixture in ``tests/conftest.py``
(the developer's node on 127.0.0.1:9200 when it runs, else one node for the whole session).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.ci import missing
from tests.support.servers import free_ports

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "elasticsearch"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EsNode:
    """A node started by deploy/elasticsearch/start.sh with its own ports and run dir."""

    url: str
    env: dict[str, str]

    def script(self, name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(DEPLOY / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> float:
        """Start (or confirm) the node; return the wall time it took in seconds."""
        began = time.monotonic()
        res = self.script("start.sh")
        elapsed = time.monotonic() - began
        assert res.returncode == 0, f"start.sh failed ({res.returncode}):\n{res.stderr[-3000:]}\n{res.stdout[-1000:]}"
        log.info("start.sh took %.1fs: %s", elapsed, res.stderr.strip().splitlines()[-1])
        return elapsed

    def stop(self, *args: str) -> None:
        """Stop the node via stop.sh; args such as --kill are passed through."""
        res = self.script("stop.sh", *args, timeout=120)
        assert res.returncode == 0, f"stop.sh failed ({res.returncode}):\n{res.stderr[-3000:]}"


def new_node(run_dir: Path, cluster_name: str, start_timeout_s: int = 240) -> EsNode:
    """A node description on two free loopback ports with its own run dir (not started)."""
    http_port, transport_port = free_ports(2)
    env = {
        **os.environ,
        "ES_HTTP_PORT": str(http_port),
        "ES_TRANSPORT_PORT": str(transport_port),
        "ES_RUN_DIR": str(run_dir),
        "ES_HEAP": "512m",
        "ES_CLUSTER_NAME": cluster_name,
        "ES_START_TIMEOUT": str(start_timeout_s),
    }
    return EsNode(f"http://127.0.0.1:{http_port}", env)


def check_prerequisites() -> None:
    """Fail (CI) or skip (locally) when the node cannot be started here."""
    if not (DEPLOY / "start.sh").is_file():
        missing("Elasticsearch", f"{DEPLOY}/start.sh not found")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        missing("Elasticsearch", "java (JDK 17+) is not installed")
    if shutil.which("mvn") is None and not any((REPO / ".cache" / "elasticsearch").glob("*/.fetched")):
        missing("Elasticsearch", "mvn is absent and no jars are cached (make es-fetch)")


@contextmanager
def own_node(run_dir: Path, cluster_name: str) -> Iterator[EsNode]:
    """A throwaway node (free ports, ``run_dir``), always stopped afterwards."""
    check_prerequisites()
    node = new_node(run_dir, cluster_name)
    try:
        node.start()
    except AssertionError as exc:
        node.script("stop.sh", timeout=120)
        missing("Elasticsearch", str(exc))
    try:
        yield node
    finally:
        node.script("stop.sh", timeout=120)
