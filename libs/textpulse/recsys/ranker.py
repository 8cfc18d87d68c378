"""A learned ranker (LightGBM LambdaRank) over text, collaborative and popularity features.

Candidates per user: the union of the top ``per_source`` unseen items of four
retrievers — text (the user's time-decayed interest vector × item vectors),
EASE, item-kNN and popularity. Features per (user, candidate), all computed
from the train interactions, the item metadata and the item vectors
(:class:`FeatureState`), named in :data:`FEATURES`.

Training (:func:`train_ranker`) uses an inner temporal split of the training
data only: the state is built from the inner train part (with item text as of
that part), the labels are the inner held-out positives. The fitted booster is
then applied to a state built from the whole train part.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from textpulse.contracts.recs import Item

from .data import Rating, positives_by_user, seen_by_user
from .scoring import EASE, ItemKNN, top_k

DAY_S = 86_400.0
YEAR_S = 365.25 * DAY_S
_YEAR = re.compile(r"\((\d{4})\)\s*$")

FEATURES: tuple[str, ...] = (
    "text_match",  # cosine of item vector and the user's decayed interest vector
    "text_max",  # best cosine to one of the user's last 20 positives
    "ease",  # EASE score / the user's best candidate's (scale-free: the inner and full states differ in size)
    "knn",  # item-kNN score / the user's best candidate's
    "pop_log",  # log1p(positives per 10k train positives)
    "pop_recent_log",  # the same share in the `recent_days` before the user's last train interaction
    "pop_before_log",  # the same share up to the user's last train interaction
    "item_age_days",  # user's last train time − item's first train rating (NaN: never rated)
    "release_gap_years",  # user's last train year − the year in the title (NaN: no year)
    "genre_overlap",  # mean share of the item's genres in the user's positive genres
    "tag_overlap",  # share of the item's tags found on the user's positives
    "user_positives_log",
    "user_seen_log",
    "cold_item",  # 1 when the item has no train rating at all
)


@dataclass(frozen=True)
class RankerConfig:
    per_source: int = 100
    half_life_days: float = 3650.0
    profile_items: int = 200
    ease_lambda: float = 100.0
    knn_neighbours: int = 100
    recent_days: float = 180.0
    #: Most trees; early stopping on held-out training users (``valid_users``) picks how many are kept.
    n_estimators: int = 600
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 100
    #: Share of the training users held out for early stopping on their nDCG@10 (0: fixed n_estimators).
    valid_users: float = 0.2
    #: Slots of the top k kept for the best text match among items without any train rating (0: none).
    new_item_slots: int = 0
    seed: int = 13
    extra: dict[str, Any] = field(default_factory=dict)


def title_year(title: str) -> float:
    m = _YEAR.search(title.strip())
    return float(m.group(1)) if m else math.nan


class FeatureState:
    """Train interactions, item metadata and vectors indexed for candidate generation and features."""

    def __init__(
        self,
        items: Mapping[str, Item],
        item_ids: Sequence[str],
        vectors: np.ndarray,
        ratings: Sequence[Rating],
        config: RankerConfig | None = None,
        ease: EASE | None = None,
    ) -> None:
        self.config = cfg = config or RankerConfig()
        self.item_ids = list(item_ids)
        self.index = {item: row for row, item in enumerate(self.item_ids)}
        self.n = len(self.item_ids)
        self.vectors = vectors.astype(np.float32)
        self.genres = [{g.lower() for g in items[i].genres} for i in self.item_ids]
        self.tags = [{t.lower() for t in items[i].tags} for i in self.item_ids]
        self.years = np.array([title_year(items[i].title) for i in self.item_ids], dtype=np.float64)
        ratings = [r for r in ratings if r.item in self.index]
        self.pos = positives_by_user(list(ratings))
        self.seen = seen_by_user(list(ratings))
        self.last_time: dict[str, float] = {}
        for r in ratings:
            self.last_time[r.user] = max(self.last_time.get(r.user, r.time), r.time)
        self.first_time = np.full(self.n, np.nan)
        self.counts = np.zeros(self.n, dtype=np.float32)
        pos_times: list[list[float]] = [[] for _ in range(self.n)]
        for r in ratings:
            row = self.index[r.item]
            if not r.time >= self.first_time[row]:  # NaN compares False: the first rating sets it
                self.first_time[row] = r.time
            if r.positive:
                self.counts[row] += 1
                pos_times[row].append(r.time)
        self.pos_times = [np.sort(np.array(t)) for t in pos_times]
        self.rated = ~np.isnan(self.first_time)
        lists = [[r.item for r in rows] for rows in self.pos.values()]
        self.knn = ItemKNN(cfg.knn_neighbours).fit(lists, self.index, self.n)
        self.ease = ease if ease is not None else EASE(cfg.ease_lambda).fit(lists, self.index, self.n)
        #: Popularity as a share (per 10k positives) so the inner and the full train states are comparable.
        self.per_10k = 1e4 / max(1.0, float(self.counts.sum()))
        self.pop_log = np.log1p(self.counts * self.per_10k)

    # -- per user ----------------------------------------------------------------

    def _exclude(self, user: str) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        rows = [self.index[i] for i in self.seen.get(user, ())]
        if rows:
            mask[rows] = True
        return mask

    def popular(self, user: str, k: int) -> list[str]:
        return [self.item_ids[r] for r in top_k(self.counts, k, self._exclude(user))]

    def features(self, user: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidate rows and their feature matrix (len × :data:`FEATURES`); None for users with no positive."""
        cfg = self.config
        rows_pos = self.pos.get(user, [])[-cfg.profile_items :]
        if not rows_pos:
            return None
        idx = np.array([self.index[r.item] for r in rows_pos])
        newest = rows_pos[-1].time
        w = np.exp(-math.log(2) * (newest - np.array([r.time for r in rows_pos])) / (cfg.half_life_days * DAY_S))
        vec = (self.vectors[idx] * w[:, None].astype(np.float32)).sum(axis=0)
        vec /= max(float(np.linalg.norm(vec)), 1e-9)
        text = self.vectors @ vec
        all_idx = [self.index[r.item] for r in self.pos[user]]
        ease = self.ease.scores(all_idx, n_items=self.n)
        knn = self.knn.scores(all_idx, n_items=self.n)
        exclude = self._exclude(user)
        k = cfg.per_source
        cand = np.unique(
            np.concatenate(
                [
                    top_k(text, k, exclude),
                    top_k(ease, k, exclude),
                    top_k(knn, k, exclude),
                    top_k(self.counts, k, exclude),
                ]
            )
        )
        now = self.last_time[user]
        last = idx[-20:]
        text_max = (self.vectors[cand] @ self.vectors[last].T).max(axis=1)
        recent = np.empty(len(cand), dtype=np.float32)
        before = np.empty(len(cand), dtype=np.float32)
        for j, c in enumerate(cand):
            t = self.pos_times[c]
            hi = np.searchsorted(t, now, side="right")
            before[j] = hi
            recent[j] = hi - np.searchsorted(t, now - cfg.recent_days * DAY_S, side="left")
        genre_counts: Counter[str] = Counter()
        user_tags: set[str] = set()
        for r in idx:
            genre_counts.update(self.genres[r])
            user_tags |= self.tags[r]
        total = max(1, len(idx))
        genre = np.array(
            [np.mean([genre_counts[g] / total for g in self.genres[c]]) if self.genres[c] else 0.0 for c in cand]
        )
        tag = np.array([len(self.tags[c] & user_tags) / len(self.tags[c]) if self.tags[c] else 0.0 for c in cand])
        now_year = 1970.0 + now / YEAR_S
        x = np.column_stack(
            [
                text[cand],
                text_max,
                _relative(ease[cand]),
                _relative(knn[cand]),
                self.pop_log[cand],
                np.log1p(recent * self.per_10k),
                np.log1p(before * self.per_10k),
                (now - self.first_time[cand]) / DAY_S,
                now_year - self.years[cand],
                genre,
                tag,
                np.full(len(cand), math.log1p(len(self.pos[user]))),
                np.full(len(cand), math.log1p(len(self.seen.get(user, ())))),
                (~self.rated[cand]).astype(np.float64),
            ]
        ).astype(np.float32)
        return cand, x


