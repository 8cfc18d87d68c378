"""Triton backend: async gRPC (``tritonclient.grpc.aio``) to a tritonserver.

Start-up checks, so a wrong deployment fails at once with a clear message
instead of mislabelling events: the server is live and ready; each model is
ready; its inputs are ``input_ids`` / ``attention_mask`` (INT64), its output
``logits`` (FP32) has the shape of its kind (``[L]`` sequence, ``[-1, L]``
token) with ``L`` = the number of labels in the served version's own
``id2label.json`` (a multi-head model: each ``logits_<head>`` likewise,
with that head's labels from the model's metadata), and every head a service
asks for exists; ``max_batch_size`` > 0. Tokenizer and labels are read from
the model repository the server serves (the same files, same version).

At run time every request has an explicit deadline; transient failures
(unavailable, deadline exceeded, model not loaded) are retried with
exponential backoff and jitter and feed a circuit breaker; an input the
server rejects (invalid argument, or an internal error while the model is
ready) raises :class:`InputRejected` so the caller dead-letters it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_fixed,
    wait_random,
)

from .backend import HeadSpec, ModelInfo, check_heads
from .breaker import CircuitBreaker
from .codec import DEFAULT_MAX_BATCH_TOKENS, Codec, TruncationObserver, plan_chunks, resolve_version
from .errors import BackendUnavailable, InferenceError, InputRejected, ModelMismatch
from .types import ErrorObserver, Observer, Prediction, Span

log = logging.getLogger(__name__)

T = TypeVar("T")

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "logits"
_REJECT = {"StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE"}


def check_model_config(name: str, config: dict[str, Any], codec: Codec) -> int:
    """Compare a Triton model config (JSON form) with what the service expects; return max_batch_size.

    Pure so it can be unit-tested with hand-written configs.
    """
    problems: list[str] = []
    max_batch = int(config.get("max_batch_size", 0) or 0)
    if max_batch <= 0:
        problems.append("max_batch_size must be > 0 (the client sends [batch, seq] tensors)")
    inputs = {i.get("name"): i for i in config.get("input", [])}
    for wanted in INPUTS:
        spec = inputs.get(wanted)
        if spec is None:
            problems.append(f"missing input {wanted!r} (has {sorted(inputs)})")
        elif spec.get("data_type") != "TYPE_INT64":
            problems.append(f"input {wanted!r} is {spec.get('data_type')}, expected TYPE_INT64")
    outputs = {o.get("name"): o for o in config.get("output", [])}
    # every head of the served version: ``logits`` and, multi-head, ``logits_<head>`` each
    heads = list(codec.info.heads().values()) if codec.info.kind == "sequence" else [codec.info.head(None)]
    for head in heads:
        out = outputs.get(head.output)
        n_labels = len(head.labels)
        if out is None:
            problems.append(f"missing output {head.output!r} of head {head.name!r} (has {sorted(outputs)})")
            continue
        if out.get("data_type") != "TYPE_FP32":
            problems.append(f"output {head.output!r} is {out.get('data_type')}, expected TYPE_FP32")
        dims = [int(d) for d in out.get("dims", [])]
        expected = [n_labels] if codec.info.kind == "sequence" else [-1, n_labels]
        if dims != expected:
            problems.append(
                f"output {head.output!r} dims {dims} do not match a {codec.info.kind} head {head.name!r} with "
                f"{n_labels} labels (model files of version {codec.info.version}): expected {expected}"
            )
    if problems:
        msg = f"Triton model {name!r} does not match the service: " + "; ".join(problems)
        raise ModelMismatch(msg)
    return max_batch


#: Most time between two reconnection attempts of the gRPC channel. gRPC's default backs off to
#: 120 s: a worker started while Triton was down (a restart during an outage) then noticed Triton's
#: return up to two minutes late (the chaos run's classify resumed 38 s after Triton). One attempt a
#: second costs nothing while Triton is away and resumes within a second of its return.
MAX_RECONNECT_BACKOFF_MS = 1_000


def channel_args() -> list[tuple[str, Any]]:
    """tritonclient's own channel options (message sizes, keep-alive) plus a short reconnect back-off."""
    import tritonclient.grpc as grpc_base

    keepalive = grpc_base.KeepAliveOptions()
    size = grpc_base.MAX_GRPC_MESSAGE_SIZE
    return [
        # Passing channel_args replaces tritonclient's defaults: repeat them.
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS),
    ]


