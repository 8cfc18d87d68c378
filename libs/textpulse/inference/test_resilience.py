"""Unit tests: circuit breaker, backoff until available, bisection of rejected inputs, config checks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from .backend import ModelInfo
from .breaker import CircuitBreaker, State
from .errors import BackendUnavailable, InputRejected, ModelMismatch
from .resilience import isolate_rejects, until_available
from .triton import check_model_config


def test_breaker_opens_half_opens_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=2, reset_s=5, clock=lambda: now[0])
    states = []
    breaker.failure()
    states.append(breaker.state)
    breaker.failure()
    states.append(breaker.state)
    assert states == [State.CLOSED, State.OPEN]
    with pytest.raises(BackendUnavailable, match="circuit open"):
        breaker.before("m")
    now[0] = 5.0
    assert breaker.state is State.HALF_OPEN
    breaker.before("m")
    breaker.failure()  # one failure while half-open re-opens
    states.append(breaker.state)
    now[0] = 10.0
    breaker.success()
    states.append(breaker.state)
    assert states[2:] == [State.OPEN, State.CLOSED]


async def test_until_available_retries_then_succeeds() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise BackendUnavailable("down")
        return "ok"

    retries: list[float] = []
    result = await until_available(flaky, initial_s=0.001, on_retry=lambda _e, w: retries.append(w))
    assert result == "ok"
    assert len(retries) == 2


async def test_until_available_doubles_the_wait_up_to_the_cap() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise BackendUnavailable("down")
        return "ok"

    waits: list[float] = []
    await until_available(flaky, initial_s=0.001, max_backoff_s=0.004, on_retry=lambda _e, w: waits.append(w))
    assert waits == pytest.approx([0.001, 0.002, 0.004, 0.004])


async def test_until_available_gives_up() -> None:
    async def down() -> None:
        raise BackendUnavailable("down")

    with pytest.raises(BackendUnavailable):
        await until_available(down, max_wait_s=0.05, initial_s=0.01)


async def test_isolate_rejects_bisects() -> None:
    calls: list[int] = []

    async def run(items: Sequence[str]) -> list[str]:
        calls.append(len(items))
        if any(i.startswith("bad") for i in items):
            raise InputRejected("no")
        return [i.upper() for i in items]

    items = [f"x{i}" for i in range(16)]
    items[5] = "bad5"
    items[11] = "bad11"
    results, rejected = await isolate_rejects(run, items)
    assert [i for i, _ in rejected] == [5, 11]
    assert results[0] == "X0"
    assert results[5] is None
    assert sum(r is not None for r in results) == 14
    assert len(calls) < 16


def _codec(kind: str, labels: int, extra: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> Any:
    info = ModelInfo("m", "3", kind, tuple(map(str, range(labels))), task="t", extra_heads=extra)  # type: ignore[arg-type]
    return SimpleNamespace(info=info)


CONFIG: dict[str, Any] = {
    "max_batch_size": 64,
    "input": [
        {"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]},
        {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": ["-1"]},
    ],
    "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["3"]}],
}


def test_config_check_accepts_matching_model() -> None:
    assert check_model_config("sentiment", CONFIG, _codec("sequence", 3)) == 64
    token = {**CONFIG, "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["-1", "7"]}]}
    assert check_model_config("ner", token, _codec("token", 7)) == 64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"input": CONFIG["input"][:1]}, "missing input 'attention_mask'"),
        ({"input": [{**CONFIG["input"][0], "data_type": "TYPE_INT32"}, CONFIG["input"][1]]}, "TYPE_INT32"),
        ({"output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": ["4"]}]}, "3 labels"),
        ({"output": [{"name": "probs", "data_type": "TYPE_FP32", "dims": ["3"]}]}, "missing output"),
    ],
)
def test_config_check_rejects_mismatch(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelMismatch, match=message):
        check_model_config("sentiment", {**CONFIG, **change}, _codec("sequence", 3))


def test_config_check_covers_every_head_of_a_multi_head_model() -> None:
    codec = _codec("sequence", 3, (("topic", ("a", "b")),))
    multi = {**CONFIG, "output": [*CONFIG["output"], {"name": "logits_topic", "data_type": "TYPE_FP32", "dims": ["2"]}]}
    assert check_model_config("finance", multi, codec) == 64
    with pytest.raises(ModelMismatch, match="missing output 'logits_topic' of head 'topic'"):
        check_model_config("finance", CONFIG, codec)
    wrong = {**CONFIG, "output": [*CONFIG["output"], {"name": "logits_topic", "data_type": "TYPE_FP32", "dims": ["5"]}]}
    with pytest.raises(ModelMismatch, match="head 'topic' with 2 labels"):
        check_model_config("finance", wrong, codec)


def test_resolve_version_errors(tmp_path: Path) -> None:
    from .codec import resolve_version

    with pytest.raises(ModelMismatch, match="not found"):
        resolve_version(tmp_path, "sentiment")
    (tmp_path / "sentiment" / "2").mkdir(parents=True)
    (tmp_path / "sentiment" / "2" / "config.json").write_text(json.dumps({}))
    (tmp_path / "sentiment" / "10").mkdir()
    (tmp_path / "sentiment" / "10" / "config.json").write_text(json.dumps({}))
    assert resolve_version(tmp_path, "sentiment").name == "10"
    with pytest.raises(ModelMismatch, match="version 3"):
        resolve_version(tmp_path, "sentiment", "3")
