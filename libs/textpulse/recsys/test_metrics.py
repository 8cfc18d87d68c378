"""Recall@k and nDCG@k against hand-computed values."""

from __future__ import annotations

import math

import pytest

from textpulse.recsys.metrics import mean_metrics, ndcg_at_k, recall_at_k


def test_recall_hand_computed() -> None:
    # 2 of the 4 relevant items are in the top 3.
    assert recall_at_k(["a", "x", "b", "c"], {"a", "b", "c", "d"}, 3) == pytest.approx(0.5)
    assert recall_at_k(["x", "y"], {"a"}, 2) == 0.0
    assert recall_at_k(["a"], {"a"}, 10) == 1.0


def test_ndcg_hand_computed() -> None:
    # Relevant at ranks 1 and 3 out of 2 relevant: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3).
    expected = 1.5 / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}, 3) == pytest.approx(expected)
    assert ndcg_at_k(["a", "b"], {"a", "b"}, 2) == pytest.approx(1.0)
    # A single relevant item at rank 2: 1/log2(3) ≈ 0.6309.
    assert ndcg_at_k(["x", "a"], {"a"}, 10) == pytest.approx(0.6309297535714575)
    # Cut-off: relevant below k counts nothing, and IDCG uses min(k, |relevant|).
    assert ndcg_at_k(["x", "y", "a"], {"a", "b", "c"}, 2) == 0.0


def test_undefined_without_relevant_items() -> None:
    with pytest.raises(ValueError, match="undefined"):
        recall_at_k(["a"], set(), 1)
    with pytest.raises(ValueError, match="undefined"):
        ndcg_at_k(["a"], set(), 1)


def test_mean_skips_users_without_relevant_items() -> None:
    rankings = {"u1": ["a", "b"], "u2": ["x", "y"], "u3": ["q"]}
    relevant = {"u1": {"a"}, "u2": {"y"}, "u3": set()}
    out = mean_metrics(rankings, relevant, k=2)
    assert out["users"] == 2
    assert out["recall@2"] == pytest.approx(1.0)
    assert out["ndcg@2"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
