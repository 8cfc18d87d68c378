"""Item vectors kept across restarts: by model version and item text, in one file, read at start-up.

A restarted ``recommend`` replays the whole catalogue (``items`` is compacted: the latest record per
item). Without this cache every item is embedded again — minutes for a large catalogue on a CPU,
while the service is not ready. The key is the SHA-256 of the item's text under the model's name and
version: another model version uses another file, a changed text misses and is embedded again.

The file (NumPy ``.npz``: 16-byte keys and a float32 matrix) is replaced atomically (written beside,
then renamed), so a crash while saving leaves the previous file; an unreadable or mismatched file is
ignored with a warning (the vectors are embedded again, never wrong).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


KEY_BYTES = 16


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", part) or "_"


class VectorCache:
    """Vectors of item texts for one model version; ``directory=None`` keeps nothing on disk."""

    def __init__(self, directory: Path | None, model: str, version: str, dim: int) -> None:
        self.dim = dim
        self.path = None if directory is None else directory / f"{_safe(model)}@{_safe(version)}.npz"
        self._vectors: dict[bytes, np.ndarray] = {}
        self._dirty = False

    def __len__(self) -> int:
        return len(self._vectors)

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:KEY_BYTES]

    def load(self) -> int:
        """Read the file of this model version (if any); returns the number of vectors loaded."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            with np.load(self.path) as data:
                keys, vectors = data["keys"], data["vectors"]
            if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(keys) != len(vectors):  # noqa: PLR2004
                msg = f"shape {vectors.shape} for {len(keys)} keys, expected (n, {self.dim})"
                raise ValueError(msg)
        except Exception as exc:  # noqa: BLE001 - a bad cache costs a re-embedding, never the start
            log.warning("item vector cache ignored", extra={"path": str(self.path), "error": repr(exc)})
            return 0
        # NumPy's fixed-width bytes drop trailing NULs (1 key in 256 ends in one): pad back to the 16 bytes.
        self._vectors = {
            bytes(k).ljust(KEY_BYTES, b"\0"): v
            for k, v in zip(keys, vectors.astype(np.float32, copy=False), strict=True)
        }
        return len(self._vectors)

    def get(self, text: str) -> np.ndarray | None:
        return self._vectors.get(self.key(text))

    def put(self, text: str, vector: np.ndarray) -> None:
        self._vectors[self.key(text)] = np.asarray(vector, dtype=np.float32)
        self._dirty = True

    def save(self, keep: Iterable[str] | None = None) -> bool:
        """Write the file if anything changed; ``keep``: the current items' texts (the rest is dropped)."""
        if keep is not None:
            wanted = {self.key(t) for t in keep}
            if len(wanted) < len(self._vectors):
                self._vectors = {k: v for k, v in self._vectors.items() if k in wanted}
                self._dirty = True
        if self.path is None or not self._dirty:
            return False
        keys = np.array(list(self._vectors), dtype=f"S{KEY_BYTES}")
        vectors = np.stack(list(self._vectors.values())) if self._vectors else np.zeros((0, self.dim), np.float32)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".vectors-", suffix=".npz", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                np.savez(out, keys=keys, vectors=vectors)
            Path(tmp).replace(self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False
        return True
