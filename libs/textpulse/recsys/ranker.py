"""A learned ranker (LightGBM LambdaRank) over text, collaborative and popularity features.

Candidates per user: the union of the top ``per_source`` unseen items of four
retrievers — text (the user's time-decayed interest vector × item vectors),
EASE, item-kNN and popularity — and the best ``new_per_source`` text matches
among items without any positive. Features per (user, candidate), all computed
from the train interactions, the item metadata and the item vectors
(:class:`FeatureState`), named in :data:`FEATURES`.

Training (:func:`train_ranker`) uses temporal splits of the training data only:
the state is built from the inner train part (with item text as of that part),
the labels are the inner held-out positives; :func:`train_on_inner` adds the
inner split of the inner train part (``training_cuts``) for twice the queries. The fitted booster is
then applied to a state built from the whole train part.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textpulse.contracts.recs import Item

from .data import MovieLens, Rating, positives_by_user, seen_by_user, tag_cutoffs, temporal_split
from .evaluate import Split, split_of
from .scoring import EASE, ItemKNN, Transitions, top_k

DAY_S = 86_400.0
YEAR_S = 365.25 * DAY_S
_YEAR = re.compile(r"\((\d{4})\)\s*$")

FEATURES: tuple[str, ...] = (
    "text_match",  # cosine of item vector and the user's decayed interest vector
    "text_max",  # best cosine to one of the user's last 20 positives
    "ease",  # EASE score / the user's best candidate's (scale-free: the inner and full states differ in size)
    "knn",  # item-kNN score / the user's best candidate's
    "pop_log",  # log1p(positives per 10k train positives)
    "pop_recent_log",  # the same share in the `recent_days` before the user's newest positive
    "pop_before_log",  # the same share up to the user's newest positive
    "item_age_days",  # user's newest positive's time − the item's first positive (NaN: none)
    "release_gap_years",  # year of the user's newest positive − the year in the title (NaN: no year)
    "genre_overlap",  # mean share of the item's genres in the user's positive genres
    "tag_overlap",  # share of the item's tags found on the user's positives
    "user_positives_log",
    "user_seen_log",
    "cold_item",  # 1 when the item has no positive at all
    # Per-user normalised views (over this user's candidates): a user's raw scores live on their own
    # scale (many vs few positives, a broad vs narrow profile), and ranks/z-scores let the trees compare
    # "EASE's 3rd choice" across users and across the inner (training) and full (serving) states.
    "ease_rank",  # log1p(rank by EASE among the candidates; 0 = EASE's best)
    "knn_rank",
    "text_rank",
    "text_max_rank",
    "pop_rank",
    "ease_z",  # (score − candidates' mean) / their standard deviation
    "knn_z",
    "text_z",
    "text_max_z",
    "pop_z",
    # Order, which EASE and kNN over all positives ignore: what users liked next (scoring.Transitions),
    # and item-kNN from the user's last `recent_items` positives only.
    "knn_recent",  # item-kNN score of the last positives / the user's best candidate's
    "trans",  # transition score from the user's last positives / the user's best candidate's
    "trans_log",  # log1p(raw transition score)
    "trans_rank",
    "trans_z",
)
#: The source columns of the per-user ranks and z-scores, in the order of :data:`FEATURES`.
_NORMALISED = ("ease", "knn", "text_match", "text_max", "pop_log")


@dataclass(frozen=True)
class RankerConfig:
    per_source: int = 100
    #: Extra candidates: the best text matches among items without any positive (new items reach the
    #: ranker only through text, where they compete with rated items for the top ``per_source``). On the
    #: MovieLens dev split it added no held-out cold positive (the text model is weak there); it is what
    #: lets a better text model's new items reach the ranker and its ``new_item_slots``.
    new_per_source: int = 20
    half_life_days: float = 3650.0
    profile_items: int = 200
    ease_lambda: float = 100.0
    knn_neighbours: int = 100
    #: EASE's dense solve is cubic in its items: only the most popular this many enter it (others score 0).
    ease_max_items: int = 5000
    #: The user's last positives read by ``knn_recent`` and the transitions.
    recent_items: int = 10
    #: Transitions (what users liked next): positives ahead counted and the weight of each older one of
    #: the user's last positives. Window 5, decay 0.7 is the first setting tried (dev split: window 10 with
    #: the last 20 at 0.85 read the same, services/recommend/README.md).
    transition_window: int = 5
    transition_decay: float = 0.7
    recent_days: float = 180.0
    #: Trees (the most, when ``valid_users`` > 0 turns early stopping on). Chosen on the dev split (3 seeds
    #: each, see services/recommend/README.md): small, slow, many trees; early stopping on ~100 held-out
    #: users stopped after 7-63 trees and read ~0.0015-0.007 nDCG lower.
    n_estimators: int = 300
    learning_rate: float = 0.02
    num_leaves: int = 7
    min_child_samples: int = 200
    #: LightGBM objective: ``lambdarank`` (listwise), or ``rank_xendcg`` / ``binary`` to compare.
    objective: str = "lambdarank"
    early_stopping_rounds: int = 30
    #: Temporal cuts trained on: 1 = the inner split; 2 adds the inner split of the inner train part
    #: (twice the queries; see :func:`train_on_inner`).
    training_cuts: int = 2
    #: Share of the training users held out for early stopping on their nDCG@10 (0: fixed n_estimators).
    valid_users: float = 0.0
    #: Slots of the top k kept for the best text match among items without any train rating (0: none).
    new_item_slots: int = 0
    seed: int = 13
    extra: dict[str, Any] = field(default_factory=dict)


#: Embeds item texts (a split's ``texts``) into unit vectors, for the extra training cuts.
Encode = Callable[[list[str]], np.ndarray]


def title_year(title: str) -> float:
    m = _YEAR.search(title.strip())
    return float(m.group(1)) if m else math.nan


class FeatureState:
    """Positives, item metadata and vectors indexed for candidate generation and features.

    The one place features are computed (:meth:`user_features`), for training
    (built from ratings, :meth:`features`) and for serving (built from the
    service's profiles and catalogue, :meth:`from_history`, with the live
    profile passed per request): train/serve skew would need two code paths.
    Every item-side statistic is derived from the *positives* only (their
    items and times), which is what the service's profiles keep.
    """

    def __init__(
        self,
        items: Mapping[str, Item],
        item_ids: Sequence[str],
        vectors: np.ndarray,
        ratings: Sequence[Rating],
        config: RankerConfig | None = None,
        ease: EASE | None = None,
    ) -> None:
        index = set(item_ids)
        ratings = [r for r in ratings if r.item in index]
        positives = {u: [(r.item, r.time) for r in rows] for u, rows in positives_by_user(ratings).items()}
        self._build(items, item_ids, vectors, positives, seen_by_user(ratings), config, ease, None)

    @classmethod
    def from_history(
        cls,
        items: Mapping[str, Item],
        item_ids: Sequence[str],
        vectors: np.ndarray,
        positives: Mapping[str, Sequence[tuple[str, float]]],
        config: RankerConfig | None = None,
        active: np.ndarray | None = None,
    ) -> FeatureState:
        """The serving state: users' (item, time) positives, oldest first; ``active`` masks deleted rows."""
        state = cls.__new__(cls)
        state._build(items, item_ids, vectors, positives, {}, config, None, active)
        return state

    def _build(
        self,
        items: Mapping[str, Item],
        item_ids: Sequence[str],
        vectors: np.ndarray,
        positives: Mapping[str, Sequence[tuple[str, float]]],
        seen: Mapping[str, set[str]],
        config: RankerConfig | None,
        ease: EASE | None,
        active: np.ndarray | None,
    ) -> None:
        self.config = cfg = config or RankerConfig()
        self.item_ids = list(item_ids)
        self.index = {item: row for row, item in enumerate(self.item_ids)}
        self.n = len(self.item_ids)
        self.vectors = vectors.astype(np.float32)
        self.active = np.ones(self.n, dtype=bool) if active is None else active.astype(bool)
        meta = [items.get(i) for i in self.item_ids]
        self.genres = [{g.lower() for g in m.genres} if m else set() for m in meta]
        self.tags = [{t.lower() for t in m.tags} if m else set() for m in meta]
        self.years = np.array([title_year(m.title) if m else math.nan for m in meta], dtype=np.float64)
        self.pos = {
            u: sorted(((i, t) for i, t in rows if i in self.index), key=lambda p: p[1]) for u, rows in positives.items()
        }
        self.pos = {u: rows for u, rows in self.pos.items() if rows}
        self.seen = dict(seen)
        self.counts = np.zeros(self.n, dtype=np.float32)
        pos_times: list[list[float]] = [[] for _ in range(self.n)]
        for rows in self.pos.values():
            for item, t in rows:
                row = self.index[item]
                self.counts[row] += 1
                pos_times[row].append(t)
        self.pos_times = [np.sort(np.array(t, dtype=np.float64)) for t in pos_times]
        self.first_time = np.array([t[0] if len(t) else math.nan for t in self.pos_times], dtype=np.float64)
        self.rated = self.counts > 0
        lists = [[i for i, _ in rows] for rows in self.pos.values()]
        self.knn = ItemKNN(cfg.knn_neighbours).fit(lists, self.index, self.n)
        self.ease = (
            ease
            if ease is not None
            else EASE(cfg.ease_lambda, max_items=cfg.ease_max_items).fit(lists, self.index, self.n)
        )
        self.transitions = Transitions(cfg.transition_window, cfg.recent_items, cfg.transition_decay).fit(
            lists, self.index, self.n
        )
        #: Popularity as a share (per 10k positives) so the inner and the full train states are comparable.
        self.per_10k = 1e4 / max(1.0, float(self.counts.sum()))
        self.pop_log = np.log1p(self.counts * self.per_10k)

    # -- per user ----------------------------------------------------------------

    def _exclude(self, seen: Iterable[str]) -> np.ndarray:
        mask = ~self.active
        rows = [self.index[i] for i in seen if i in self.index]
        if rows:
            mask[rows] = True
        return mask

    def popular(self, user: str, k: int) -> list[str]:
        return [self.item_ids[r] for r in top_k(self.counts, k, self._exclude(self.seen.get(user, ())))]

    def features(self, user: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidate rows and features of a user of this state (training, offline evaluation)."""
        return self.user_features(self.pos.get(user, []), self.seen.get(user, ()))

    def user_features(
        self, positives: Sequence[tuple[str, float]], seen: Collection[str], exclude: Iterable[str] = ()
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Candidate rows and their feature matrix (len × :data:`FEATURES`); None without a known positive.

        ``positives``: the user's (item, time), oldest first; ``seen``: every item they interacted
        with (never a candidate); ``exclude``: other items that must not be candidates (the service's
        deletions since this state was built). The user's "now" is their newest positive's time.
        """
        cfg = self.config
        known = [(self.index[i], t) for i, t in positives if i in self.index]
        if not known:
            return None
        recent = known[-cfg.profile_items :]
        idx = np.array([r for r, _ in recent])
        times = np.array([t for _, t in recent])
        now = float(times.max())
        w = np.exp(-math.log(2) * (now - times) / (cfg.half_life_days * DAY_S))
        vec = (self.vectors[idx] * w[:, None].astype(np.float32)).sum(axis=0)
        vec /= max(float(np.linalg.norm(vec)), 1e-9)
        text = self.vectors @ vec
        all_idx = [r for r, _ in known]
        ease = self.ease.scores(all_idx, n_items=self.n)
        knn = self.knn.scores(all_idx, n_items=self.n)
        trans = self.transitions.scores(all_idx, n_items=self.n)
        knn_recent = self.knn.scores(all_idx[-cfg.recent_items :], n_items=self.n)
        masked = self._exclude(itertools.chain(seen, exclude))
        masked[all_idx] = True
        k = cfg.per_source
        cand = np.unique(
            np.concatenate(
                [
                    top_k(text, k, masked),
                    top_k(ease, k, masked),
                    top_k(knn, k, masked),
                    top_k(self.counts, k, masked),
                    top_k(text, cfg.new_per_source, masked | self.rated),
                ]
            )
        )
        last = idx[-20:]
        text_max = (self.vectors[cand] @ self.vectors[last].T).max(axis=1)
        recent_pop = np.empty(len(cand), dtype=np.float32)
        before = np.empty(len(cand), dtype=np.float32)
        for j, c in enumerate(cand):
            t = self.pos_times[c]
            hi = np.searchsorted(t, now, side="right")
            before[j] = hi
            recent_pop[j] = hi - np.searchsorted(t, now - cfg.recent_days * DAY_S, side="left")
        genre_counts: Counter[str] = Counter()
        user_tags: set[str] = set()
        for r in idx:
            genre_counts.update(self.genres[r])
            user_tags |= self.tags[r]
        total = max(1, len(idx))
        # Plain Python over a few genres per candidate: np.mean's per-call overhead was a sixth of a request.
        genre = np.array(
            [
                sum(genre_counts[g] for g in self.genres[c]) / (total * len(self.genres[c])) if self.genres[c] else 0.0
                for c in cand
            ]
        )
        tag = np.array([len(self.tags[c] & user_tags) / len(self.tags[c]) if self.tags[c] else 0.0 for c in cand])
        now_year = 1970.0 + now / YEAR_S
        base = {"ease": ease[cand], "knn": knn[cand], "text_match": text[cand], "text_max": text_max}
        base["pop_log"] = self.pop_log[cand]
        x = np.column_stack(
            [
                text[cand],
                text_max,
                _relative(ease[cand]),
                _relative(knn[cand]),
                self.pop_log[cand],
                np.log1p(recent_pop * self.per_10k),
                np.log1p(before * self.per_10k),
                (now - self.first_time[cand]) / DAY_S,
                now_year - self.years[cand],
                genre,
                tag,
                np.full(len(cand), math.log1p(len(known))),
                np.full(len(cand), math.log1p(len(seen))),
                (~self.rated[cand]).astype(np.float64),
                *(_log_rank(base[name]) for name in _NORMALISED),
                *(_zscore(base[name]) for name in _NORMALISED),
                _relative(knn_recent[cand]),
                _relative(trans[cand]),
                np.log1p(trans[cand]),
                _log_rank(trans[cand]),
                _zscore(trans[cand]),
            ]
        ).astype(np.float32)
        return cand, x


def _relative(scores: np.ndarray) -> np.ndarray:
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 0 else scores


def _log_rank(scores: np.ndarray) -> np.ndarray:
    """log1p of each score's rank (0 = best; ties in candidate order)."""
    rank = np.empty(len(scores), dtype=np.float64)
    rank[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return np.log1p(rank)


def _zscore(scores: np.ndarray) -> np.ndarray:
    sd = float(scores.std())
    return (scores - float(scores.mean())) / sd if sd > 0 else np.zeros(len(scores))


@dataclass
class TrainedRanker:
    """A fitted LightGBM LambdaRank model (an ``LGBMRanker`` or a loaded ``Booster``) and its training."""

    model: Any
    config: RankerConfig
    info: dict[str, Any]

    @property
    def booster(self) -> Any:
        return getattr(self.model, "booster_", self.model)

    def importances(self) -> dict[str, float]:
        """Gain importance per feature, as a share of the total."""
        gain = self.booster.feature_importance(importance_type="gain")
        total = float(gain.sum()) or 1.0
        return {name: round(float(g) / total, 4) for name, g in zip(FEATURES, gain, strict=True)}

    def rank(self, state: FeatureState, user: str, k: int) -> list[str]:
        """Top ``k`` candidates by the model; users with no positive get the popular list (the fallback)."""
        got = state.features(user)
        if got is None:
            return state.popular(user, k)
        return [state.item_ids[row] for row, _ in self.top(*got, k)]

    def top(self, cand: np.ndarray, x: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The best ``k`` (row, model score) of :meth:`FeatureState.user_features`'s candidates."""
        # One thread: a few hundred rows per request, and OpenMP workers only contend with the event loop.
        scores = np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64)
        by_score = np.argsort(-scores, kind="stable")
        slots = min(self.config.new_item_slots, k)
        if not slots:
            picked = by_score[:k]
        else:
            # New items (no positive) rarely win on the learned score, which has seen few of them
            # relevant; the reserved slots go to those closest to the user's interest vector.
            new = np.flatnonzero(x[:, FEATURES.index("cold_item")] > 0)
            by_text = new[np.argsort(-x[new, FEATURES.index("text_match")], kind="stable")][:slots]
            reserved = set(by_text.tolist())
            head = [j for j in by_score if j not in reserved][: k - len(by_text)]
            picked = np.array([*head, *by_text], dtype=np.int64)
        return [(int(cand[j]), float(scores[j])) for j in picked]


#: Files of a saved ranker (a folder beside the encoder's weights: ``<model>/<version>/ranker/``).
RANKER_DIR = "ranker"
#: 2: the per-user ranks and z-scores and the new-item candidates; 3: the order features (recent kNN, transitions).
RANKER_FORMAT = 3


class RankerMismatch(ValueError):
    """A saved ranker that cannot be served as is (other features, format or embedding size)."""


def save_ranker(
    trained: TrainedRanker, directory: Path, *, embedding_dim: int, metrics: Mapping[str, Any] | None = None
) -> None:
    """``model.txt`` (LightGBM, best iteration), ``ranker.json`` (features, config, training) and ``metrics.json``."""
    import lightgbm as lgb

    directory.mkdir(parents=True, exist_ok=True)
    trained.booster.save_model(str(directory / "model.txt"))
    meta = {
        "format": RANKER_FORMAT,
        "kind": "lightgbm-lambdarank",
        "lightgbm": lgb.__version__,
        "features": list(FEATURES),
        "config": asdict(trained.config),
        "embedding_dim": embedding_dim,
        "training": trained.info,
        "importances_gain": trained.importances(),
    }
    (directory / "ranker.json").write_text(json.dumps(meta, indent=2, default=float) + "\n", "utf-8")
    (directory / "metrics.json").write_text(json.dumps(dict(metrics or {}), indent=2) + "\n", "utf-8")


def load_ranker(directory: Path, *, embedding_dim: int | None = None) -> TrainedRanker:
    """Load a :func:`save_ranker` folder; :class:`RankerMismatch` when it does not fit this code or encoder."""
    import lightgbm as lgb

    def fail(why: str) -> RankerMismatch:
        return RankerMismatch(f"ranker in {directory}: {why}")

    try:
        meta = json.loads((directory / "ranker.json").read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"unreadable ranker.json ({exc})") from exc
    if meta.get("format") != RANKER_FORMAT:
        raise fail(f"format {meta.get('format')!r}, this code reads {RANKER_FORMAT}")
    if meta.get("features") != list(FEATURES):
        raise fail(f"trained on features {meta.get('features')}, this code computes {list(FEATURES)}")
    if embedding_dim is not None and meta.get("embedding_dim") != embedding_dim:
        raise fail(f"trained with {meta.get('embedding_dim')}-d item vectors, the encoder gives {embedding_dim}")
    known = set(RankerConfig.__dataclass_fields__)
    config = meta.get("config") or {}
    if not isinstance(config, dict) or set(config) - known:
        raise fail(f"unknown config keys {sorted(set(config) - known) if isinstance(config, dict) else config}")
    try:
        booster = lgb.Booster(model_file=str(directory / "model.txt"))
    except (OSError, lgb.basic.LightGBMError) as exc:
        raise fail(f"unreadable model.txt ({exc})") from exc
    if booster.num_feature() != len(FEATURES) or booster.feature_name() != list(FEATURES):
        raise fail(f"model.txt has features {booster.feature_name()}, expected {list(FEATURES)}")
    return TrainedRanker(booster, RankerConfig(**config), dict(meta.get("training") or {}))


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
    state: FeatureState,
    relevant: Mapping[str, set[str]],
    config: RankerConfig | None = None,
    more: Sequence[tuple[FeatureState, Mapping[str, set[str]]]] = (),
) -> TrainedRanker:
    """Fit LambdaRank on ``state`` (the inner train part) against ``relevant`` (its held-out positives).

    ``more``: further (state, held-out positives) query sets stacked into the training data (earlier
    temporal cuts: the inner split alone gives ~500 queries, too few for the trees to beat EASE's own
    ordering). The early-stopping users (``valid_users``) are drawn from ``relevant`` and left out of
    every set, so no query of theirs is trained on.
    """
    import lightgbm as lgb

    cfg = config or state.config
    fit_rel, valid_rel = dict(relevant), {}
    held: set[str] = set()
    if cfg.valid_users > 0:
        users = sorted(relevant)
        np.random.default_rng(cfg.seed).shuffle(users)
        held = set(users[: int(len(users) * cfg.valid_users)])
        fit_rel = {u: r for u, r in relevant.items() if u not in held}
        valid_rel = {u: r for u, r in relevant.items() if u in held}
    x, y, groups, counts = training_data(state, fit_rel)
    info: dict[str, Any] = dict(counts)
    for n, (extra_state, extra_rel) in enumerate(more, start=2):
        ex, ey, eg, ecounts = training_data(extra_state, {u: r for u, r in extra_rel.items() if u not in held})
        x, y, groups = np.concatenate([x, ex]), np.concatenate([y, ey]), [*groups, *eg]
        info[f"set_{n}"] = ecounts
    model = lgb.LGBMRanker(
        objective=cfg.objective,
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
            feature_name=list(FEATURES),
            eval_X=(vx,),
            eval_y=(vy,),
            eval_group=[vgroups],
            eval_at=[10],
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        info = {**info, "valid": vinfo, "best_iteration": int(model.best_iteration_)}
    else:
        model.fit(x, y, group=groups, feature_name=list(FEATURES), eval_at=[10])
    return TrainedRanker(model, cfg, info)


def inner_split(ml: MovieLens, split: Split, fraction: float = 0.2) -> Split:
    """The split every choice is made on: per user the latest ``fraction`` of ``split``'s train part.

    Its item text keeps only the tags written in *its* train part (:func:`split_of`): with the
    outer text, tags of the inner held-out period would leak into the choices.
    """
    return split_of(ml, *temporal_split(split.train, fraction))


def train_on_inner(
    ml: MovieLens, inner: Split, vectors: np.ndarray, config: RankerConfig, encode: Encode | None = None
) -> TrainedRanker:
    """The shipped recipe (``make recommend-model``, and rows (g)-(h) of ``make bench-recommend``).

    State from the inner train part (its time-honest item text embedded as ``vectors``), labels =
    the inner held-out positives; with ``config.training_cuts`` > 1 (and ``encode``, which embeds a
    split's item texts), also the inner split of the inner train part, and so on: each cut is one more
    query per user, from an earlier state.
    """
    state = FeatureState(ml.items_as_of(tag_cutoffs(inner.train)), inner.item_ids, vectors, inner.train, config)
    more: list[tuple[FeatureState, Mapping[str, set[str]]]] = []
    cut = inner
    for _ in range(config.training_cuts - 1):
        if encode is None:
            break
        cut = inner_split(ml, cut)
        cut_state = FeatureState(
            ml.items_as_of(tag_cutoffs(cut.train)), cut.item_ids, encode(cut.texts), cut.train, config
        )
        more.append((cut_state, cut.relevant))
    return train_ranker(state, inner.relevant, config, more)
