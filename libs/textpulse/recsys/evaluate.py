"""Offline evaluation on a temporal split: rankings of each method for every user with held-out positives.

Protocol: a user's candidates are all catalogue items they did not rate in the
train part; relevant items are their held-out positives (rating ≥ 4). Users
with no held-out positive are left out. Every method ranks the same
candidates, so the rows of the benchmark are comparable.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textpulse.contracts.recs import Interaction

from .data import MovieLens, Rating, positives_by_user, seen_by_user, tag_cutoffs, temporal_split
from .metrics import mean_metrics
from .profile import Profile
from .recommender import DAY_S, Recommender, RecommenderConfig
from .scoring import EASE, Catalogue, ItemKNN, top_k

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Train ratings, held-out ratings, the item texts and the evaluated users' relevant sets."""

    train: list[Rating]
    test: list[Rating]
    item_ids: list[str]
    texts: list[str]
    titles: list[str]

    @property
    def relevant(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for r in self.test:
            if r.positive:
                out.setdefault(r.user, set()).add(r.item)
        return out


def make_split(ml: MovieLens, fraction: float = 0.2) -> Split:
    """Temporal dev split of the shared ratings (which already lack the withheld test part)."""
    train, test = temporal_split(ml.ratings, fraction)
    return split_of(ml, train, test)


def split_of(ml: MovieLens, train: list[Rating], test: list[Rating]) -> Split:
    """A split whose item text keeps only the tags written in the train part (:func:`tag_cutoffs`)."""
    items = ml.items_as_of(tag_cutoffs(train))
    ids = sorted(items, key=int) if all(i.isdigit() for i in items) else sorted(items)
    return Split(train, test, ids, [items[i].text() for i in ids], [items[i].title for i in ids])


def catalogue_of(split: Split, vectors: np.ndarray) -> Catalogue:
    cat = Catalogue(vectors.shape[1], capacity=len(split.item_ids))
    for item, title, vec in zip(split.item_ids, split.titles, vectors, strict=True):
        cat.upsert(item, title, vec)
    return cat


def profiles_of(ratings: list[Rating]) -> dict[str, Profile]:
    """Profiles built by the service's own code path from the train ratings."""
    from datetime import UTC, datetime

    profiles: dict[str, Profile] = {}
    for r in ratings:
        p = profiles.setdefault(r.user, Profile(r.user, max_positives=200, max_seen=100_000))
        p.apply(
            Interaction(
                user_id=r.user,
                item_id=r.item,
                action="rate",
                rating=r.rating,
                time=datetime.fromtimestamp(r.time, UTC),
            )
        )
    return profiles


Ranker = Callable[[str], list[str]]


def rank_all(split: Split, rank: Ranker) -> dict[str, list[str]]:
    return {user: rank(user) for user in split.relevant}


def evaluate(split: Split, rank: Ranker, k: int = 10) -> dict[str, float]:
    return mean_metrics(rank_all(split, rank), split.relevant, k)


#: Most train positives a user may have to count as a cold-start user.
COLD_USER_POSITIVES = 5


def cold_start_relevant(split: Split) -> dict[str, dict[str, set[str]]]:
    """Subsets of ``split.relevant`` where collaborative signals are thin or absent.

    ``cold items``: per user, the held-out positives whose item has no train
    interaction at all (no rating by anyone, positive or not), users without one
    left out. ``cold users``: the users with at most :data:`COLD_USER_POSITIVES`
    train positives, all their held-out positives.
    """
    trained = {r.item for r in split.train}
    n_pos = Counter(r.user for r in split.train if r.positive)
    relevant = split.relevant
    items = {u: {i for i in rel if i not in trained} for u, rel in relevant.items()}
    return {
        "cold items": {u: rel for u, rel in items.items() if rel},
        f"users ≤{COLD_USER_POSITIVES} train positives": {
            u: rel for u, rel in relevant.items() if n_pos.get(u, 0) <= COLD_USER_POSITIVES
        },
    }


def evaluate_subsets(
    split: Split, rank: Ranker, subsets: Mapping[str, Mapping[str, set[str]]], k: int = 10
) -> dict[str, dict[str, float]]:
    """Metrics on every user (``all``) and on each subset, from one ranking per user (the full top ``k``)."""
    rankings = rank_all(split, rank)
    out = {"all": mean_metrics(rankings, split.relevant, k)}
    for name, relevant in subsets.items():
        out[name] = mean_metrics(rankings, relevant, k)
    return out


class Rankers:
    """The baseline rankers over one split (popular, item-kNN, text-only with given vectors)."""

    def __init__(self, split: Split, k: int = 10, half_life_days: float = 30.0, profile_items: int = 50) -> None:
        self.split, self.k = split, k
        self.index = {item: row for row, item in enumerate(split.item_ids)}
        self.n = len(split.item_ids)
        self.seen = seen_by_user(split.train)
        self.pos = positives_by_user(split.train)
        counts = np.zeros(self.n, dtype=np.float32)
        for rows in self.pos.values():
            for r in rows:
                counts[self.index[r.item]] += 1
        self.counts = counts
        self.knn = ItemKNN(100).fit([[r.item for r in rows] for rows in self.pos.values()], self.index, self.n)
        self.half_life_s = half_life_days * DAY_S
        self.profile_items = profile_items

    def _exclude(self, user: str) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        mask[[self.index[i] for i in self.seen.get(user, ()) if i in self.index]] = True
        return mask

    def _ids(self, rows: np.ndarray) -> list[str]:
        return [self.split.item_ids[r] for r in rows]

    def popular(self, user: str) -> list[str]:
        return self._ids(top_k(self.counts, self.k, self._exclude(user)))

    def _recent(self, user: str) -> tuple[list[int], list[float]]:
        rows = self.pos.get(user, [])[-self.profile_items :]
        if not rows:
            return [], []
        newest = rows[-1].time
        return [self.index[r.item] for r in rows], [
            float(np.exp(-np.log(2) * (newest - r.time) / self.half_life_s)) for r in rows
        ]

    def item_knn(self, user: str) -> list[str]:
        idx, _ = self._recent(user)
        if not idx:
            return self.popular(user)
        # Classic item-kNN: every train positive counts equally (no decay, no recency window).
        all_idx = [self.index[r.item] for r in self.pos.get(user, [])]
        scores = self.knn.scores(all_idx, n_items=self.n)
        if float(scores.max()) <= 0:
            return self.popular(user)
        return self._ids(
            top_k(scores + 1e-6 * self.counts / max(1.0, float(self.counts.max())), self.k, self._exclude(user))
        )

    def fit_ease(self, lam: float) -> EASE:
        """EASE over the users' train positives (the same binary matrix as item-kNN)."""
        return EASE(lam).fit([[r.item for r in rows] for rows in self.pos.values()], self.index, self.n)

    def ease(self, model: EASE) -> Ranker:
        """Every train positive counts equally, as in :meth:`item_knn`; users with none get the popular list."""

        def rank(user: str) -> list[str]:
            idx = [self.index[r.item] for r in self.pos.get(user, [])]
            if not idx:
                return self.popular(user)
            scores = model.scores(idx, n_items=self.n)
            tie = 1e-6 * self.counts / max(1.0, float(self.counts.max()))
            return self._ids(top_k(scores + tie, self.k, self._exclude(user)))

        return rank

    def text(self, vectors: np.ndarray) -> Ranker:
        def rank(user: str) -> list[str]:
            idx, w = self._recent(user)
            if not idx:
                return self.popular(user)
            vec = (vectors[idx] * np.array(w, dtype=np.float32)[:, None]).sum(axis=0)
            vec /= max(float(np.linalg.norm(vec)), 1e-9)
            return self._ids(top_k(vectors @ vec, self.k, self._exclude(user)))

        return rank


def hybrid_ranker(split: Split, vectors: np.ndarray, config: RecommenderConfig, k: int = 10) -> Ranker:
    """The shipped service scorer (:class:`Recommender` + :class:`Profile`) replayed over the train ratings."""
    rec = Recommender(catalogue_of(split, vectors), config)
    profiles = profiles_of(split.train)
    rec.fit_cf(p.positive_items() for p in profiles.values())
    for p in profiles.values():
        for item in p.positive_items():
            rec.count_positive(item)

    def rank(user: str) -> list[str]:
        items, _ = rec.recommend(profiles.get(user), k)
        return [s.item_id for s in items]

    return rank


def cached_vectors(encode: Callable[[list[str]], np.ndarray], texts: list[str], key: str, cache: Path) -> np.ndarray:
    """Item vectors cached on disk by (model key, texts) so repeated benchmark runs skip the encoder."""
    digest = hashlib.sha256(("\n".join(texts) + "|" + key).encode()).hexdigest()[:16]
    path = cache / f"vectors-{digest}.npy"
    if path.is_file():
        cached: np.ndarray = np.load(path)
        return cached
    vectors = encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def weights_key(directory: Path | str, max_length: int) -> str:
    """Cache key of an encoder: hash of its weights file (an export and its source folder share vectors)."""
    weights = Path(directory) / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.is_file() else str(directory)
    return f"{digest}|{max_length}"


def relevant_counts(relevant: Mapping[str, set[str]]) -> tuple[int, int]:
    return len(relevant), sum(len(v) for v in relevant.values())
