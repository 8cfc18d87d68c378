"""Text embedders for items: in-process (torch) or Triton (gRPC), same tokenizer, same vectors.

An exported embedding model (``textpulse.recsys.export``) is a version folder in
the Triton model repository whose output is ``embedding`` (FP32 ``[dim]``,
mean-pooled over the attention mask and L2-normalised). The in-process
embedder runs the same weights with transformers; without an export it can run
the pretrained base encoder (version ``base``) so the service and tests work
before any fine-tuning.

The classification client in :mod:`textpulse.inference` knows only ``logits``
outputs, so embeddings get this small client of their own; it reuses the
inference settings (``TEXTPULSE_TRITON_URL``, ``TEXTPULSE_MODEL_REPO``), errors
and circuit breaker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from textpulse.contracts import ModelRef
from textpulse.inference.breaker import CircuitBreaker
from textpulse.inference.codec import resolve_version
from textpulse.inference.errors import BackendUnavailable, InputRejected, ModelMismatch
from textpulse.inference.settings import InferenceSettings
from textpulse.ml.settings import default_base_model, offline_hub

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTPUT = "embedding"
DEFAULT_MAX_LENGTH = 64


class Embedder(Protocol):
    """Async text → unit vectors."""

    model: ModelRef
    dim: int

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ready(self) -> bool: ...
    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Mean of the token vectors under the attention mask, then L2-normalised (torch tensors)."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


class TorchEncoder:
    """Synchronous encoder over a Hugging Face folder (an export's version folder or the base model)."""

    def __init__(self, directory: Path | str, *, max_length: int | None = None, threads: int | None = None) -> None:
        offline_hub()
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.directory = Path(directory)
        meta = _meta(self.directory)
        self.max_length = int(max_length or meta.get("max_length") or DEFAULT_MAX_LENGTH)
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model = AutoModel.from_pretrained(str(directory)).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors of ``texts`` (length-sorted batches; input order kept)."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                out[chunk] = mean_pool(hidden.last_hidden_state, batch["attention_mask"]).float().numpy()
        return out


def _meta(directory: Path) -> dict[str, Any]:
    config = directory / "config.json"
    if not config.is_file():
        return {}
    return dict(json.loads(config.read_text("utf-8")).get("textpulse") or {})


class LocalEmbedder:
    """Runs the encoder in this process on one worker thread (the event loop keeps serving)."""

    def __init__(self, directory: Path | str, model: ModelRef, *, batch_size: int = 64, threads: int | None = None):
        self.directory = Path(directory)
        self.model = model
        self.batch_size = batch_size
        self.threads = threads
        self.dim = 0
        self._encoder: TorchEncoder | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def start(self) -> None:
        try:
            self._encoder = await self._run(lambda: TorchEncoder(self.directory, threads=self.threads))
        except (OSError, ValueError) as exc:
            msg = f"cannot load the embedding model from {self.directory}: {exc}"
            raise ModelMismatch(msg) from exc
        self.dim = self._encoder.dim
        log.info("embedding model loaded in-process", extra={"model": self.model.name, "version": self.model.version})

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        return self._encoder is not None

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        encoder = self._encoder
        if encoder is None:
            msg = "embedder not started"
            raise BackendUnavailable(msg)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            return await self._run(lambda: encoder.encode(list(texts), self.batch_size))
        except (ValueError, TypeError, IndexError, RuntimeError) as exc:
            msg = f"embedding model rejected the input: {exc}"
            raise InputRejected(msg) from exc


class TritonEmbedder:
    """gRPC client of an exported embedding model on tritonserver (tokenises here, like the classifiers)."""

    def __init__(
        self,
        url: str,
        name: str,
        version_dir: Path,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        batch_size: int = 64,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.version_dir = version_dir
        self.model = ModelRef(name=name, version=version_dir.name)
        self.timeout_s = timeout_s
        self.retries = retries
        self.batch_size = batch_size
        self.breaker = breaker or CircuitBreaker()
        self.dim = 0
        self._client: Any = None
        self._tokenizer: Any = None
        self.max_length = DEFAULT_MAX_LENGTH

    async def start(self) -> None:
        offline_hub()
        import tritonclient.grpc.aio as grpcclient
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(self.version_dir))
        self.max_length = int(_meta(self.version_dir).get("max_length") or DEFAULT_MAX_LENGTH)
        self._client = grpcclient.InferenceServerClient(self.url)
        if not await self._client.is_model_ready(self.name, self.model.version):
            msg = f"Triton at {self.url} has no ready model {self.name!r} version {self.model.version}"
            raise ModelMismatch(msg)
        config = (await self._client.get_model_config(self.name, as_json=True))["config"]
        outputs = {o["name"]: o for o in config.get("output", [])}
        if OUTPUT not in outputs:
            msg = f"Triton model {self.name!r} has no {OUTPUT!r} output (has {sorted(outputs)})"
            raise ModelMismatch(msg)
        self.dim = int(outputs[OUTPUT]["dims"][-1])

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def ready(self) -> bool:
        try:
            return bool(self._client and await self._client.is_model_ready(self.name))
        except Exception:  # noqa: BLE001 - any failure of the probe means "not ready"
            return False

    async def _infer(self, texts: Sequence[str]) -> np.ndarray:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        inputs = []
        for key in ("input_ids", "attention_mask"):
            arr = batch[key].astype(np.int64)
            tensor = grpcclient.InferInput(key, list(arr.shape), "INT64")
            tensor.set_data_from_numpy(arr)
            inputs.append(tensor)
        self.breaker.before(f"triton:{self.name}")
        try:
            result = await self._client.infer(
                self.name,
                inputs,
                model_version=self.model.version,
                client_timeout=self.timeout_s,
                outputs=[grpcclient.InferRequestedOutput(OUTPUT)],
            )
        except InferenceServerException as exc:
            if "INVALID_ARG" in str(exc.status()):
                raise InputRejected(str(exc)) from exc
            self.breaker.failure()
            raise BackendUnavailable(str(exc)) from exc
        self.breaker.success()
        return np.asarray(result.as_numpy(OUTPUT), dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.retries),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(BackendUnavailable),
                reraise=True,
            ):
                with attempt:
                    started = time.perf_counter()
                    parts.append(await self._infer(chunk))
                    log.debug("triton embed", extra={"n": len(chunk), "s": time.perf_counter() - started})
        return np.concatenate(parts)


def make_embedder(settings: InferenceSettings, name: str, *, allow_base: bool = True) -> Embedder:
    """Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process; the base encoder when nothing is exported."""
    try:
        version_dir = resolve_version(settings.model_repo, name)
    except ModelMismatch:
        if settings.triton_url or not allow_base:
            raise
        log.warning("no exported %r model in %s: using the pretrained base encoder", name, settings.model_repo)
        return LocalEmbedder(default_base_model(), ModelRef(name="all-MiniLM-L6-v2", version="base"))
    if settings.triton_url:
        return TritonEmbedder(
            settings.triton_url,
            name,
            version_dir,
            timeout_s=settings.triton_timeout_s,
            retries=settings.triton_retries,
            batch_size=settings.inference_batch_size,
            breaker=CircuitBreaker(settings.triton_breaker_failures, settings.triton_breaker_reset_s),
        )
    return LocalEmbedder(
        version_dir,
        ModelRef(name=name, version=version_dir.name),
        batch_size=settings.inference_batch_size,
        threads=settings.local_threads,
    )
