"""Inference settings (prefix ``TEXTPULSE_``) and the backend factory.

``TEXTPULSE_TRITON_URL`` unset → the in-process backend (the embedded
default); set (``host:port`` of Triton's gRPC endpoint) → the Triton backend.
Both read tokenizers and labels from ``TEXTPULSE_MODEL_REPO``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backend import InferenceBackend
from .breaker import CircuitBreaker
from .cpus import container_threads
from .types import ErrorObserver, Observer

if TYPE_CHECKING:
    from .metrics import InferenceMetrics

REPO_ROOT = Path(__file__).resolve().parents[3]


class InferenceSettings(BaseSettings):
    """Where models are and how to call them."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_", extra="ignore")

    triton_url: str | None = Field(None, description="Triton gRPC host:port; unset = in-process inference.")
    model_repo: Path = Field(REPO_ROOT / ".cache" / "model-repo", description="Exported model repository.")
    inference_batch_size: int = Field(64, ge=1, le=1024, description="Texts per forward pass / Triton request.")
    inference_max_batch_tokens: int = Field(
        512,  # = codec.DEFAULT_MAX_BATCH_TOKENS (test_chunks checks; not imported: codec loads the tokenizer)
        ge=1,
        description=(
            "Padded tokens (rows x longest row, capped at the model's max_length) per forward pass / Triton "
            "request: texts are sorted by token count and cut into chunks under this budget and the batch size."
        ),
    )
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of one Triton request.")
    triton_startup_timeout_s: float = Field(60.0, gt=0, description="Wait for Triton to be ready at start-up.")
    triton_retries: int = Field(3, ge=1, description="Attempts per request before giving up (backoff between).")
    triton_backoff_s: float = Field(0.2, gt=0, description="First retry delay (exponential, jittered).")
    triton_backoff_max_s: float = Field(2.0, gt=0)
    triton_breaker_failures: int = Field(5, ge=1, description="Consecutive failures that open the circuit.")
    triton_breaker_reset_s: float = Field(5.0, gt=0, description="How long the circuit stays open.")
    triton_max_inflight: int = Field(8, ge=1, description="Concurrent Triton requests per process.")
    local_runtime: Literal["onnx", "torch", "torch-int8"] = Field(
        "onnx",
        description=(
            "In-process runtime: onnx (ONNX Runtime over the fused graph; no torch in the process, ~1 GB less "
            "RSS per service), torch (the safetensors weights), torch-int8 (= torch with local_precision int8). "
            "A version exported without ONNX falls back to torch with a warning."
        ),
    )
    local_precision: Literal["fp32", "int8", "bf16"] | None = Field(
        None,
        description=(
            "fp32, int8 (onnx: model.int8.onnx, VNNI; torch: dynamic int8 Linear layers) or bf16 (torch only: "
            "ONNX Runtime's CPU provider has no bf16 kernels). Unset: each model's measured default (serving.json in "
            "its version folder: the fastest precision within 1 point of fp32 dev quality on every head, recorded by "
            "make bench-int8 BENCH_INT8_ARGS=--record), else fp32."
        ),
    )
    local_threads: int | None = Field(
        default_factory=container_threads,  # read when the settings are built, not at import
        ge=1,
        description=(
            "torch / ORT intra-op threads. Unset: the CPUs a container's cgroup CPU quota (rounded up) or cpuset "
            "grants, where they are fewer than the host's (joblib.cpu_count); else the library's default (ORT: one "
            "per physical core)."
        ),
    )
    local_layout: Literal["streams", "intra-op"] = Field(
        "streams",
        description=(
            "How the in-process ONNX Runtime uses local_threads: streams (up to local_threads chunks of a batch at "
            "once, one thread each; a small batch is cut so every stream gets a chunk) or intra-op (one chunk at a "
            "time on local_threads intra-op threads). The torch runtimes are always intra-op."
        ),
    )
    drift_window: int = Field(
        2000, ge=10, description="Recent predictions per head that the drift gauge compares with reference.json."
    )
    drift_min_samples: int = Field(
        200, ge=1, description="Predictions a head's window needs before its drift gauge (PSI) is a number."
    )


def make_backend(
    settings: InferenceSettings, *, observe: Observer | None = None, on_error: ErrorObserver | None = None
) -> InferenceBackend:
    """The Triton backend when a URL is configured, else the in-process one."""
    if settings.triton_url:
        from .triton import TritonBackend

        return TritonBackend(
            settings.triton_url,
            settings.model_repo,
            timeout_s=settings.triton_timeout_s,
            startup_timeout_s=settings.triton_startup_timeout_s,
            retries=settings.triton_retries,
            backoff_s=settings.triton_backoff_s,
            backoff_max_s=settings.triton_backoff_max_s,
            breaker=CircuitBreaker(settings.triton_breaker_failures, settings.triton_breaker_reset_s),
            max_inflight=settings.triton_max_inflight,
            batch_size=settings.inference_batch_size,
            max_batch_tokens=settings.inference_max_batch_tokens,
            observe=observe,
            on_error=on_error,
        )
    from .local import LocalBackend

    return LocalBackend(
        settings.model_repo,
        runtime=settings.local_runtime,
        precision=None if settings.local_runtime == "torch-int8" else settings.local_precision,
        threads=settings.local_threads,
        layout=settings.local_layout,
        batch_size=settings.inference_batch_size,
        max_batch_tokens=settings.inference_max_batch_tokens,
        observe=observe,
        on_error=on_error,
    )


@asynccontextmanager
async def serving_backend(
    settings: InferenceSettings, metrics: InferenceMetrics, backend: InferenceBackend | None = None
) -> AsyncIterator[InferenceBackend]:
    """A consuming service's backend (``backend``, else :func:`make_backend`), watched by its metrics; closed after.

    Not started: the service starts it with the models (and heads) it needs.
    """
    inference = backend or make_backend(settings, observe=metrics.observe, on_error=metrics.error)
    metrics.watch(inference)
    metrics.drift_window, metrics.drift_min_samples = settings.drift_window, settings.drift_min_samples
    try:
        yield inference
    finally:
        await inference.close()


async def backend_ready(kit: Any) -> bool:
    """Readiness of a service that put its started backend on ``kit.state.backend`` (:mod:`textpulse.kit`)."""
    inference: InferenceBackend | None = getattr(kit.state, "backend", None)
    return inference is not None and await inference.ready()
