"""Ranking metrics with binary relevance: Recall@k and nDCG@k.

Recall@k = |top-k ∩ relevant| / |relevant|. nDCG@k = DCG@k / IDCG@k with
gain 1 for a relevant item at rank r (1-based) discounted by 1/log2(r + 1);
IDCG@k puts min(k, |relevant|) relevant items first. Users without relevant
items are left out of the means (the metric is undefined for them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence


def recall_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant items found in the first ``k``."""
    if not relevant:
        msg = "recall is undefined without relevant items"
        raise ValueError(msg)
    return len(set(ranked[:k]) & relevant) / len(relevant)


def ndcg_at_k(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` (binary gains)."""
    if not relevant:
        msg = "nDCG is undefined without relevant items"
        raise ValueError(msg)
    dcg = sum(1.0 / math.log2(rank + 2) for rank, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(k, len(relevant))))
    return dcg / ideal


def mean_metrics(
    rankings: Mapping[str, Sequence[str]], relevant: Mapping[str, set[str]], k: int = 10
) -> dict[str, float]:
    """Mean Recall@k and nDCG@k over the users of ``relevant`` that have relevant items."""
    users: Iterable[str] = [u for u, rel in relevant.items() if rel]
    recalls, ndcgs = [], []
    for user in users:
        ranked = rankings.get(user, ())
        recalls.append(recall_at_k(ranked, relevant[user], k))
        ndcgs.append(ndcg_at_k(ranked, relevant[user], k))
    n = len(recalls)
    return {
        f"recall@{k}": sum(recalls) / n if n else 0.0,
        f"ndcg@{k}": sum(ndcgs) / n if n else 0.0,
        "users": float(n),
    }
