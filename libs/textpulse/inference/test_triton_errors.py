"""The Triton client's error policy against a scripted fake server: retry, reject, circuit breaker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from .breaker import CircuitBreaker, State
from .errors import BackendUnavailable, InputRejected
from .triton import TritonBackend


class FakeClient:
    """Answers ``infer`` from a script of exceptions (then succeeds)."""

    def __init__(self, errors: list[str], *, model_ready: bool = True) -> None:
        self.errors = errors
        self.model_ready = model_ready
        self.infer_calls = 0

    async def infer(self, *_: Any, **__: Any) -> Any:
        self.infer_calls += 1
        if self.errors:
            status = self.errors.pop(0)
            raise InferenceServerException(msg=f"scripted {status}", status=status)
        return SimpleNamespace(as_numpy=lambda _name: np.zeros((1, 3), dtype=np.float32))

    async def is_model_ready(self, *_: Any, **__: Any) -> bool:
        return self.model_ready


def backend(
    client: FakeClient,
    *,
    retries: int = 3,
    breaker: CircuitBreaker | None = None,
    errors: list[tuple[str, str]] | None = None,
) -> TritonBackend:
    b = TritonBackend(
        "fake:1",
        model_repo=None,  # type: ignore[arg-type]
        retries=retries,
        backoff_s=0.001,
        backoff_max_s=0.002,
        breaker=breaker,
        on_error=None if errors is None else lambda model, kind: errors.append((model, kind)),
    )
    b._client = client
    b._codecs["m"] = SimpleNamespace(info=SimpleNamespace(version="1"))  # type: ignore[assignment]
    return b


IDS = np.ones((1, 4), dtype=np.int64)


async def test_unavailable_is_retried_then_succeeds() -> None:
    client = FakeClient(["StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"])
    out = await backend(client)._logits("m", IDS, IDS)
    assert out.shape == (1, 3)
    assert client.infer_calls == 3


async def test_unavailable_gives_up_after_retries() -> None:
    client = FakeClient(["StatusCode.UNAVAILABLE"] * 5)
    with pytest.raises(BackendUnavailable):
        await backend(client)._logits("m", IDS, IDS)
    assert client.infer_calls == 3


async def test_invalid_argument_rejects_at_once() -> None:
    client = FakeClient(["StatusCode.INVALID_ARGUMENT"])
    with pytest.raises(InputRejected):
        await backend(client)._logits("m", IDS, IDS)
    assert client.infer_calls == 1


async def test_internal_error_on_ready_model_rejects_only_when_repeated() -> None:
    flaky = FakeClient(["StatusCode.INTERNAL"])
    assert (await backend(flaky)._logits("m", IDS, IDS)).shape == (1, 3)
    stubborn = FakeClient(["StatusCode.INTERNAL"] * 3)
    with pytest.raises(InputRejected):
        await backend(stubborn)._logits("m", IDS, IDS)
    assert stubborn.infer_calls == 3
    not_ready = FakeClient(["StatusCode.INTERNAL"] * 3, model_ready=False)
    with pytest.raises(BackendUnavailable):
        await backend(not_ready)._logits("m", IDS, IDS)


async def test_circuit_opens_and_fails_fast() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_s=60)
    client = FakeClient(["StatusCode.UNAVAILABLE"] * 10)
    b = backend(client, retries=2, breaker=breaker)
    with pytest.raises(BackendUnavailable):
        await b._logits("m", IDS, IDS)
    assert breaker.state is State.OPEN
    calls = client.infer_calls
    with pytest.raises(BackendUnavailable, match="circuit open"):
        await b._logits("m", IDS, IDS)
    assert client.infer_calls == calls
    assert not await b.ready()


async def test_every_failed_attempt_is_counted_by_kind() -> None:
    errors: list[tuple[str, str]] = []
    client = FakeClient(["StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"])
    await backend(client, errors=errors)._logits("m", IDS, IDS)
    assert errors == [("m", "unavailable"), ("m", "timeout")]
    errors.clear()
    with pytest.raises(InputRejected):
        await backend(FakeClient(["StatusCode.INVALID_ARGUMENT"]), errors=errors)._logits("m", IDS, IDS)
    assert errors == [("m", "rejected")]
    errors.clear()
    with pytest.raises(InputRejected):
        await backend(FakeClient(["StatusCode.INTERNAL"] * 3), errors=errors)._logits("m", IDS, IDS)
    assert errors == [("m", "internal")] * 3


async def test_circuit_open_refusals_are_counted() -> None:
    errors: list[tuple[str, str]] = []
    breaker = CircuitBreaker(failure_threshold=1, reset_s=60)
    b = backend(FakeClient(["StatusCode.UNAVAILABLE"] * 5), retries=1, breaker=breaker, errors=errors)
    with pytest.raises(BackendUnavailable):
        await b._logits("m", IDS, IDS)
    with pytest.raises(BackendUnavailable, match="circuit open"):
        await b._logits("m", IDS, IDS)
    assert errors == [("m", "unavailable"), ("m", "circuit_open")]


def test_metrics_error_callback_labels_the_backend() -> None:
    from prometheus_client import CollectorRegistry

    from .metrics import InferenceMetrics

    metrics = InferenceMetrics("classify", enabled=True)
    metrics.set_backend("triton")
    metrics.error("sentiment", "timeout")
    metrics.error("sentiment", "timeout")
    registry: CollectorRegistry = metrics.registry
    value = registry.get_sample_value(
        "textpulse_inference_errors_total",
        {"service": "classify", "model": "sentiment", "backend": "triton", "kind": "timeout"},
    )
    assert value == 2
