"""Inference client: one async interface, an in-process (torch) and a Triton (gRPC) backend."""

from .backend import HeadInfo, HeadSpec, InferenceBackend, ModelInfo
from .errors import BackendUnavailable, InferenceError, InputRejected, ModelMismatch
from .types import Prediction, Span

__all__ = [
    "BackendUnavailable",
    "HeadInfo",
    "HeadSpec",
    "InferenceBackend",
    "InferenceError",
    "InputRejected",
    "ModelInfo",
    "ModelMismatch",
    "Prediction",
    "Span",
]