class TritonBackend:
    """Async gRPC client over the models of one tritonserver."""

    name = "triton"

    def __init__(
        self,
        url: str,
        model_repo: Path,
        *,
        timeout_s: float = 10.0,
        startup_timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        backoff_max_s: float = 2.0,
        breaker: CircuitBreaker | None = None,
        max_inflight: int = 8,
        batch_size: int = 64,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        observe: Observer | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self.url = url
        self.model_repo = model_repo
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.breaker = breaker or CircuitBreaker()
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        #: set by InferenceMetrics.watch: counts texts truncated at the model's max_length
        self.on_truncate: TruncationObserver | None = None
        self.observe = observe
        self.on_error = on_error
        self._inflight = asyncio.Semaphore(max_inflight)
        self._codecs: dict[str, Codec] = {}
        self._client: Any = None

    # -- lifecycle ---------------------------------------------------------------

    def _client_or_raise(self) -> Any:
        if self._client is None:
            msg = "TritonBackend.start() was not called"
            raise BackendUnavailable(msg)
        return self._client

    async def start(self, models: Sequence[str], heads: Sequence[HeadSpec] = ()) -> None:
        """Connect, wait for the server, check every model and wanted head; raise on the first mismatch."""
        import tritonclient.grpc.aio as grpcclient

        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args())
        await self._wait_server()
        for name in models:
            await self._check_model(name)
        check_heads({name: codec.info for name, codec in self._codecs.items()}, heads)

    async def _wait_server(self) -> None:
        client = self._client_or_raise()

        async def probe() -> None:
            live = await client.is_server_live(client_timeout=self.timeout_s)
            if not (live and await client.is_server_ready(client_timeout=self.timeout_s)):
                raise BackendUnavailable("server live but not ready" if live else "server not live")

        try:
            # Any failure while waiting means "not yet" (connection refused, deadline, not ready).
            async for attempt in AsyncRetrying(
                stop=stop_after_delay(self.startup_timeout_s),
                wait=wait_fixed(0.5),
                retry=retry_if_exception_type(Exception),
            ):
                with attempt:
                    await probe()
        except RetryError as exc:
            last = exc.last_attempt.exception()
            msg = f"Triton at {self.url} is not live and ready after {self.startup_timeout_s:.0f}s: {last}"
            raise BackendUnavailable(msg) from last

    async def _check_model(self, name: str) -> None:
        client = self._client_or_raise()
        if not await client.is_model_ready(name, client_timeout=self.timeout_s):
            index = await client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)
            states = {m.get("name"): m.get("state", "UNAVAILABLE") for m in index.get("models", [])}
            msg = f"model {name!r} is not ready on Triton at {self.url} (repository: {states or 'empty'})"
            raise ModelMismatch(msg)
        metadata = await client.get_model_metadata(name, as_json=True, client_timeout=self.timeout_s)
        versions = sorted(int(v) for v in metadata.get("versions", []) if str(v).isdigit())
        if not versions:
            msg = f"Triton reports no version of model {name!r}"
            raise ModelMismatch(msg)
        version = str(versions[-1])
        codec = await asyncio.to_thread(Codec, resolve_version(self.model_repo, name, version), name)
        config = (await client.get_model_config(name, version, as_json=True, client_timeout=self.timeout_s))["config"]
        max_batch = check_model_config(name, config, codec)
        codec.info = replace(codec.info, max_batch_size=max_batch)
        self._codecs[name] = codec
        log.info("triton model checked", extra={"model": name, "version": version, "max_batch_size": max_batch})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ready(self) -> bool:
        if self._client is None or self.breaker.state == "open":
            return False
        try:
            return bool(await self._client.is_server_ready(client_timeout=2.0))
        except Exception:  # noqa: BLE001 - a failed probe means not ready
            return False

    def info(self, model: str) -> ModelInfo:
        return self._codec(model).info

    def _codec(self, model: str) -> Codec:
        try:
            return self._codecs[model]
        except KeyError:
            msg = f"model {model!r} was not started"
            raise ModelMismatch(msg) from None

    # -- inference ---------------------------------------------------------------

    async def _error(self, model: str, exc: Exception) -> InferenceError:
        """Map a client error to retry-later or reject-this-input."""
        status = _status(exc)
        text = f"triton {model!r}: {status or type(exc).__name__}: {exc}"
        if status in _REJECT:
            return InputRejected(text)
        if status == "StatusCode.INTERNAL":
            # A healthy server with a ready model that fails this request: the input is the problem.
            try:
                ready = await self._client_or_raise().is_model_ready(model, client_timeout=2.0)
            except Exception:  # noqa: BLE001
                ready = False
            if ready:
                return InputRejected(text)
        return BackendUnavailable(text)

    async def _with_retries(self, model: str, call: Callable[[], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.retries),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s) + wait_random(0, self.backoff_s),
            retry=retry_if_exception_type(BackendUnavailable),
            reraise=True,
        ):
            with attempt:
                try:
                    self.breaker.before(f"triton model {model!r}")
                except BackendUnavailable:
                    self._count_error(model, "circuit_open")
                    raise
                try:
                    result = await call()
                except InferenceError:
                    raise
                except Exception as exc:
                    err = await self._error(model, exc)
                    self._count_error(model, error_kind(exc, err))
                    last_attempt = attempt.retry_state.attempt_number >= self.retries
                    if isinstance(err, InputRejected) and _status(exc) not in _REJECT and not last_attempt:
                        # An internal error on a ready model may still be a server hiccup (e.g. a
                        # stub restarting): only a repeated failure dead-letters the input.
                        err = BackendUnavailable(str(err))
                    if isinstance(err, BackendUnavailable):
                        self.breaker.failure()
                    else:
                        self.breaker.success()
                    raise err from exc
                self.breaker.success()
                return result
        raise AssertionError  # pragma: no cover - AsyncRetrying re-raises

    def _count_error(self, model: str, kind: str) -> None:
        if self.on_error is not None:
            self.on_error(model, kind)

    async def _logits(self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return (await self._outputs(model, input_ids, attention_mask, (OUTPUT,)))[OUTPUT]

    async def _outputs(
        self, model: str, input_ids: np.ndarray, attention_mask: np.ndarray, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """One request that asks for exactly the outputs ``names`` (the heads a caller needs)."""
        import tritonclient.grpc.aio as grpcclient

        client = self._client_or_raise()
        version = self._codec(model).info.version

        async def call() -> dict[str, np.ndarray]:
            inputs = []
            for name, array in (("input_ids", input_ids), ("attention_mask", attention_mask)):
                tensor = grpcclient.InferInput(name, list(array.shape), "INT64")
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            async with self._inflight:
                started = time.perf_counter()
                result = await client.infer(
                    model,
                    inputs,
                    model_version=version,
                    outputs=[grpcclient.InferRequestedOutput(name) for name in names],
                    client_timeout=self.timeout_s,
                )
                if self.observe is not None:
                    self.observe(model, time.perf_counter() - started, int(array.shape[0]))
            return {name: np.asarray(result.as_numpy(name), dtype=np.float32) for name in names}

        return await self._with_retries(model, call)

    async def logits(self, model: str, texts: Sequence[str]) -> tuple[np.ndarray, Any]:
        """Raw logits of one padded batch (for backend-agreement checks)."""
        batch = self._codec(model).encode(texts)
        return await self._logits(model, batch.input_ids, batch.attention_mask), batch

    async def _infer(
        self, model: str, texts: Sequence[str], kind: str, heads: Sequence[str] | None = None
    ) -> list[Any]:
        """Decoded results per text; with ``heads``, ``{head: Prediction}`` per text from one request per chunk."""
        codec = self._codec(model)
        if codec.info.kind != kind:
            msg = f"model {model!r} is a {codec.info.kind} model"
            raise ModelMismatch(msg)
        size = max(1, min(self.batch_size, codec.info.max_batch_size))
        plan = plan_chunks(codec, texts, max_rows=size, max_tokens=self.max_batch_tokens, on_truncate=self.on_truncate)

        async def one(chunk: list[int]) -> list[Any]:
            batch = codec.batch(plan.tokenized, chunk)
            if heads is not None:
                specs = [codec.info.head(h) for h in heads]
                outputs = await self._outputs(model, batch.input_ids, batch.attention_mask, [h.output for h in specs])
                per_head = {h.name: codec.decode_sequence(outputs[h.output], h.name) for h in specs}
                return [dict(zip(per_head, row, strict=True)) for row in zip(*per_head.values(), strict=True)]
            logits = await self._logits(model, batch.input_ids, batch.attention_mask)
            if kind == "token":
                return codec.decode_tokens([texts[i] for i in chunk], batch, logits)
            return codec.decode_sequence(logits)

        results: list[Any] = [None] * len(texts)
        for chunk, decoded in zip(plan.chunks, await asyncio.gather(*(one(c) for c in plan.chunks)), strict=True):
            for index, value in zip(chunk, decoded, strict=True):
                results[index] = value
        return results

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        return await self._infer(model, texts, "sequence") if texts else []

    async def classify_heads(
        self, model: str, texts: Sequence[str], heads: Sequence[str]
    ) -> dict[str, list[Prediction]]:
        """One request per chunk for exactly the outputs of ``heads``; the predictions of each head."""
        info = self._codec(model).info
        wanted = list(dict.fromkeys(info.head(h).name for h in heads))
        if not texts or not wanted:
            return {h: [] for h in wanted}
        rows: list[dict[str, Prediction]] = await self._infer(model, texts, "sequence", wanted)
        return {h: [row[h] for row in rows] for h in wanted}

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        return await self._infer(model, texts, "token") if texts else []


def _status(exc: Exception) -> str:
    """gRPC status of a tritonclient error (``StatusCode.UNAVAILABLE`` …), or empty."""
    status = getattr(exc, "status", None)
    return str(status() or "") if callable(status) else ""


def error_kind(exc: Exception, err: InferenceError) -> str:
    """``kind`` label of ``textpulse_inference_errors_total`` for one failed request.

    timeout (deadline exceeded), unavailable (server down or unreachable), rejected
    (the input was refused), else internal (a server-side failure on this request).
    """
    status = _status(exc)
    if status == "StatusCode.DEADLINE_EXCEEDED" or isinstance(exc, TimeoutError):
        return "timeout"
    if status in _REJECT:
        return "rejected"
    if status in {"StatusCode.UNAVAILABLE", ""} and isinstance(err, BackendUnavailable):
        return "unavailable"
    return "internal"
