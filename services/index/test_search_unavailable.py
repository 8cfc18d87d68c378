"""A search in the window where a just-created index's shard starts waits for it instead of failing."""

from __future__ import annotations

from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from fastapi import HTTPException

from . import api


def _error(status: int) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.01, NodeConfig("http", "127.0.0.1", 9200))
    return ApiError("search_phase_execution_exception", meta, {"error": {"type": "all shards failed"}})


class FakeES:
    """Answers ``failures`` times with ``status``, then with hits."""

    def __init__(self, failures: int, status: int = 503) -> None:
        self.failures, self.status, self.calls = failures, status, 0

    async def search(self, **_kw: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise _error(self.status)
        return type("Resp", (), {"body": {"hits": {"hits": []}}})()


async def test_a_starting_shard_is_waited_for() -> None:
    es = FakeES(failures=3)
    assert await api._search(es, "tp-events", {}) == {"hits": {"hits": []}}  # type: ignore[arg-type]
    assert es.calls == 4


async def test_a_lasting_outage_answers_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "SHARD_START_WAIT_S", 0.2)
    es = FakeES(failures=10**6)
    with pytest.raises(HTTPException) as err:
        await api._search(es, "tp-events", {})  # type: ignore[arg-type]
    assert err.value.status_code == 503
    assert err.value.headers == {"Retry-After": "5"}
    assert es.calls > 1


async def test_other_errors_are_not_retried() -> None:
    es = FakeES(failures=1, status=500)
    with pytest.raises(HTTPException):
        await api._search(es, "tp-events", {})  # type: ignore[arg-type]
    assert es.calls == 1
