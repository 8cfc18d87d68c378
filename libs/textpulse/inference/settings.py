"""Inference settings (prefix ``TEXTPULSE_``) and the backend factory.

``TEXTPULSE_TRITON_URL`` unset → the in-process backend (the embedded
default); set (``host:port`` of Triton's gRPC endpoint) → the Triton backend.
Both read tokenizers and labels from ``TEXTPULSE_MODEL_REPO``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .backend import InferenceBackend
from .breaker import CircuitBreaker
from .types import ErrorObserver, Observer

REPO_ROOT = Path(__file__).resolve().parents[3]


class InferenceSettings(BaseSettings):
    """Where models are and how to call them."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_", extra="ignore")

    triton_url: str | None = Field(None, description="Triton gRPC host:port; unset = in-process inference.")
    model_repo: Path = Field(REPO_ROOT / ".cache" / "model-repo", description="Exported model repository.")
    inference_batch_size: int = Field(64, ge=1, le=1024, description="Texts per forward pass / Triton request.")
    triton_timeout_s: float = Field(10.0, gt=0, description="Deadline of one Triton request.")
    triton_startup_timeout_s: float = Field(60.0, gt=0, description="Wait for Triton to be ready at start-up.")
    triton_retries: int = Field(3, ge=1, description="Attempts per request before giving up (backoff between).")
    triton_backoff_s: float = Field(0.2, gt=0, description="First retry delay (exponential, jittered).")
    triton_backoff_max_s: float = Field(2.0, gt=0)
    triton_breaker_failures: int = Field(5, ge=1, description="Consecutive failures that open the circuit.")
    triton_breaker_reset_s: float = Field(5.0, gt=0, description="How long the circuit stays open.")
    triton_max_inflight: int = Field(8, ge=1, description="Concurrent Triton requests per process.")
    local_runtime: Literal["torch", "torch-int8", "onnx"] = Field(
        "torch",
        description=(
            "In-process runtime: torch (FP32), torch-int8 (dynamic int8 Linear layers: faster on CPU, a few per cent "
            "of labels differ; measure with `textpulse eval --backend torch-int8`), onnx (ONNX Runtime)."
        ),
    )
    local_threads: int | None = Field(None, ge=1, description="torch / ORT intra-op threads (default: library's).")


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
            observe=observe,
            on_error=on_error,
        )
    from .local import LocalBackend

    return LocalBackend(
        settings.model_repo,
        runtime=settings.local_runtime,
        threads=settings.local_threads,
        batch_size=settings.inference_batch_size,
        observe=observe,
        on_error=on_error,
    )
