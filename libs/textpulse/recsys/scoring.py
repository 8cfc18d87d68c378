"""Candidate scoring: exact search over item vectors, item-kNN collaborative filtering, popularity, hybrid.

Exact search is one matrix-vector product over the catalogue (10k items × 384
dims ≈ 4 M multiply-adds, about a millisecond); for catalogues where that is
too slow the candidate step moves to Elasticsearch ``dense_vector`` kNN (see
``services/recommend/README.md``) and only the candidates are scored here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse


class Catalogue:
    """Item ids, titles and L2-normalised vectors in one growing matrix; deletions are masked."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.titles: list[str] = []
        self.index: dict[str, int] = {}
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._active = np.zeros(capacity, dtype=bool)
        #: Bumped on every change, so caches of scores and recommendations know when to drop.
        self.version = 0

    def __len__(self) -> int:
        return int(self._active[: len(self.ids)].sum())

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self.ids)]

    @property
    def active(self) -> np.ndarray:
        return self._active[: len(self.ids)]

    def upsert(self, item_id: str, title: str, vector: np.ndarray) -> None:
        norm = float(np.linalg.norm(vector))
        vec = (vector / norm if norm > 0 else vector).astype(np.float32)
        row = self.index.get(item_id)
        if row is None:
            row = len(self.ids)
            if row == len(self._vectors):
                self._vectors = np.concatenate([self._vectors, np.zeros_like(self._vectors)])
                self._active = np.concatenate([self._active, np.zeros_like(self._active)])
            self.ids.append(item_id)
            self.titles.append(title)
            self.index[item_id] = row
        self.titles[row] = title
        self._vectors[row] = vec
        self._active[row] = True
        self.version += 1

    def remove(self, item_id: str) -> bool:
        row = self.index.get(item_id)
        if row is None or not self._active[row]:
            return False
        self._active[row] = False
        self.version += 1
        return True


def positives_matrix(
    positives: Iterable[Sequence[str]], index: Mapping[str, int], n_items: int, dtype: type[np.floating[Any]]
) -> sparse.csr_matrix:
    """Binary user x item matrix: row u has a 1 for each catalogue item (``index``) among user u's positives."""
    rows, cols = [], []
    for user, items in enumerate(positives):
        for item in set(items):
            col = index.get(item)
            if col is not None:
                rows.append(user)
                cols.append(col)
    n_users = (max(rows) + 1) if rows else 0
    return sparse.csr_matrix((np.ones(len(rows), dtype=dtype), (rows, cols)), shape=(n_users, n_items))


class ItemKNN:
    """Item-item cosine similarity over binary user×item positives, pruned to ``neighbours`` per item."""

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours
        self.sim: sparse.csr_matrix = sparse.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, positives: Iterable[Sequence[str]], index: Mapping[str, int], n_items: int) -> ItemKNN:
        x = positives_matrix(positives, index, n_items, np.float32)
        counts = np.asarray(x.sum(axis=0)).ravel()
        co = (x.T @ x).tocsr().astype(np.float32)
        co.setdiag(0)
        co.eliminate_zeros()
        norm = np.sqrt(np.maximum(counts, 1.0)).astype(np.float32)
        co = sparse.diags(1.0 / norm) @ co @ sparse.diags(1.0 / norm)
        self.sim = _top_per_row(co.tocsr(), self.neighbours)
        return self

    def scores(
        self, items: Sequence[int], weights: Sequence[float] | None = None, n_items: int | None = None
    ) -> np.ndarray:
        """Sum of similarities of every item to the user's (weighted) items."""
        n = n_items if n_items is not None else self.sim.shape[0]
        out = np.zeros(n, dtype=np.float32)
        valid = [(i, w) for i, w in zip(items, weights or [1.0] * len(items), strict=True) if i < self.sim.shape[0]]
        if not valid:
            return out
        idx = np.array([i for i, _ in valid])
        w = np.array([w for _, w in valid], dtype=np.float32)
        row = np.asarray(self.sim[idx].T @ w).ravel()
        m = min(n, row.shape[0])
        out[:m] = row[:m]
        return out


