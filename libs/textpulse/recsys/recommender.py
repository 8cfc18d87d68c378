"""The scorer the service ships: text similarity to the user's interest vector + item-kNN + popularity.

Exact search: every active catalogue item is scored (one matrix-vector
product and one sparse row sum), seen items are excluded, the best ``k`` are
returned with a short reason. Unknown users (or users none of whose items are
in the catalogue yet) get the most popular items with ``fallback=True``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .profile import Profile, interest_vector
from .scoring import Catalogue, HybridWeights, ItemKNN, hybrid, popularity_prior, top_k

DAY_S = 86_400.0


@dataclass(frozen=True)
class RecommenderConfig:
    """Tuned on an inner temporal split of the MovieLens dev-train part (``make bench-recommend``)."""

    weights: HybridWeights = field(default_factory=HybridWeights)
    half_life_days: float = 30.0
    profile_items: int = 200
    knn_neighbours: int = 100


@dataclass(frozen=True, slots=True)
class Scored:
    item_id: str
    score: float
    reason: str


@dataclass
class Stats:
    """What the last call scored (for the candidates-scored metric)."""

    candidates: int = 0


class Recommender:
    """Holds the CF model and popularity over a :class:`Catalogue`; profiles are passed in."""

    def __init__(self, catalogue: Catalogue, config: RecommenderConfig | None = None) -> None:
        self.catalogue = catalogue
        self.config = config or RecommenderConfig()
        self.knn = ItemKNN(self.config.knn_neighbours)
        self.counts: Counter[str] = Counter()
        self.stats = Stats()
        self._pop_key: tuple[int, int] = (-1, -1)
        self._pop: np.ndarray = np.zeros(0, dtype=np.float32)
        #: Bumped by :meth:`fit_cf`; popularity follows it, so a cached list stays valid until the next refresh.
        self.fitted = 0

    # -- CF and popularity -----------------------------------------------------

    def fit_cf(self, positives: Iterable[Sequence[str]]) -> None:
        """Rebuild item-kNN from users' positive lists (periodically in the service: cheap at this scale)."""
        lists = [list(p) for p in positives]
        self.knn.fit(lists, self.catalogue.index, len(self.catalogue.ids))
        self.fitted += 1

    def count_positive(self, item_id: str, n: int = 1) -> None:
        self.counts[item_id] += n

    def popularity(self) -> np.ndarray:
        """Popularity prior per catalogue row (recomputed when the catalogue changes or after :meth:`fit_cf`)."""
        key = (self.catalogue.version, self.fitted)
        if key != self._pop_key:
            counts = np.array([self.counts.get(i, 0) for i in self.catalogue.ids], dtype=np.float32)
            self._pop = popularity_prior(counts) if counts.size else counts
            self._pop_key = key
        return self._pop

    # -- scoring ---------------------------------------------------------------

    def _exclude(self, seen: Iterable[str]) -> np.ndarray:
        cat = self.catalogue
        mask = ~cat.active.copy()
        rows = [cat.index[i] for i in seen if i in cat.index]
        if rows:
            mask[rows] = True
        return mask

    def popular(self, k: int, seen: Iterable[str] = ()) -> list[Scored]:
        pop = self.popularity()
        self.stats.candidates = int(pop.shape[0])
        best = top_k(pop, k, self._exclude(seen))
        return [Scored(self.catalogue.ids[r], round(float(pop[r]), 6), "popular with other users") for r in best]

    def scores(self, profile: Profile) -> np.ndarray | None:
        """Hybrid score of every catalogue row for ``profile`` (None when nothing of it is in the catalogue)."""
        cfg, cat = self.config, self.catalogue
        weighted = profile.decay_weights(cfg.half_life_days * DAY_S, cfg.profile_items)
        vec = interest_vector(weighted, cat.index, cat.vectors)
        if vec is None:
            return None
        text = cat.vectors @ vec
        rows = [(cat.index[i], w) for i, w in weighted if i in cat.index]
        cf = self.knn.scores([r for r, _ in rows], [w for _, w in rows], n_items=len(cat.ids))
        return hybrid(text, cf, self.popularity(), cfg.weights)

    def recommend(self, profile: Profile | None, k: int) -> tuple[list[Scored], bool]:
        """Top ``k`` unseen items and whether they are the popular fallback."""
        seen = list(profile.seen) if profile else []
        scores = self.scores(profile) if profile else None
        if scores is None:
            return self.popular(k, seen), True
        self.stats.candidates = int(scores.shape[0])
        best = top_k(scores, k, self._exclude(seen))
        return [
            Scored(self.catalogue.ids[r], round(float(scores[r]), 6), self.reason(profile, int(r)))  # type: ignore[arg-type]
            for r in best
        ], False

    def reason(self, profile: Profile, row: int) -> str:
        """'similar to <the recent positive closest in text>'."""
        cat = self.catalogue
        recent = [cat.index[i] for i in profile.positive_items()[-self.config.profile_items :] if i in cat.index]
        if not recent:
            return "popular with other users"
        sims = cat.vectors[recent] @ cat.vectors[row]
        title = cat.titles[recent[int(np.argmax(sims))]]
        return f"similar to {title}"[:200]
