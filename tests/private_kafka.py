"""An Apache Kafka of a test's own: deploy/kafka/start.sh and stop.sh on free ports with a run dir of its own.

For tests that kill and restart the broker, so the shared one on 9092 is never disturbed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.ci import missing
from tests.support.servers import free_ports

REPO = Path(__file__).resolve().parents[1]


class PrivateKafka:
    """deploy/kafka/start.sh and stop.sh on free ports with a run dir of the test's own."""

    def __init__(self, run_dir: Path) -> None:
        self.port, controller = free_ports(2)
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(controller),
            "KAFKA_RUN_DIR": str(run_dir),
            "KAFKA_JMX_EXPORTER": "0",
            "KAFKA_HEAP_OPTS": "-Xms256m -Xmx768m",
        }

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO / "deploy" / "kafka" / script), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def start(self) -> None:
        proc = self._run("start.sh")
        if proc.returncode != 0:
            missing("Apache Kafka (private broker)", f"deploy/kafka/start.sh failed: {proc.stderr[-2000:]}")

    def start_in_background(self) -> subprocess.Popen[str]:
        """start.sh without waiting: for watching what the broker answers while it comes up."""
        return subprocess.Popen(
            ["bash", str(REPO / "deploy" / "kafka" / "start.sh")],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def kill(self) -> None:
        self._run("stop.sh", "--kill")

    def stop(self) -> None:
        self._run("stop.sh")
