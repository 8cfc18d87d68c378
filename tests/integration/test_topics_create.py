"""``create_topics`` / ``textpulse topics create`` with a replication factor and min ISR, on the real Kafka.

The local broker is a single node (default.replication.factor 1), so "the broker's
default" is 1 here and a replication factor of 2 must be refused by the broker with
its own error, quickly, not after waiting for leaders that never come. Every topic
is under a ``t.topics-create-<id>.`` prefix recorded for cleanup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from textpulse.cli import app
from textpulse.contracts.topics import TopicSpec
from textpulse.kafka import admin as admin_module
from textpulse.kafka.admin import (
    broker_default_replication,
    client_options,
    create_topics,
    delete_topics,
    list_topics,
)
from textpulse.settings import KafkaSettings
from typer.testing import CliRunner

from tests.conftest import TEST_TOPICS

pytestmark = pytest.mark.timeout(60)


def _spec(name: str, partitions: int = 2) -> TopicSpec:
    return TopicSpec(name, partitions, key="k", description="test")


def _prefix() -> str:
    return TEST_TOPICS.track(f"t.topics-create-{uuid.uuid4().hex[:8]}.")


async def _describe(settings: KafkaSettings, name: str) -> tuple[int, dict[str, Any]]:
    """(replicas of partition 0, {config: (value, source)}) of a topic, as the broker reports them."""
    admin = AIOKafkaAdminClient(**client_options(settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        [topic] = await admin.describe_topics([name])
        replicas = len(next(p for p in topic["partitions"] if p["partition"] == 0)["replicas"])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        entries = response.to_object()["resources"][0]["config_entries"]
        return replicas, {e["config_names"]: (e["config_value"], e["config_source"]) for e in entries}
    finally:
        await admin.close()


#: DescribeConfigs config_source of a value set on the topic itself (DYNAMIC_TOPIC_CONFIG).
TOPIC_SOURCE = 1


@pytest.mark.kafka
async def test_defaults_are_the_brokers(kafka_settings: KafkaSettings) -> None:
    admin = AIOKafkaAdminClient(**client_options(kafka_settings))  # type: ignore[arg-type]
    await admin.start()
    try:
        assert await broker_default_replication(admin) == 1  # deploy/kafka: one node, default.replication.factor=1
    finally:
        await admin.close()
    name = f"{_prefix()}defaults"
    try:
        assert await create_topics(kafka_settings, [_spec(name)]) == [name]
        replicas, configs = await _describe(kafka_settings, name)
        assert replicas == 1
        # Not set on the topic: the broker's min.insync.replicas applies.
        assert configs["min.insync.replicas"][1] != TOPIC_SOURCE
        assert configs["cleanup.policy"] == ("delete", TOPIC_SOURCE)
    finally:
        await delete_topics(kafka_settings, [name])


@pytest.mark.kafka
async def test_explicit_replication_and_min_isr(kafka_settings: KafkaSettings) -> None:
    name = f"{_prefix()}explicit"
    try:
        assert await create_topics(kafka_settings, [_spec(name)], replication_factor=1, min_insync_replicas=1) == [name]
        replicas, configs = await _describe(kafka_settings, name)
        assert replicas == 1
        assert configs["min.insync.replicas"] == ("1", TOPIC_SOURCE)
        # Idempotent: the existing topic is left as it is.
        assert await create_topics(kafka_settings, [_spec(name)], replication_factor=1, min_insync_replicas=1) == []
    finally:
        await delete_topics(kafka_settings, [name])


@pytest.mark.kafka
async def test_min_isr_above_the_brokers_default_replication_is_refused(kafka_settings: KafkaSettings) -> None:
    name = f"{_prefix()}min-isr-too-high"
    with pytest.raises(ValueError, match="above the broker's replication factor 1"):
        await create_topics(kafka_settings, [_spec(name)], min_insync_replicas=2)
    assert name not in await list_topics(kafka_settings, name)


@pytest.mark.kafka
async def test_more_replicas_than_brokers_fails_at_once(kafka_settings: KafkaSettings) -> None:
    name = f"{_prefix()}too-many"
    started = time.monotonic()
    with pytest.raises(KafkaError, match="InvalidReplicationFactorError"):
        await create_topics(kafka_settings, [_spec(name)], replication_factor=2)
    # The broker's answer, not the 30 s wait for leaders of a topic that was never made.
    assert time.monotonic() - started < 10


async def test_min_isr_above_replication_is_refused_before_the_broker() -> None:
    unreachable = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ValueError, match="above replication_factor"):
        await create_topics(unreachable, [_spec("t.never.x")], replication_factor=2, min_insync_replicas=3)
    with pytest.raises(ValueError, match="at least 1"):
        await create_topics(unreachable, [_spec("t.never.x")], replication_factor=0)


def test_cli_passes_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's flags reach create_topics (the real creation is tested above, on test-named topics)."""
    calls: list[dict[str, Any]] = []

    async def fake_wait(settings: KafkaSettings, timeout_s: float = 60.0) -> None:
        return None

    async def fake_create(settings: KafkaSettings, **kwargs: Any) -> list[str]:
        calls.append({"bootstrap": settings.bootstrap_servers, **kwargs})
        return ["text.in"]

    monkeypatch.setattr(admin_module, "wait_for_broker", fake_wait)
    monkeypatch.setattr(admin_module, "create_topics", fake_create)
    runner = CliRunner()
    args = ["topics", "create", "--bootstrap", "b:9092"]
    result = runner.invoke(app, [*args, "--replication-factor", "3", "--min-insync-replicas", "2"])
    assert result.exit_code == 0, result.output
    assert "created 1 topic(s): text.in" in result.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls == [
        {"bootstrap": "b:9092", "replication_factor": 3, "min_insync_replicas": 2},
        {"bootstrap": "b:9092", "replication_factor": None, "min_insync_replicas": None},
    ]
    refused = runner.invoke(app, [*args, "--replication-factor", "2", "--min-insync-replicas", "3"])
    assert refused.exit_code == 2
    assert "every acks=all write fails" in refused.output
    assert runner.invoke(app, [*args, "--replication-factor", "0"]).exit_code == 2
    assert len(calls) == 2


@pytest.mark.kafka
def test_cli_reports_a_refused_topic_without_a_traceback(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real broker: a replication factor it cannot meet ends the command with exit 1 and the reason."""
    name = f"{_prefix()}cli-refused"

    async def on_a_test_topic(settings: KafkaSettings, **kwargs: Any) -> list[str]:
        return await create_topics(settings, [_spec(name)], **kwargs)

    monkeypatch.setattr(admin_module, "create_topics", on_a_test_topic)
    result = CliRunner().invoke(
        app, ["topics", "create", "--bootstrap", kafka_settings.bootstrap_servers, "--replication-factor", "2"]
    )
    assert result.exit_code == 1, result.output
    assert "InvalidReplicationFactorError" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    asyncio.run(delete_topics(kafka_settings, [name]))
