"""A tiny LambdaRank ranker for the recommend service's tests (seconds to train, any embedding size)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from textpulse.contracts.recs import Item
from textpulse.recsys.data import Rating, temporal_split
from textpulse.recsys.ranker import FeatureState, RankerConfig, save_ranker, train_ranker

DAY = 86_400.0
CONFIG = RankerConfig(
    per_source=20, n_estimators=20, min_child_samples=5, num_leaves=7, ease_lambda=10.0, valid_users=0
)


def tiny_ranker(directory: Path, dim: int) -> Path:
    """Train on 40 synthetic users (half like items 0-5, half 6-11) and save to ``directory``; returns it.

    The item vectors are synthetic too: the service computes its features from its own catalogue,
    so only their size has to match the encoder's (checked at start-up).
    """
    items = {
        str(n): Item(item_id=str(n), title=f"Film {n} ({1990 + n})", genres=["A" if n < 6 else "B"], tags=[])
        for n in range(12)
    }
    ids = sorted(items, key=int)
    vectors = np.zeros((len(ids), dim), dtype=np.float32)
    for row in range(len(ids)):
        vectors[row, 0 if row < 6 else 1] = 1.0
        vectors[row, 2] = 0.01 * row
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rng = np.random.default_rng(3)
    ratings = []
    for u in range(40):
        pool = range(6) if u % 2 == 0 else range(6, 12)
        for day, item in enumerate(rng.permutation(list(pool))):
            ratings.append(Rating(f"u{u}", str(int(item)), 4.5, 1_000_000 + (u * 10 + day) * DAY))
    train, held = temporal_split(ratings, 0.3)
    relevant: dict[str, set[str]] = {}
    for r in held:
        relevant.setdefault(r.user, set()).add(r.item)
    trained = train_ranker(FeatureState(items, ids, vectors, train, CONFIG), relevant, CONFIG)
    save_ranker(trained, directory, embedding_dim=dim, metrics={"note": "synthetic, for tests"})
    return directory
