"""Readiness probe for the local broker, used by start.sh and status.sh.

An open TCP port is not enough: a KRaft broker accepts connections before it
has registered with its controller and can serve metadata. The probe does a
client metadata round trip and succeeds only once the cluster reports a
broker. It polls inside one process (a Python start per attempt costs about
a second on a small, busy machine) and gives up early if the broker's
process dies.

Exit status: 0 ready, 1 not ready before the deadline, 3 the watched
process exited.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context

EXIT_READY = 0
EXIT_TIMEOUT = 1
EXIT_PROCESS_GONE = 3
ATTEMPT_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.3

logger = logging.getLogger("kafka_ready")


def _security(env_file: str | None) -> dict[str, Any]:
    """aiokafka security options from a ``TEXTPULSE_KAFKA_*`` env file (SASL_SSL mode of start.sh)."""
    if not env_file:
        return {}
    env: dict[str, str] = {}
    for line in Path(env_file).read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            env[key.strip().removeprefix("TEXTPULSE_KAFKA_")] = value.strip()
    opts: dict[str, Any] = {"security_protocol": env.get("SECURITY_PROTOCOL", "PLAINTEXT")}
    if opts["security_protocol"].startswith("SASL"):
        opts["sasl_mechanism"] = env["SASL_MECHANISM"]
        opts["sasl_plain_username"] = env["SASL_USERNAME"]
        opts["sasl_plain_password"] = env["SASL_PASSWORD"]
    if opts["security_protocol"].endswith("SSL"):
        opts["ssl_context"] = create_ssl_context(cafile=env.get("SSL_CAFILE") or None)
    return opts


async def _has_brokers(bootstrap: str, security: dict[str, Any]) -> bool:
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(ATTEMPT_TIMEOUT_S * 1000),
        **security,
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=ATTEMPT_TIMEOUT_S)
        return bool(client.cluster.brokers())
    finally:
        await client.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _wait(bootstrap: str, wait_s: float, pid: int | None, security: dict[str, Any]) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        if pid is not None and not _alive(pid):
            return EXIT_PROCESS_GONE
        try:
            if await _has_brokers(bootstrap, security):
                return EXIT_READY
            last_error = "metadata lists no brokers yet"
        except Exception as exc:  # noqa: BLE001 - every failure here means "not ready yet"
            last_error = repr(exc)
        if time.monotonic() >= deadline:
            logger.warning("not ready: %s", last_error)
            return EXIT_TIMEOUT
        await asyncio.sleep(POLL_INTERVAL_S)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, probe until ready or the deadline, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bootstrap", nargs="?", default="127.0.0.1:9092", help="host:port of the broker")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        help="keep trying for this many seconds (0: one attempt)",
    )
    parser.add_argument("--pid", type=int, default=None, help="stop waiting if this process exits")
    parser.add_argument(
        "--env-file",
        default=None,
        help="TEXTPULSE_KAFKA_* settings (security protocol, SASL, CA) to connect with",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[kafka_ready] %(message)s")
    # aiokafka logs every refused connection at ERROR while the broker boots.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_wait(args.bootstrap, args.wait, args.pid, _security(args.env_file)))
    return EXIT_TIMEOUT


if __name__ == "__main__":
    sys.exit(main())