def _relative(scores: np.ndarray) -> np.ndarray:
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else scores


@dataclass
class TrainedRanker:
    """A fitted LightGBM LambdaRank model and what it was trained on."""

    model: Any
    config: RankerConfig
    info: dict[str, Any]

    def importances(self) -> dict[str, float]:
        """Gain importance per feature, as a share of the total."""
        gain = self.model.booster_.feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        return {name: round(float(g) / total, 4) for name, g in zip(FEATURES, gain, strict=True)}

    def rank(self, state: FeatureState, user: str, k: int) -> list[str]:
        """Top ``k`` candidates by the model; users with no positive get the popular list (the fallback)."""
        got = state.features(user)
        if got is None:
            return state.popular(user, k)
        cand, x = got
        order = cand[np.argsort(-self.model.predict(x), kind="stable")]
        slots = min(self.config.new_item_slots, k)
        if not slots:
            return [state.item_ids[c] for c in order[:k]]
        # New items (no train rating) rarely win on the learned score, which has seen few of them
        # relevant; the reserved slots go to those closest to the user's interest vector.
        new = x[:, FEATURES.index("cold_item")] > 0
        by_text = cand[new][np.argsort(-x[new, FEATURES.index("text_match")], kind="stable")][:slots]
        head = [c for c in order if c not in set(by_text)][: k - len(by_text)]
        return [state.item_ids[c] for c in [*head, *by_text]]


