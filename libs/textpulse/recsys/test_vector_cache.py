"""Item vectors kept across restarts (``VectorCache``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .vector_cache import VectorCache


def _vec(seed: int, dim: int = 4) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def test_saved_vectors_come_back_for_the_same_model_version_only(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path, "recommend", "3", 4)
    cache.put("a text", _vec(1))
    cache.put("another", _vec(2))
    assert cache.save()
    assert not cache.save()  # nothing changed since: no write
    again = VectorCache(tmp_path, "recommend", "3", 4)
    assert again.load() == 2
    np.testing.assert_array_equal(again.get("a text"), _vec(1))  # type: ignore[arg-type]
    assert again.get("changed text") is None
    assert VectorCache(tmp_path, "recommend", "4", 4).load() == 0  # a new version embeds again


def test_keep_drops_the_vectors_of_texts_no_item_has_any_more(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path, "m", "1", 4)
    for n, text in enumerate(["old title", "kept title", "other"]):
        cache.put(text, _vec(n))
    cache.save(keep=["kept title"])
    again = VectorCache(tmp_path, "m", "1", 4)
    assert again.load() == 1
    assert again.get("kept title") is not None


def test_an_unusable_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path, "m", "1", 4)
    assert cache.path is not None
    cache.path.write_bytes(b"not an npz")
    assert cache.load() == 0
    other_dim = VectorCache(tmp_path, "m", "2", 8)
    other_dim.put("t", _vec(1, 8))
    other_dim.save()
    assert other_dim.path is not None
    other_dim.path.rename(tmp_path / "m@1.npz")
    assert VectorCache(tmp_path, "m", "1", 4).load() == 0  # wrong dimension: embedded again


def test_without_a_directory_nothing_is_written() -> None:
    cache = VectorCache(None, "m", "1", 4)
    cache.put("t", _vec(1))
    assert not cache.save()
    assert cache.load() == 0


def test_a_key_ending_in_a_nul_byte_survives_the_file(tmp_path: Path) -> None:
    # NumPy's fixed-width bytes strip trailing NULs; ~1 item in 256 has such a key and was embedded again.
    text = next(f"item {i}" for i in range(10_000) if VectorCache.key(f"item {i}").endswith(b"\0"))
    cache = VectorCache(tmp_path, "m", "1", 4)
    cache.put(text, _vec(3))
    assert cache.save()
    again = VectorCache(tmp_path, "m", "1", 4)
    assert again.load() == 1
    np.testing.assert_array_equal(again.get(text), _vec(3))  # type: ignore[arg-type]
