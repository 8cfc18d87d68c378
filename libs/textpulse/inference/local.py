"""In-process backend: the exported weights run in this process (torch, or ONNX Runtime).

The embedded default when no Triton is configured (``make demo``). Inference
runs on one dedicated worker thread so the event loop keeps serving Kafka
heartbeats and health probes while a batch is computed; torch releases the
GIL inside its kernels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from textpulse.ml.predictor import Predictor

from .backend import ModelInfo
from .codec import Codec, length_sorted_chunks, resolve_version
from .errors import InputRejected, ModelMismatch
from .types import ErrorObserver, Observer, Prediction, Span

log = logging.getLogger(__name__)

T = TypeVar("T")


class LocalBackend:
    """Runs models from a Triton model repository in-process, batched, sorted by length."""

    name = "local"

    def __init__(
        self,
        model_repo: Path,
        *,
        runtime: Literal["torch", "torch-int8", "onnx"] = "torch",
        threads: int | None = None,
        batch_size: int = 64,
        versions: dict[str, str] | None = None,
        observe: Observer | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self.model_repo = model_repo
        self.runtime = runtime
        self.threads = threads
        self.batch_size = batch_size
        self.versions = versions or {}
        self.observe = observe
        self.on_error = on_error
        self._codecs: dict[str, Codec] = {}
        self._predictors: dict[str, Predictor] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    async def start(self, models: Sequence[str]) -> None:
        """Load every model (tokenizer + weights); ModelMismatch when one is missing."""
        for name in models:
            if name in self._codecs:
                continue
            directory = resolve_version(self.model_repo, name, self.versions.get(name))
            try:
                codec, predictor = await self._run(partial(self._load, directory, name))
            except (OSError, ValueError, KeyError) as exc:
                msg = f"cannot load model {name!r} from {directory}: {exc}"
                raise ModelMismatch(msg) from exc
            if list(codec.info.labels) != predictor.labels:
                msg = f"{directory}: id2label.json and config.json disagree on the labels of {name!r}"
                raise ModelMismatch(msg)
            self._codecs[name], self._predictors[name] = codec, predictor
            log.info(
                "model loaded in-process",
                extra={"model": name, "version": codec.info.version, "runtime": self.runtime},
            )

    def _load(self, directory: Path, name: str) -> tuple[Codec, Predictor]:
        predictor = Predictor(directory, backend=self.runtime, threads=self.threads, batch_size=self.batch_size)
        return Codec(directory, name), predictor

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def ready(self) -> bool:
        return bool(self._codecs)

    def info(self, model: str) -> ModelInfo:
        return self._codec(model).info

    def _codec(self, model: str) -> Codec:
        try:
            return self._codecs[model]
        except KeyError:
            msg = f"model {model!r} was not started"
            raise ModelMismatch(msg) from None

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _infer(self, model: str, texts: Sequence[str]) -> list[Any]:
        codec, predictor = self._codec(model), self._predictors[model]
        results: list[Any] = [None] * len(texts)
        for chunk in length_sorted_chunks(texts, self.batch_size):
            part = [texts[i] for i in chunk]
            started = time.perf_counter()
            try:
                batch = codec.encode(part)
                logits = predictor.logits(batch.input_ids, batch.attention_mask)
            except (ValueError, TypeError, RuntimeError, IndexError) as exc:
                if self.on_error is not None:
                    self.on_error(model, "rejected")
                msg = f"model {model!r} rejected the input: {exc}"
                raise InputRejected(msg) from exc
            if self.observe is not None:
                self.observe(model, time.perf_counter() - started, len(part))
            decoded: list[Any]
            if codec.info.kind == "token":
                decoded = codec.decode_tokens(part, batch, logits)
            else:
                decoded = codec.decode_sequence(logits)
            for index, value in zip(chunk, decoded, strict=True):
                results[index] = value
        return results

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        if self._codec(model).info.kind != "sequence":
            msg = f"model {model!r} is a token model; use tag()"
            raise ModelMismatch(msg)
        if not texts:
            return []
        return await self._run(lambda: self._infer(model, texts))

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        if self._codec(model).info.kind != "token":
            msg = f"model {model!r} is a sequence model; use classify()"
            raise ModelMismatch(msg)
        if not texts:
            return []
        return await self._run(lambda: self._infer(model, texts))

    def logits(self, model: str, texts: Sequence[str]) -> Any:
        """Raw logits of one padded batch (for backend-agreement checks)."""
        batch = self._codec(model).encode(texts)
        return self._predictors[model].logits(batch.input_ids, batch.attention_mask), batch