class Transitions:
    """What users liked *next*: item → later-item counts within ``window`` positives of each user's time order.

    ``C[i, j]`` sums ``1 / d`` over every user whose positive ``j`` came ``d ≤ window`` positives after
    ``i``; the scores use ``C / sqrt(count_i · count_j)`` (a popular item precedes everything). A user's
    score of every item is the sum of the rows of their last ``last`` positives, the newest weighted 1
    and each older one ``decay`` times the next. Item-kNN and EASE see a user's positives as a set;
    a temporal split asks what comes next, and on the MovieLens dev split this order lifted the ranker
    by ~0.007 nDCG@10 (services/recommend/README.md).
    """

    def __init__(self, window: int = 5, last: int = 10, decay: float = 0.7) -> None:
        if window < 1 or last < 1 or not 0 < decay <= 1:
            msg = f"window {window} and last {last} must be >= 1, decay {decay} in (0, 1]"
            raise ValueError(msg)
        self.window, self.last, self.decay = window, last, decay
        self.matrix: sparse.csr_matrix = sparse.csr_matrix((0, 0), dtype=np.float32)

    def fit(self, sequences: Iterable[Sequence[str]], index: Mapping[str, int], n_items: int) -> Transitions:
        """``sequences``: each user's positives, oldest first (items outside ``index`` are skipped)."""
        src: list[np.ndarray] = []
        dst: list[np.ndarray] = []
        val: list[np.ndarray] = []
        counts = np.zeros(n_items, dtype=np.float64)
        for seq in sequences:
            rows = np.array([index[i] for i in seq if i in index], dtype=np.int64)
            np.add.at(counts, rows, 1.0)
            for d in range(1, min(self.window, len(rows) - 1) + 1):
                src.append(rows[:-d])
                dst.append(rows[d:])
                val.append(np.full(len(rows) - d, 1.0 / d))
        if src:
            c = sparse.csr_matrix(
                (np.concatenate(val), (np.concatenate(src), np.concatenate(dst))), shape=(n_items, n_items)
            )
            norm = sparse.diags(1.0 / np.sqrt(np.maximum(counts, 1.0)))
            self.matrix = (norm @ c @ norm).tocsr().astype(np.float32)
        else:
            self.matrix = sparse.csr_matrix((n_items, n_items), dtype=np.float32)
        return self

    def scores(self, items: Sequence[int], n_items: int | None = None) -> np.ndarray:
        """Per catalogue row, the decayed sum of the transitions out of the user's last positives (oldest first)."""
        n = n_items if n_items is not None else self.matrix.shape[0]
        out = np.zeros(n, dtype=np.float32)
        rows = np.asarray([i for i in items if 0 <= i < self.matrix.shape[0]][-self.last :], dtype=np.int64)
        if not len(rows):
            return out
        w = (self.decay ** np.arange(len(rows))[::-1]).astype(np.float32)
        row = np.asarray(self.matrix[rows].T @ w).ravel()
        m = min(n, row.shape[0])
        out[:m] = row[:m]
        return out


