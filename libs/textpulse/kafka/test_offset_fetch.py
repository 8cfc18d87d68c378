"""An OffsetFetch answer with a group-level error is an error, not "nothing committed"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiokafka.errors as kafka_errors
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.protocol.commit import OffsetFetchResponse_v1, OffsetFetchResponse_v3
from aiokafka.protocol.group import HeartbeatResponse_v1

from . import offset_fetch

TP = TopicPartition("t", 0)
LOADING = OffsetFetchResponse_v3(throttle_time_ms=0, topics=[], error_code=14)  # COORDINATOR_LOAD_IN_PROGRESS
MOVED = OffsetFetchResponse_v3(throttle_time_ms=0, topics=[], error_code=16)  # NOT_COORDINATOR
COMMITTED = OffsetFetchResponse_v3(throttle_time_ms=0, topics=[("t", [(0, 42, "", 0)])], error_code=0)


class Client:
    """Answers each request with the next scripted response."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = responses
        self.sent = 0

    async def send(self, node_id: int, request: Any, group: Any = None) -> Any:
        self.sent += 1
        return self.responses.pop(0)


class Coordinator:
    """The parts of aiokafka's GroupCoordinator its offset fetch reads, with its real methods bound."""

    def __init__(self, responses: list[Any]) -> None:
        self.group_id = "g"
        self.coordinator_id: int | None = 1
        self._client = Client(responses)
        self._retry_backoff_ms = 1
        self.dead = 0

    def coordinator_dead(self) -> None:
        self.dead += 1
        self.coordinator_id = None

    async def ensure_coordinator_known(self) -> None:
        self.coordinator_id = 1

    def __getattr__(self, name: str) -> Any:
        # _send_req, _do_fetch_commit_offsets, fetch_committed_offsets: whatever GroupCoordinator has now.
        return getattr(GroupCoordinator, name).__get__(self)


@pytest.fixture
def aiokafka_alone() -> Iterator[None]:
    offset_fetch.uninstall()
    try:
        yield
    finally:
        offset_fetch.install()


def test_installed_on_import() -> None:
    assert getattr(GroupCoordinator._send_req, "textpulse_offset_fetch_fix", False)


async def test_aiokafka_alone_reads_a_group_error_as_nothing_committed(aiokafka_alone: None) -> None:
    # The library behaviour the wrapper exists for; when this fails, aiokafka reads the error itself.
    assert await Coordinator([LOADING]).fetch_committed_offsets([TP]) == {}


async def test_a_loading_coordinator_is_asked_again_until_it_answers() -> None:
    coordinator = Coordinator([LOADING, LOADING, COMMITTED])
    offsets = await coordinator.fetch_committed_offsets([TP])
    assert offsets[TP].offset == 42
    assert coordinator._client.sent == 3


async def test_a_moved_coordinator_is_looked_up_again() -> None:
    coordinator = Coordinator([MOVED, COMMITTED])
    offsets = await coordinator.fetch_committed_offsets([TP])
    assert offsets[TP].offset == 42
    assert coordinator.dead == 1


async def test_a_refused_group_raises() -> None:
    denied = OffsetFetchResponse_v3(throttle_time_ms=0, topics=[], error_code=30)  # GROUP_AUTHORIZATION_FAILED
    with pytest.raises(kafka_errors.GroupAuthorizationFailedError):
        await Coordinator([denied]).fetch_committed_offsets([TP])


def test_only_offset_fetch_answers_are_read() -> None:
    assert offset_fetch.group_error(LOADING) is kafka_errors.GroupLoadInProgressError
    assert offset_fetch.group_error(COMMITTED) is None
    # v1 has no top-level error (partition errors only): aiokafka's own handling applies.
    assert offset_fetch.group_error(OffsetFetchResponse_v1(topics=[("t", [(0, -1, "", 14)])])) is None
    # Other requests' top-level errors are their callers' business.
    assert offset_fetch.group_error(HeartbeatResponse_v1(throttle_time_ms=0, error_code=27)) is None
