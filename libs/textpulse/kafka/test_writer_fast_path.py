"""The writer's fallback to the slow path is loud when FastStream's producer internals move."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from textpulse.kafka import writer
from textpulse.kafka.broker import make_broker
from textpulse.kafka.writer import FastPathUnavailable, check_fast_path, faststream_producer
from textpulse.settings import KafkaSettings


class _MovedState:
    """A connected producer state whose aiokafka producer lives under another name (an upgrade moved it)."""

    def __init__(self) -> None:
        self.renamed_producer = object()

    def __bool__(self) -> bool:
        return True


@pytest.fixture
def moved() -> Iterator[Any]:
    broker = make_broker(KafkaSettings(), service="writer")
    broker.config.producer._producer = _MovedState()  # type: ignore[attr-defined] # what a connected broker holds, moved
    writer._warned_slow_path = False
    yield broker
    writer._warned_slow_path = False


def test_a_moved_producer_fails_start_up(moved: Any) -> None:
    with pytest.raises(FastPathUnavailable, match=r"not at broker\.config\.producer\._producer\.producer"):
        check_fast_path(moved)


def test_a_moved_producer_warns_once_and_takes_the_slow_path(moved: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="textpulse.kafka.writer"):
        assert faststream_producer(moved) is None
        assert faststream_producer(moved) is None
    warnings = [r for r in caplog.records if "slow path" in r.getMessage()]
    assert len(warnings) == 1


def test_a_broker_not_yet_connected_is_not_a_moved_one(caplog: pytest.LogCaptureFixture) -> None:
    broker = make_broker(KafkaSettings(), service="writer")
    with caplog.at_level(logging.WARNING, logger="textpulse.kafka.writer"):
        assert faststream_producer(broker) is None
        check_fast_path(broker)
    assert not caplog.records
