"""A deterministic bag-of-words embedder for tests that must not load a transformer."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from textpulse.contracts import ModelRef
from textpulse.inference.errors import BackendUnavailable

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """Words hashed into ``dim`` buckets, L2-normalised: texts sharing words are close."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.model = ModelRef(name="hash-bow", version="1")
        self.available = True
        self.calls = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ready(self) -> bool:
        return self.available

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not self.available:
            msg = "hash embedder switched off by the test"
            raise BackendUnavailable(msg)
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest()[:8], 16) % self.dim] += 1.0  # bucketing
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-9)
        return unit
