"""Exact scoring: seen items are never recommended, cold items rank by text, fallback to popular."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from textpulse.contracts.recs import Interaction
from textpulse.recsys.profile import Profile
from textpulse.recsys.recommender import Recommender, RecommenderConfig
from textpulse.recsys.scoring import Catalogue, HybridWeights, ItemKNN, hybrid, top_k

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def catalogue() -> Catalogue:
    cat = Catalogue(4, capacity=2)  # grows past its capacity
    for name, vec in {
        "space1": [1, 0, 0, 0],
        "space2": [0.9, 0.1, 0, 0],
        "space3": [0.95, 0, 0.05, 0],
        "romance1": [0, 1, 0, 0],
        "romance2": [0, 0.9, 0.1, 0],
    }.items():
        cat.upsert(name, name.title(), np.array(vec, dtype=np.float32))
    return cat


def like(profile: Profile, item: str, day: int) -> None:
    profile.apply(Interaction(user_id=profile.user_id, item_id=item, action="like", time=T0 + timedelta(days=day)))


def test_top_k_excludes_and_orders() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [1, 3]
    assert top_k(scores, 3, np.array([False, True, False, False])).tolist() == [3, 2, 0]
    assert top_k(scores, 10, np.array([True, True, True, False])).tolist() == [3]


def test_seen_items_are_never_recommended() -> None:
    cat = catalogue()
    rec = Recommender(cat, RecommenderConfig(weights=HybridWeights(text=1.0, cf=0.0, pop=0.0)))
    p = Profile("u")
    like(p, "space1", 1)
    p.apply(Interaction(user_id="u", item_id="space2", action="view", time=T0 + timedelta(days=2)))
    items, fallback = rec.recommend(p, 10)
    ids = [s.item_id for s in items]
    assert not fallback
    assert "space1" not in ids
    assert "space2" not in ids
    assert ids[0] == "space3"
    assert items[0].reason == "similar to Space1"
    assert len(ids) == 3


def test_deleted_items_are_not_recommended() -> None:
    cat = catalogue()
    rec = Recommender(cat)
    p = Profile("u")
    like(p, "space1", 1)
    assert cat.remove("space3")
    assert "space3" not in [s.item_id for s in rec.recommend(p, 10)[0]]


def test_unknown_user_gets_popular_items() -> None:
    cat = catalogue()
    rec = Recommender(cat)
    for item, n in {"romance1": 5, "space2": 3, "space1": 1}.items():
        rec.count_positive(item, n)
    rec.fit_cf([])
    items, fallback = rec.recommend(None, 2)
    assert fallback
    assert [s.item_id for s in items] == ["romance1", "space2"]
    assert items[0].reason == "popular with other users"


def test_item_knn_cosine() -> None:
    index = {"a": 0, "b": 1, "c": 2}
    knn = ItemKNN(10).fit([["a", "b"], ["a", "b"], ["a", "c"]], index, 3)
    # a: 3 users, b: 2, c: 1; co(a,b) = 2 → 2/sqrt(6); co(a,c) = 1 → 1/sqrt(3); co(b,c) = 0.
    sim = knn.sim.toarray()
    assert np.isclose(sim[0, 1], 2 / np.sqrt(6))
    assert np.isclose(sim[0, 2], 1 / np.sqrt(3))
    assert sim[1, 2] == 0
    assert sim[0, 0] == 0
    assert np.allclose(knn.scores([1], n_items=4), [2 / np.sqrt(6), 0, 0, 0])


def test_hybrid_scales_cf_to_the_users_best() -> None:
    out = hybrid(
        np.array([0.5, 0.1], dtype=np.float32),
        np.array([4.0, 2.0], dtype=np.float32),
        np.array([0.0, 1.0], dtype=np.float32),
        HybridWeights(text=1.0, cf=0.5, pop=0.2),
    )
    assert np.allclose(out, [0.5 + 0.5, 0.1 + 0.25 + 0.2])


def test_transitions_count_what_came_next_within_the_window() -> None:
    from textpulse.recsys.scoring import Transitions

    index = {i: r for r, i in enumerate("abcde")}
    t = Transitions(window=2, last=2, decay=0.5).fit([["a", "b", "c"], ["a", "b"], ["e", "zz"]], index, 5)
    m = t.matrix.toarray()
    counts = np.array([2, 2, 1, 0, 1], dtype=np.float64)
    # a -> b twice (d = 1), a -> c once at d = 2 (weight 1/2), b -> c once; nothing runs backwards.
    assert m[0, 1] == np.float32(2 / np.sqrt(2 * 2))
    assert m[0, 2] == np.float32(0.5 / np.sqrt(2 * 1))
    assert m[1, 2] == np.float32(1 / np.sqrt(counts[1] * counts[2]))
    assert m[1, 0] == 0.0
    assert m[2].sum() == 0.0
    assert m[4].sum() == 0.0  # "zz" is not in the catalogue: no transition out of "e"
    # The newest of the last two positives weighs 1, the one before it 0.5; older ones are not read.
    s = t.scores([4, 0, 1], n_items=5)
    assert s[2] == np.float32(m[1, 2] + 0.5 * m[0, 2])
    assert s[1] == np.float32(0.5 * m[0, 1])
    assert t.scores([], n_items=5).sum() == 0.0
    assert Transitions().fit([], index, 5).scores([0, 1], n_items=5).sum() == 0.0


def test_transitions_reject_a_bad_setting() -> None:
    import pytest

    from textpulse.recsys.scoring import Transitions

    with pytest.raises(ValueError, match="decay"):
        Transitions(decay=0.0)
    with pytest.raises(ValueError, match="window"):
        Transitions(window=0)