def training_data(
    state: FeatureState, relevant: Mapping[str, set[str]]
) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, int]]:
    """Stacked features, binary labels and group sizes of the users with a relevant item among their candidates."""
    xs, ys, groups = [], [], []
    users = hits = 0
    for user in sorted(relevant):
        got = state.features(user)
        if got is None:
            continue
        cand, x = got
        rel = {state.index[i] for i in relevant[user] if i in state.index}
        y = np.array([1 if c in rel else 0 for c in cand], dtype=np.int32)
        users += 1
        if not y.any():
            continue
        hits += 1
        xs.append(x)
        ys.append(y)
        groups.append(len(cand))
    if not xs:
        msg = "no user has a relevant item among the candidates: nothing to train on"
        raise ValueError(msg)
    info = {"users": users, "users_with_hit": hits, "rows": int(sum(groups))}
    return np.concatenate(xs), np.concatenate(ys), groups, info


def train_ranker(
    state: FeatureState, relevant: Mapping[str, set[str]], config: RankerConfig | None = None
) -> TrainedRanker:
    """Fit LambdaRank on ``state`` (the inner train part) against ``relevant`` (its held-out positives)."""
    import lightgbm as lgb

    cfg = config or state.config
    fit_rel, valid_rel = dict(relevant), {}
    if cfg.valid_users > 0:
        users = sorted(relevant)
        np.random.default_rng(cfg.seed).shuffle(users)
        held = set(users[: int(len(users) * cfg.valid_users)])
        fit_rel = {u: r for u, r in relevant.items() if u not in held}
        valid_rel = {u: r for u, r in relevant.items() if u in held}
    x, y, groups, counts = training_data(state, fit_rel)
    info: dict[str, Any] = dict(counts)
    model = lgb.LGBMRanker(
        objective="lambdarank",
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.9,
        random_state=cfg.seed,
        n_jobs=2,
        verbose=-1,
        **cfg.extra,
    )
    if valid_rel:
        vx, vy, vgroups, vinfo = training_data(state, valid_rel)
        model.fit(
            x,
            y,
            group=groups,
            eval_X=(vx,),
            eval_y=(vy,),
            eval_group=[vgroups],
            eval_at=[10],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        info = {**info, "valid": vinfo, "best_iteration": int(model.best_iteration_)}
    else:
        model.fit(x, y, group=groups, eval_at=[10])
    return TrainedRanker(model, cfg, info)
