"""In-process backend: the exported model runs in this process (ONNX Runtime by default, or torch).

The embedded default when no Triton is configured (``make demo``). Inference
runs off the event loop so it keeps serving Kafka heartbeats and health probes
while a batch is computed; ONNX Runtime and torch release the GIL inside their
kernels.

Layout of the CPU work (``layout``): ``streams`` (the ONNX Runtime default)
runs up to ``threads`` chunks of a batch at once, each in a single-threaded
ONNX Runtime call, like the benchmark's fastest reference (one single-thread
process per core); a batch with fewer chunks than streams is cut into smaller
chunks so every stream has one. ``intra-op`` runs one chunk at a time over
``threads`` intra-op threads. Single-threaded calls need no per-operator
barrier, and a stream left without work by this service leaves its core to the
other processes on the host instead of holding a half-idle thread pool.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

from textpulse.ml.onnx_runtime import INT8_FILE, Precision, has_graph, measured_precision
from textpulse.ml.predictor import Predictor

from .backend import HeadSpec, ModelInfo, check_heads
from .codec import DEFAULT_MAX_BATCH_TOKENS, Codec, TruncationObserver, plan_chunks, resolve_version
from .errors import InputRejected, ModelMismatch
from .types import ErrorObserver, Observer, Prediction, Span

log = logging.getLogger(__name__)

T = TypeVar("T")

Layout = Literal["streams", "intra-op"]


#: What the torch runtime imports besides the ONNX path: not in the serving images (requirements-serve.lock).
TORCH_MODULES = ("torch", "transformers")


def require_torch(needed_by: str) -> None:
    """ModelMismatch (one line, at start-up) when ``needed_by`` needs torch and this install has none."""
    absent = [name for name in TORCH_MODULES if importlib.util.find_spec(name) is None]
    if absent:
        msg = (
            f"{needed_by} needs {' and '.join(absent)}, which this install lacks (the classify/ner images "
            "serve with ONNX Runtime only): set TEXTPULSE_LOCAL_RUNTIME=onnx or install textpulse[ml]"
        )
        raise ModelMismatch(msg)


class LocalBackend:
    """Runs models from a Triton model repository in-process, batched, sorted by length."""

    name = "local"

    def __init__(
        self,
        model_repo: Path,
        *,
        runtime: Literal["onnx", "torch", "torch-int8"] = "onnx",
        precision: Precision | None = None,
        threads: int | None = None,
        layout: Layout = "streams",
        batch_size: int = 64,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        versions: dict[str, str] | None = None,
        observe: Observer | None = None,
        on_error: ErrorObserver | None = None,
    ) -> None:
        self.model_repo = model_repo
        self.runtime = runtime
        self.precision = precision
        self.threads = threads
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        #: set by InferenceMetrics.watch: counts texts truncated at the model's max_length
        self.on_truncate: TruncationObserver | None = None
        self.versions = versions or {}
        self.observe = observe
        self.on_error = on_error
        self._codecs: dict[str, Codec] = {}
        self._predictors: dict[str, Predictor] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        if runtime != "onnx":
            require_torch(f"local runtime {runtime!r} (TEXTPULSE_LOCAL_RUNTIME)")
        # torch's intra-op pool is process-wide, so concurrent torch calls would share (and oversubscribe) it:
        # streams are an ONNX Runtime layout, where each session call can be told to use one thread.
        self.layout: Layout = layout if runtime == "onnx" else "intra-op"
        #: chunks computed at once: the cores granted (threads, else this process's CPUs) in streams, else 1
        self.streams = (threads or len(os.sched_getaffinity(0))) if self.layout == "streams" else 1
        self._stream_pool = (
            ThreadPoolExecutor(max_workers=self.streams, thread_name_prefix="inference-stream")
            if self.streams > 1
            else None
        )

    async def start(self, models: Sequence[str], heads: Sequence[HeadSpec] = ()) -> None:
        """Load every model (tokenizer + weights); ModelMismatch when one or a wanted head is missing."""
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
                extra={
                    "model": name,
                    "version": codec.info.version,
                    "runtime": predictor.runtime,
                    "precision": predictor.precision,
                },
            )
        check_heads({name: codec.info for name, codec in self._codecs.items()}, heads)

    def _load(self, directory: Path, name: str) -> tuple[Codec, Predictor]:
        runtime, precision = self.runtime, self.precision
        if runtime == "onnx" and not has_graph(directory):
            # exported with --no-onnx (e.g. the tiny test models): still serve, but say what it costs
            require_torch(f"model {name!r} in {directory}, which has no ONNX graph (re-export it with ONNX),")
            log.warning(
                "no ONNX graph in %s: serving %s with torch (~1 GB more RSS); re-export with ONNX", directory, name
            )
            runtime, precision = "torch", None if precision == "int8" else precision  # torch int8 costs >1 point
        if precision is None and runtime != "torch-int8":
            # the model's measured default (serving.json, make bench-int8 --record), else fp32
            precision = measured_precision(directory, runtime) or "fp32"
        if runtime == "onnx" and precision == "int8" and not (directory / INT8_FILE).is_file():
            log.warning(
                "no %s in %s: serving %s at fp32 (`textpulse runtime-graphs` adds it)",
                INT8_FILE,
                directory,
                name,
            )
            precision = "fp32"
        threads = 1 if runtime == "onnx" and self.layout == "streams" else self.threads
        predictor = Predictor(
            directory, backend=runtime, precision=precision, threads=threads, batch_size=self.batch_size
        )
        return Codec(directory, name), predictor

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._stream_pool is not None:
            self._stream_pool.shutdown(wait=False, cancel_futures=True)

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

    def _infer(self, model: str, texts: Sequence[str], heads: Sequence[str] | None = None) -> list[Any]:
        """Decoded results per text; with ``heads``, ``{head: Prediction}`` per text from one forward pass."""
        codec, predictor = self._codec(model), self._predictors[model]
        results: list[Any] = [None] * len(texts)
        # streams run ONNX Runtime sessions only (a graph-less version served by torch runs one chunk at a time);
        # every stream gets a chunk: a small batch is cut into `streams` chunks instead of one
        streams = self.streams if predictor.runtime == "onnx" else 1
        rows = max(1, min(self.batch_size, math.ceil(len(texts) / streams)))
        plan = plan_chunks(codec, texts, max_rows=rows, max_tokens=self.max_batch_tokens, on_truncate=self.on_truncate)

        def run(chunk: Sequence[int]) -> list[Any]:
            started = time.perf_counter()
            try:
                batch = codec.batch(plan.tokenized, chunk)
                if heads is None:
                    logits = predictor.logits(batch.input_ids, batch.attention_mask)
                else:
                    outputs = predictor.all_logits(batch.input_ids, batch.attention_mask)
            except (ValueError, TypeError, RuntimeError, IndexError) as exc:
                if self.on_error is not None:
                    self.on_error(model, "rejected")
                msg = f"model {model!r} rejected the input: {exc}"
                raise InputRejected(msg) from exc
            if self.observe is not None:
                self.observe(model, time.perf_counter() - started, len(chunk))
            if heads is not None:
                per_head = {h: codec.decode_sequence(outputs[codec.info.head(h).output], h) for h in heads}
                return [dict(zip(per_head, row, strict=True)) for row in zip(*per_head.values(), strict=True)]
            if codec.info.kind == "token":
                return codec.decode_tokens([texts[i] for i in chunk], batch, logits)
            return codec.decode_sequence(logits)

        pool = self._stream_pool if streams > 1 and len(plan.chunks) > 1 else None
        decoded = pool.map(run, plan.chunks) if pool is not None else map(run, plan.chunks)
        for chunk, values in zip(plan.chunks, decoded, strict=True):
            for index, value in zip(chunk, values, strict=True):
                results[index] = value
        return results

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        if self._codec(model).info.kind != "sequence":
            msg = f"model {model!r} is a token model; use tag()"
            raise ModelMismatch(msg)
        if not texts:
            return []
        return await self._run(lambda: self._infer(model, texts))

    async def classify_heads(
        self, model: str, texts: Sequence[str], heads: Sequence[str]
    ) -> dict[str, list[Prediction]]:
        """One forward pass per chunk over ``texts``; the predictions of every head in ``heads``."""
        info = self._codec(model).info
        if info.kind != "sequence":
            msg = f"model {model!r} is a token model; use tag()"
            raise ModelMismatch(msg)
        wanted = list(dict.fromkeys(info.head(h).name for h in heads))
        if not texts or not wanted:
            return {h: [] for h in wanted}
        rows: list[dict[str, Prediction]] = await self._run(lambda: self._infer(model, texts, wanted))
        return {h: [row[h] for row in rows] for h in wanted}

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