class EASE:
    """EASE (Steck 2019): closed-form item-item weights over binary user×item positives.

    ``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and ``diag(B) = 0``; a user's
    score of every item is the sum of ``B``'s rows of their items. Only items with at
    least one positive enter the inverse (the others have zero rows and columns), so
    the dense solve is over the items users interacted with, not the whole catalogue.
    """

    def __init__(self, lam: float = 500.0, max_items: int | None = None) -> None:
        self.lam = lam
        #: Bound on the dense solve (cubic in its items): only the ``max_items`` most popular items enter it.
        self.max_items = max_items
        self.weights: np.ndarray = np.zeros((0, 0), dtype=np.float32)
        #: Catalogue row of each column of ``weights``; ``col`` maps a catalogue row back (-1: no positive).
        self.used: np.ndarray = np.zeros(0, dtype=np.int64)
        self.col: np.ndarray = np.zeros(0, dtype=np.int64)

    def fit(self, positives: Iterable[Sequence[str]], index: Mapping[str, int], n_items: int) -> EASE:
        from scipy import linalg

        x = positives_matrix(positives, index, n_items, np.float64)
        counts = np.asarray(x.sum(axis=0)).ravel()
        self.used = np.flatnonzero(counts > 0)
        if self.max_items is not None and len(self.used) > self.max_items:
            keep = np.argsort(-counts[self.used], kind="stable")[: self.max_items]
            self.used = np.sort(self.used[keep])
        self.col = np.full(n_items, -1, dtype=np.int64)
        self.col[self.used] = np.arange(len(self.used))
        if not len(self.used):
            self.weights = np.zeros((0, 0), dtype=np.float32)
            return self
        xu = x[:, self.used]
        gram = (xu.T @ xu).toarray()
        gram[np.diag_indices_from(gram)] += self.lam
        p = linalg.inv(gram, overwrite_a=True, check_finite=False)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        # C order: scoring gathers rows, and scipy's inverse comes back in Fortran order (a strided row
        # gather was most of a ranker request).
        self.weights = np.ascontiguousarray(b, dtype=np.float32)
        return self

    def scores(
        self, items: Sequence[int], weights: Sequence[float] | None = None, n_items: int | None = None
    ) -> np.ndarray:
        """Sum of ``B``'s rows of the user's (weighted) items, per catalogue row (0 for items without positives)."""
        n = n_items if n_items is not None else len(self.col)
        out = np.zeros(n, dtype=np.float32)
        # Vectorised: this runs per request in the service (the ranker's EASE feature).
        rows = np.asarray(items, dtype=np.int64)
        w = np.ones(len(rows), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        if len(w) != len(rows):
            msg = f"{len(rows)} items but {len(w)} weights"
            raise ValueError(msg)
        inside = rows < len(self.col)
        cols = np.full(len(rows), -1, dtype=np.int64)
        cols[inside] = self.col[rows[inside]]
        known = cols >= 0
        if not known.any():
            return out
        row = self.weights[cols[known]].T @ w[known]  # gemv on the transposed view: faster than w @ M here
        keep = self.used < n
        out[self.used[keep]] = row[keep]
        return out


def _top_per_row(matrix: sparse.csr_matrix, k: int) -> sparse.csr_matrix:
    """Keep the ``k`` largest entries of each row (the usual neighbourhood pruning of item-kNN)."""
    indptr, indices, data = [0], [], []
    for r in range(matrix.shape[0]):
        start, end = matrix.indptr[r], matrix.indptr[r + 1]
        vals, cols = matrix.data[start:end], matrix.indices[start:end]
        if len(vals) > k:
            keep = np.argpartition(-vals, k)[:k]
            vals, cols = vals[keep], cols[keep]
        indices.extend(cols.tolist())
        data.extend(vals.tolist())
        indptr.append(len(indices))
    return sparse.csr_matrix((np.array(data, dtype=np.float32), indices, indptr), shape=matrix.shape)


def popularity_prior(counts: np.ndarray) -> np.ndarray:
    """log(1 + positives) scaled to [0, 1]."""
    top = float(counts.max()) if counts.size else 0.0
    if top <= 0:
        return np.zeros_like(counts, dtype=np.float32)
    prior: np.ndarray = (np.log1p(counts) / math.log1p(top)).astype(np.float32)
    return prior


@dataclass(frozen=True)
class HybridWeights:
    """Weights of the three scores; each score is scaled to about [0, 1] before mixing."""

    text: float = 2.0
    cf: float = 1.0
    pop: float = 0.15


def hybrid(
    text: np.ndarray | None, cf: np.ndarray | None, pop: np.ndarray | None, weights: HybridWeights
) -> np.ndarray:
    """Weighted sum: cosine as is, CF divided by the user's best CF score, popularity prior."""
    parts = [a for a in (text, cf, pop) if a is not None]
    out = np.zeros(parts[0].shape[0] if parts else 0, dtype=np.float32)
    if text is not None and weights.text:
        out += weights.text * text
    if cf is not None and weights.cf:
        top = float(cf.max()) if cf.size else 0.0
        if top > 0:
            out += weights.cf * (cf / top)
    if pop is not None and weights.pop:
        out += weights.pop * pop
    return out


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ``exclude`` is a boolean mask of rows never returned."""
    s = scores.copy() if exclude is not None else scores
    if exclude is not None:
        s[exclude] = -np.inf
    k = min(k, int(np.isfinite(s).sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part], kind="stable")]
