"""Integration tests for the local Apache Kafka deployment in deploy/kafka/.

They drive the real scripts (start.sh, status.sh, stop.sh) against a second
broker on free ports and a temporary run dir, so a broker already running on
9092 is neither touched nor needed. What is checked is what the platform
relies on: idempotent, compressed produce; transactions whose aborted records
stay invisible to read_committed consumers; committed data surviving both a
clean restart and a SIGKILL; and the JMX exporter serving kafka_* metrics.

With CI=true a missing prerequisite (Java, Maven, the scripts) fails the run
instead of skipping it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.ci import missing

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"
# First run may download ~50 MB of jars; later starts take seconds.
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90
METRICS_MESSAGES = 10


@dataclass(frozen=True)
class Broker:
    """A broker started by deploy/kafka/start.sh with its own ports and run dir."""

    bootstrap: str
    metrics_url: str
    run_dir: Path
    env: dict[str, str]

    def script(self, name: str, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run deploy/kafka/<name> for this broker, capturing its output."""
        return subprocess.run(
            ["bash", str(DEPLOY_DIR / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> float:
        """Start (or confirm) the broker; return the wall time it took in seconds."""
        began = time.monotonic()
        result = self.script("start.sh")
        elapsed = time.monotonic() - began
        assert result.returncode == 0, f"start.sh failed ({result.returncode}):\n{result.stderr}\n{result.stdout}"
        logger.info("start.sh took %.1fs: %s", elapsed, result.stderr.strip().splitlines()[-1])
        return elapsed

    def stop(self, *args: str) -> None:
        """Stop the broker via stop.sh; args such as --kill are passed through."""
        result = self.script("stop.sh", *args, timeout=STOP_TIMEOUT_S)
        assert result.returncode == 0, f"stop.sh failed ({result.returncode}):\n{result.stderr}"


def _missing(reason: str) -> NoReturn:
    """Fail in CI (a missing piece there is a broken setup), skip elsewhere."""
    missing("a Kafka deployment prerequisite", reason)


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports that are free right now (bound, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Start a throwaway broker for this module and always stop it afterwards."""
    if not (DEPLOY_DIR / "start.sh").is_file():
        _missing(f"{DEPLOY_DIR}/start.sh not found")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _missing("java (JDK 17+) is not installed")
    cache = REPO_ROOT / ".cache" / "kafka"
    if shutil.which("mvn") is None and not any(cache.glob("*/.fetched")):
        _missing("mvn is not installed and no Kafka jars are cached in .cache/kafka")

    port, controller_port, metrics_port = _free_ports(3)
    run_dir = tmp_path_factory.mktemp("kafka-run")
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_JMX_EXPORTER": "1",
        "KAFKA_JMX_EXPORTER_PORT": str(metrics_port),
        "KAFKA_RUN_DIR": str(run_dir),
        "KAFKA_PYTHON": sys.executable,
        "KAFKA_START_TIMEOUT": "120",
    }
    handle = Broker(
        bootstrap=f"127.0.0.1:{port}",
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        run_dir=run_dir,
        env=env,
    )
    try:
        handle.start()
        yield handle
    finally:
        handle.script("stop.sh", timeout=STOP_TIMEOUT_S)


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name=name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    """Tell whether the consumer is still short of `end` on any partition."""
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return True
    return False


async def _read_to_end(bootstrap: str, topic: str, isolation_level: str, partition_count: int = 1) -> list[bytes]:
    """Read `topic` from the start up to the end offset the isolation level sees.

    For read_committed the end offset is the last stable offset, so this stops
    exactly where the committed data ends instead of waiting for a timeout.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level=isolation_level,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end = await consumer.end_offsets(partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while await _behind(consumer, end):
            assert time.monotonic() < deadline, f"timed out reading {topic} to {end}"
            batches = await consumer.getmany(timeout_ms=500)
            for tp in partitions:
                values.extend(record.value for record in batches.get(tp, []) if record.value is not None)
        return values
    finally:
        await consumer.stop()


async def _write_transactions(bootstrap: str, topic: str, committed: list[bytes], aborted: list[bytes]) -> None:
    """Commit the first half of `committed`, abort `aborted`, commit the rest."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"test-kafka-deploy-{topic}",
        enable_idempotence=True,
        acks="all",
        compression_type="lz4",
    )
    await producer.start()
    try:
        half = len(committed) // 2
        async with producer.transaction():
            for value in committed[:half]:
                await producer.send(topic, value)
        await producer.begin_transaction()
        for value in aborted:
            await producer.send(topic, value)
        await producer.abort_transaction()
        async with producer.transaction():
            for value in committed[half:]:
                await producer.send(topic, value)
    finally:
        await producer.stop()


def test_start_is_idempotent_and_status_reports(broker: Broker) -> None:
    """A second start.sh must not launch another JVM; status.sh says it answers."""
    pid_before = (broker.run_dir / "kafka.pid").read_text().strip()
    again = broker.script("start.sh")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert (broker.run_dir / "kafka.pid").read_text().strip() == pid_before

    status = broker.script("status.sh", timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "answering" in status.stdout


def test_idempotent_lz4_producer_round_trip(broker: Broker) -> None:
    """Idempotent acks=all lz4 records come back intact, in order per key."""
    topic = "deploy-roundtrip"
    sent = [(f"key-{i % 7}".encode(), f"value-{i}".encode()) for i in range(200)]

    async def scenario() -> list[tuple[bytes, bytes]]:
        await _create_topic(broker.bootstrap, topic, partitions=3)
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap,
            enable_idempotence=True,
            acks="all",
            compression_type="lz4",
        )
        await producer.start()
        try:
            for key, value in sent:
                await producer.send(topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id="test-kafka-deploy-roundtrip",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        received: list[tuple[bytes, bytes]] = []
        try:
            deadline = time.monotonic() + 60
            while len(received) < len(sent) and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    received.extend((r.key, r.value) for r in records if r.key is not None and r.value is not None)
            await consumer.commit()
        finally:
            await consumer.stop()
        return received

    received = asyncio.run(scenario())
    assert sorted(received) == sorted(sent)
    for key in {k for k, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key], f"order broken for {key!r}"


def test_aborted_transaction_invisible_to_read_committed(broker: Broker) -> None:
    """read_committed sees only committed records; the aborted ones were written."""
    topic = "deploy-transactions"
    committed = [f"committed-{i}".encode() for i in range(10)]
    aborted = [f"aborted-{i}".encode() for i in range(5)]

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        await _create_topic(broker.bootstrap, topic, partitions=1)
        await _write_transactions(broker.bootstrap, topic, committed, aborted)
        return (
            await _read_to_end(broker.bootstrap, topic, "read_committed"),
            await _read_to_end(broker.bootstrap, topic, "read_uncommitted"),
        )

    read_committed, read_uncommitted = asyncio.run(scenario())
    assert read_committed == committed
    assert sorted(read_uncommitted) == sorted(committed + aborted)


def test_jmx_exporter_serves_kafka_metrics(broker: Broker) -> None:
    """The java agent serves broker, controller and replica metrics."""

    async def produce() -> None:
        await _create_topic(broker.bootstrap, "deploy-metrics", partitions=1)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(METRICS_MESSAGES):
                await producer.send_and_wait("deploy-metrics", f"m-{i}".encode())
        finally:
            await producer.stop()

    asyncio.run(produce())
    url = broker.metrics_url  # http://127.0.0.1:<port>/metrics, built by the fixture
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == HTTPStatus.OK
        body = response.read().decode()

    samples: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("kafka_") and "{" not in line:
            name, _, value = line.partition(" ")
            samples[name] = float(value)
    messages_in = samples.get("kafka_server_brokertopicmetrics_messagesin_total", 0)
    assert messages_in >= METRICS_MESSAGES
    assert samples.get("kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert samples.get("kafka_server_replicamanager_underreplicatedpartitions") == 0
    end_offset = 'kafka_log_log_logendoffset{partition="0",topic="deploy-metrics"}'
    assert f"{end_offset} {float(METRICS_MESSAGES)}" in body
    assert "kafka_network_request_total_time_ms{" in body
    assert "jvm_memory_used_bytes" in body


def test_committed_data_survives_restart_and_kill(broker: Broker) -> None:
    """Committed records survive stop.sh + start.sh, and a SIGKILL + start.sh."""
    topic = "deploy-durable"
    committed = [f"durable-{i}".encode() for i in range(20)]
    aborted = [f"lost-{i}".encode() for i in range(5)]

    async def write() -> None:
        await _create_topic(broker.bootstrap, topic, partitions=1)
        await _write_transactions(broker.bootstrap, topic, committed, aborted)

    asyncio.run(write())
    assert asyncio.run(_read_to_end(broker.bootstrap, topic, "read_committed")) == committed

    broker.stop()
    status = broker.script("status.sh", timeout=60)
    assert status.returncode == 1, status.stdout
    assert not (broker.run_dir / "kafka.pid").exists()
    clean_restart_s = broker.start()
    assert asyncio.run(_read_to_end(broker.bootstrap, topic, "read_committed")) == committed

    broker.stop("--kill")
    crash_restart_s = broker.start()
    assert asyncio.run(_read_to_end(broker.bootstrap, topic, "read_committed")) == committed
    logger.info(
        "restart after clean stop %.1fs, after SIGKILL %.1fs",
        clean_restart_s,
        crash_restart_s,
    )
