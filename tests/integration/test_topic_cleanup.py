"""Tests leave no topics behind: the fixtures' registry and ``textpulse topics clean`` on the real Kafka.

Every topic here is under a prefix unique to the test, so the deletions checked never reach
topics of other tests or people sharing the broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import pytest
from textpulse.cli import app
from textpulse.contracts.topics import TopicSpec
from textpulse.kafka.admin import create_topics, delete_topics, list_topics
from textpulse.settings import KafkaSettings
from typer.testing import CliRunner

from tests.conftest import TEST_TOPICS, TopicRegistry, make_topics, port_open


async def _gone(settings: KafkaSettings, names: set[str], timeout_s: float = 20.0) -> set[str]:
    """The names still listed after ``timeout_s`` (a deleted topic leaves the metadata a moment later)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = names & set(await list_topics(settings, "t."))
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.2)


def _spec(name: str) -> TopicSpec:
    return TopicSpec(name, 1, key="k", description="test")


def test_registry_accepts_only_unique_test_prefixes() -> None:
    registry = TopicRegistry()
    for bad in ("", "t.", "t..", "text.", "t.abc", "bench.x."):
        with pytest.raises(ValueError, match="must look like"):
            registry.track(bad)
    assert registry.track("t.abc-123.") == "t.abc-123."
    assert registry.track_names({"text.raw": "t.x-1.text.raw", "dlq.ingest": "t.x-1.dlq.ingest"}) == "t.x-1."
    with pytest.raises(ValueError, match="one prefix"):
        registry.track_names({"text.raw": "t.x-1.text.raw", "dlq.ingest": "t.x-2.dlq.ingest"})
    assert registry.prefixes == {"t.abc-123.", "t.x-1."}


async def test_cleanup_on_an_unreachable_broker_logs_and_returns(caplog: pytest.LogCaptureFixture) -> None:
    """A broker that is gone must neither fail nor hang the session."""
    port = next(p for p in range(39092, 39192) if not port_open(p))
    registry = TopicRegistry()
    registry.track("t.nobroker-1.")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.topics"):
        deleted = await registry.cleanup(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=5)
    assert deleted == []
    assert time.monotonic() - started < 15
    assert any("cleanup on 127.0.0.1" in r.getMessage() for r in caplog.records)


@pytest.mark.kafka
async def test_fixture_topics_are_deleted_by_cleanup(
    kafka_settings: KafkaSettings, topic_names: Callable[[], dict[str, str]]
) -> None:
    """The topics ``topic_names`` + ``make_topics`` create, and extras under their prefix, go; others stay."""
    names = topic_names()
    prefix = names["text.raw"].removesuffix("text.raw")
    assert prefix in TEST_TOPICS.prefixes  # recorded when the names were made
    await make_topics(kafka_settings, names)
    extra = f"{prefix}support.queue.extra"  # as route tests add queue topics under the test's prefix
    bystander = f"t.cleanup-bystander-{uuid.uuid4().hex[:8]}.x"  # not recorded: must survive
    await create_topics(kafka_settings, [_spec(extra), _spec(bystander)])
    try:
        ours = {*names.values(), extra}
        assert ours | {bystander} <= set(await list_topics(kafka_settings, "t."))

        deleted = await TEST_TOPICS.cleanup(kafka_settings, [prefix])

        assert set(deleted) == ours
        assert await _gone(kafka_settings, ours) == set()
        assert bystander in await list_topics(kafka_settings, bystander)
        # A second pass (the session-end one) finds nothing left and does not complain.
        assert await TEST_TOPICS.cleanup(kafka_settings, [prefix]) == []
    finally:
        await delete_topics(kafka_settings, [bystander])


@pytest.mark.kafka
def test_topics_clean_cli(kafka_settings: KafkaSettings) -> None:
    """``textpulse topics clean``: the default prefix is ``t.``, a dry run deletes nothing, a prefix bounds it."""
    tag = uuid.uuid4().hex[:8]
    prefix = TEST_TOPICS.track(f"t.cli-clean-{tag}.")  # a failed run is still cleaned at session end
    doomed = {f"{prefix}a", f"{prefix}b.c"}
    keep = TEST_TOPICS.track(f"t.cli-keep-{tag}.") + "x"
    asyncio.run(create_topics(kafka_settings, [_spec(n) for n in (*doomed, keep)]))
    bootstrap = ["--bootstrap", kafka_settings.bootstrap_servers]
    runner = CliRunner()

    dry = runner.invoke(app, ["topics", "clean", *bootstrap, "--dry-run"])  # default prefix t.
    assert dry.exit_code == 0, dry.output
    assert doomed | {keep} <= set(dry.stdout.split())
    assert "dry run" in dry.output

    narrow_dry = runner.invoke(app, ["topics", "clean", "--prefix", prefix, *bootstrap, "--dry-run"])
    assert narrow_dry.exit_code == 0, narrow_dry.output
    assert set(narrow_dry.stdout.split()) == doomed
    assert doomed | {keep} <= set(asyncio.run(list_topics(kafka_settings, "t.")))

    real = runner.invoke(app, ["topics", "clean", "--prefix", prefix, *bootstrap])
    assert real.exit_code == 0, real.output
    assert set(real.stdout.split()) == doomed
    assert f"deleted 2 of 2 topic(s) starting with {prefix!r}" in real.output
    assert asyncio.run(_gone(kafka_settings, doomed)) == set()
    assert keep in asyncio.run(list_topics(kafka_settings, keep))
    asyncio.run(delete_topics(kafka_settings, [keep]))


@pytest.mark.parametrize("prefix", ["", "  ", "t", "text.", "dlq."])
def test_topics_clean_refuses_a_prefix_that_reaches_declared_topics(prefix: str) -> None:
    """Refused before any broker is contacted (the bootstrap here answers nothing)."""
    result = CliRunner().invoke(
        app, ["topics", "clean", "--prefix", prefix, "--bootstrap", "127.0.0.1:1", "--wait-s", "1"]
    )
    assert result.exit_code == 2, result.output
    assert "refusing prefix" in result.output
