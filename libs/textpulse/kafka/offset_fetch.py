"""Honour the group-level error of an OffsetFetch answer, which aiokafka 0.14 drops.

From OffsetFetch v2 on, Kafka puts a group or coordinator error
(``COORDINATOR_LOAD_IN_PROGRESS``, ``COORDINATOR_NOT_AVAILABLE``, ``NOT_COORDINATOR``,
``GROUP_AUTHORIZATION_FAILED``) in a top-level ``error_code`` and sends *no* partitions
(Kafka's ``OffsetFetchResponse``: "for version 2 and later use the top-level error
code"). aiokafka 0.14 asks for v3 but reads only the partition list, so such an answer
reads as "this group never committed anything":

- ``AIOKafkaConsumer.committed()`` returns ``None`` — the exactly-once runner's check
  "does this batch start at the committed offset?" (``transactions.ExactlyOnce``) then
  passes for a batch that was already committed, and its outputs are written twice;
- after a (re)assignment the consumer resets the partition by ``auto_offset_reset``
  (earliest here) instead of resuming from its committed offset.

A broker answers so while it loads ``__consumer_offsets``, i.e. right after it restarts
— what ``tests/integration/test_exactly_once_broker_restart.py`` does, and what made one
of its CI runs see two committed copies of some events.

The fix wraps the group coordinator's request path: an OffsetFetch answer with a
group-level error raises that error, which aiokafka's own callers already handle for
the per-partition form (a retriable error is retried after the backoff; a lost
coordinator is looked up again). Hand-written because aiokafka 0.14.0 is the newest
release (``../.library/env/packages/pypi.tsv``) and has no setting for it;
``test_offset_fetch.py`` fails once an aiokafka release reads the error itself, so the
wrapper can then be removed.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka.errors as kafka_errors
from aiokafka.consumer.group_coordinator import GroupCoordinator

OFFSET_FETCH_API_KEY = 9
# Errors after which the coordinator must be looked up again (as aiokafka does for the partition form).
_COORDINATOR_MOVED = (kafka_errors.NotCoordinatorForGroupError, kafka_errors.GroupCoordinatorNotAvailableError)

log = logging.getLogger(__name__)

_ORIGINAL_SEND_REQ = GroupCoordinator._send_req  # the one request path of the group coordinator


def group_error(response: Any) -> type[kafka_errors.KafkaError] | None:
    """The group-level error of an OffsetFetch answer (v2+), or None (none, or another request)."""
    if getattr(response, "API_KEY", None) != OFFSET_FETCH_API_KEY:
        return None
    code = int(getattr(response, "error_code", 0) or 0)  # v0/v1 have no top-level error_code
    return None if code == 0 else kafka_errors.for_code(code)


async def _send_req(self: GroupCoordinator, request: Any) -> Any:
    response = await _ORIGINAL_SEND_REQ(self, request)
    error = group_error(response)
    if error is None:
        return response
    log.info("offset fetch for group %s answered %s: not read as 'nothing committed'", self.group_id, error.__name__)
    if error in _COORDINATOR_MOVED:
        self.coordinator_dead()
    if error is kafka_errors.GroupAuthorizationFailedError:
        raise error(self.group_id)
    raise error


_send_req.textpulse_offset_fetch_fix = True  # type: ignore[attr-defined]


def install() -> None:
    """Wrap ``GroupCoordinator._send_req`` once per process (idempotent)."""
    if not getattr(GroupCoordinator._send_req, "textpulse_offset_fetch_fix", False):
        GroupCoordinator._send_req = _send_req  # type: ignore[method-assign]


def uninstall() -> None:
    """aiokafka's own path again (tests prove the library's behaviour with it)."""
    GroupCoordinator._send_req = _ORIGINAL_SEND_REQ  # type: ignore[method-assign]
