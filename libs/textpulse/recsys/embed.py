"""Text embedders for items: in-process (ONNX Runtime or torch) or Triton (gRPC), same tokenizer, same vectors.

An exported embedding model (``textpulse.recsys.train.export_embedding``) is a version folder in
the Triton model repository whose output is ``embedding`` (FP32 ``[dim]``,
mean-pooled over the attention mask and L2-normalised). The folder holds the
weights (safetensors, what Triton's python-backend ``model.py`` and the torch
encoder load) and ``model.onnx`` (:mod:`textpulse.recsys.export`: the same
encoder with pooling and normalisation inside the graph). In-process, the
ONNX graph is served by default (:class:`OnnxEncoder`: ONNX Runtime and the
Rust tokenizer, no torch or transformers, what the recommend image installs);
the torch encoder (:class:`TorchEncoder`) serves a version without
``model.onnx`` or ``TEXTPULSE_LOCAL_RUNTIME=torch`` where torch is installed.
Without an export the in-process embedder can run the pretrained base encoder
(version ``base``, torch) so the service and tests work before any fine-tuning.

The classification client in :mod:`textpulse.inference` knows only ``logits``
outputs, so embeddings get this small client of their own; it reuses the
inference settings (``TEXTPULSE_TRITON_URL``, ``TEXTPULSE_MODEL_REPO``), errors
and circuit breaker.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from textpulse.contracts import ModelRef
from textpulse.inference.breaker import CircuitBreaker
from textpulse.inference.codec import length_sorted_chunks, resolve_version
from textpulse.inference.errors import BackendUnavailable, InputRejected, ModelMismatch
from textpulse.inference.settings import InferenceSettings
from textpulse.inference.tokenizer import load_rust_tokenizer
from textpulse.ml.settings import default_base_model, offline_hub

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTPUT = "embedding"
DEFAULT_MAX_LENGTH = 64
#: The pooled, normalised encoder in a version folder (written by textpulse.recsys.export at export time).
ONNX_FILE = "model.onnx"
#: What the torch encoder imports: not in the recommend image (deploy/docker/requirements-recommend.lock).
TORCH_MODULES = ("torch", "transformers")
Runtime = Literal["onnx", "torch"]


class Embedder(Protocol):
    """Async text → unit vectors."""

    model: ModelRef
    dim: int

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def ready(self) -> bool: ...
    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class Encoder(Protocol):
    """Synchronous text → unit vectors over one model folder (what :class:`LocalEmbedder` runs on its thread)."""

    runtime: Runtime
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class RustBatcher:
    """Tokenises a batch as ``tokenizer(texts, padding=True, truncation=True, max_length=...)`` does, Rust only.

    transformers' fast tokenizer call is the Rust tokenizer with truncation (``longest_first`` at
    ``max_length``, its side) and padding to the longest row (pad token and side of
    ``tokenizer_config.json``) enabled, then ``encode_batch`` with the special tokens; this sets the
    same on the tokenizer :func:`load_rust_tokenizer` reads, so no transformers (nor torch) is imported.
    ``tests/ml/test_recommend_onnx.py`` checks the ids against transformers' call.
    """

    def __init__(self, directory: Path, max_length: int) -> None:
        try:
            rust = load_rust_tokenizer(directory)
        except FileNotFoundError as exc:
            raise ModelMismatch(str(exc)) from exc
        if rust.pad_token_id is None:  # batches are padded: say so at start-up, not on the first item
            msg = f"{directory}: the tokenizer has no padding token (tokenizer_config.json pad_token)"
            raise ModelMismatch(msg)
        tokenizer = rust.tokenizer  # ours: load_rust_tokenizer builds a new one per call
        tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first", direction=rust.truncation_side)
        tokenizer.enable_padding(direction=rust.padding_side, pad_id=rust.pad_token_id, pad_token=rust.pad_token)
        # without offsets where the installed tokenizers has it: nothing reads them
        self._encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), INT64 ``[len(texts), longest]``."""
        rows = self._encode(list(texts), add_special_tokens=True)
        longest = max((len(row.ids) for row in rows), default=0)
        ids = np.array([row.ids for row in rows], dtype=np.int64).reshape(len(rows), longest)
        mask = np.array([row.attention_mask for row in rows], dtype=np.int64).reshape(len(rows), longest)
        return ids, mask


class OnnxEncoder:
    """Synchronous encoder over an exported version's ``model.onnx`` (pooling and normalisation in the graph).

    ONNX Runtime (the CPU session options of the text models: ``threads`` intra-op threads, one
    inter-op thread, no spinning) and :class:`RustBatcher`: neither torch nor transformers is imported.
    """

    runtime: Runtime = "onnx"

    def __init__(self, directory: Path | str, *, max_length: int | None = None, threads: int | None = None) -> None:
        from textpulse.ml.onnx_runtime import create_session

        self.directory = Path(directory)
        config = json.loads((self.directory / "config.json").read_text("utf-8"))
        meta = dict(config.get("textpulse") or {})
        self.max_length = int(max_length or meta.get("max_length") or DEFAULT_MAX_LENGTH)
        self.tokenize = RustBatcher(self.directory, self.max_length)
        self.session = create_session(self.directory / ONNX_FILE, threads)
        outputs = {o.name: o for o in self.session.get_outputs()}
        if OUTPUT not in outputs:
            msg = f"{self.directory / ONNX_FILE} has no {OUTPUT!r} output (has {sorted(outputs)})"
            raise ModelMismatch(msg)
        self.dim = int(config["hidden_size"])

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors of ``texts`` (length-sorted batches; input order kept)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for chunk in length_sorted_chunks(texts, batch_size):
            ids, mask = self.tokenize([texts[i] for i in chunk])
            (vectors,) = self.session.run([OUTPUT], {"input_ids": ids, "attention_mask": mask})
            out[chunk] = vectors
        return out


def missing_torch() -> list[str]:
    """The torch encoder's modules this install lacks (the recommend image lacks both)."""
    return [name for name in TORCH_MODULES if importlib.util.find_spec(name) is None]


def load_encoder(directory: Path, *, runtime: Runtime = "onnx", threads: int | None = None) -> Encoder:
    """The encoder of a model folder: ONNX Runtime over ``model.onnx`` when present (``runtime="onnx"``, the
    default), else torch over the weights; ModelMismatch (one line) when neither can run here.
    """
    has_graph = (directory / ONNX_FILE).is_file()
    if runtime == "onnx" and has_graph:
        return OnnxEncoder(directory, threads=threads)
    absent = missing_torch()
    if absent:
        why = (
            f"local runtime {runtime!r} (TEXTPULSE_LOCAL_RUNTIME)"
            if runtime != "onnx"
            else f"version folder {directory}, which has no {ONNX_FILE} (re-export it: make recommend-model),"
        )
        msg = (
            f"recommend encoder: {why} needs {' and '.join(absent)}, which this install lacks (the "
            "recommend image serves ONNX only): set TEXTPULSE_LOCAL_RUNTIME=onnx with an ONNX export, or install "
            "textpulse[ml]"
        )
        raise ModelMismatch(msg)
    if runtime == "onnx":
        log.warning("no %s in %s: embedding with torch (~1 GB more RSS); re-export with ONNX", ONNX_FILE, directory)
    return TorchEncoder(directory, threads=threads)


def mean_pool(hidden: Any, mask: Any) -> Any:
    """Mean of the token vectors under the attention mask, then L2-normalised (torch tensors)."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


class TorchEncoder:
    """Synchronous encoder over a Hugging Face folder (an export's version folder or the base model)."""

    runtime: Runtime = "torch"

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
        with torch.inference_mode():
            for chunk in length_sorted_chunks(texts, batch_size):
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
    """Runs the encoder in this process on one worker thread (the event loop keeps serving).

    ``runtime`` ``onnx`` (the default) serves ``model.onnx`` when the folder has one, else torch
    (:func:`load_encoder`); ``torch`` always serves the weights with torch.
    """

    def __init__(
        self,
        directory: Path | str,
        model: ModelRef,
        *,
        batch_size: int = 64,
        threads: int | None = None,
        runtime: Runtime = "onnx",
    ):
        self.directory = Path(directory)
        self.model = model
        self.batch_size = batch_size
        self.threads = threads
        self.runtime = runtime
        self.dim = 0
        self._encoder: Encoder | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def start(self) -> None:
        try:
            self._encoder = await self._run(
                lambda: load_encoder(self.directory, runtime=self.runtime, threads=self.threads)
            )
        except (OSError, ValueError, KeyError) as exc:
            msg = f"cannot load the embedding model from {self.directory}: {exc}"
            raise ModelMismatch(msg) from exc
        self.dim = self._encoder.dim
        log.info(
            "embedding model loaded in-process",
            extra={"model": self.model.name, "version": self.model.version, "runtime": self._encoder.runtime},
        )

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
        self._tokenize: RustBatcher | None = None
        self.max_length = DEFAULT_MAX_LENGTH

    async def start(self) -> None:
        import tritonclient.grpc.aio as grpcclient

        self.max_length = int(_meta(self.version_dir).get("max_length") or DEFAULT_MAX_LENGTH)
        # The Rust tokenizer alone (the ids transformers' call gives): no transformers in the recommend image.
        self._tokenize = RustBatcher(self.version_dir, self.max_length)
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

        if self._tokenize is None:
            msg = "embedder not started"
            raise BackendUnavailable(msg)
        ids, mask = self._tokenize(texts)
        inputs = []
        for key, arr in (("input_ids", ids), ("attention_mask", mask)):
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
    """Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process; the base encoder when nothing is exported.

    In-process: ``TEXTPULSE_LOCAL_RUNTIME`` ``onnx`` (default) serves the version's ``model.onnx`` with
    ONNX Runtime, ``torch`` / ``torch-int8`` the weights with torch (fp32: the encoder has no int8 path).
    """
    runtime: Runtime = "onnx" if settings.local_runtime == "onnx" else "torch"
    try:
        version_dir = resolve_version(settings.model_repo, name)
    except ModelMismatch as exc:
        if settings.triton_url or not allow_base:
            raise
        absent = missing_torch()
        if absent:  # the base encoder has no ONNX graph with pooling: torch only
            msg = (
                f"{exc}; the pretrained base encoder (allow_base_model) needs {' and '.join(absent)}, which this "
                "install lacks: export the recommend model (make recommend-model) or install textpulse[ml]"
            )
            raise ModelMismatch(msg) from exc
        log.warning("no exported %r model in %s: using the pretrained base encoder", name, settings.model_repo)
        # torch: the base folder has the weights only (no graph with pooling)
        return LocalEmbedder(default_base_model(), ModelRef(name="all-MiniLM-L6-v2", version="base"), runtime="torch")
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
        runtime=runtime,
    )
