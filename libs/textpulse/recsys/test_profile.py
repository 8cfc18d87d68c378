"""Profile updates: positives, seen items, idempotence, decay, bounds, changelog round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from textpulse.contracts.recs import Interaction
from textpulse.recsys.profile import Profile, interest_vector

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def act(item: str, action: str = "like", days: float = 0, rating: float | None = None) -> Interaction:
    return Interaction(user_id="u", item_id=item, action=action, rating=rating, time=T0 + timedelta(days=days))  # type: ignore[arg-type]


def test_positive_and_non_positive_interactions() -> None:
    p = Profile("u")
    assert p.apply(act("a", "like"))
    assert p.apply(act("b", "view"))
    assert p.apply(act("c", "rate", rating=3.5))
    assert p.apply(act("d", "rate", rating=4.0))
    assert p.positive_items() == ["a", "d"]
    assert list(p.seen) == ["a", "b", "c", "d"]
    assert p.interactions == 4


def test_redelivered_interaction_changes_nothing() -> None:
    p = Profile("u")
    assert p.apply(act("a", days=1))
    assert not p.apply(act("a", days=1))
    assert p.positive_items() == ["a"]
    assert p.interactions == 1
    # The same item liked again later is a new positive (renewed interest).
    assert p.apply(act("a", days=5))
    assert p.positive_items() == ["a", "a"]


def test_out_of_order_positives_are_kept_in_time_order() -> None:
    p = Profile("u")
    p.apply(act("late", days=10))
    p.apply(act("early", days=1))
    assert p.positive_items() == ["early", "late"]


def test_decay_halves_per_half_life() -> None:
    p = Profile("u")
    p.apply(act("old", days=0))
    p.apply(act("new", days=30))
    weights = dict(p.decay_weights(half_life_s=30 * 86400, last=10))
    assert weights["new"] == pytest.approx(1.0)
    assert weights["old"] == pytest.approx(0.5)
    # Ratings weigh by strength: 5 stars = 1.5, 4 stars = 1.0.
    q = Profile("u")
    q.apply(act("five", "rate", rating=5.0))
    [(item, weight)] = q.decay_weights(86400, 10)
    assert item == "five"
    assert weight == pytest.approx(1.5)


def test_bounds() -> None:
    p = Profile("u", max_positives=3, max_seen=4)
    for i in range(6):
        p.apply(act(f"i{i}", days=i))
    assert p.positive_items() == ["i3", "i4", "i5"]
    assert list(p.seen) == ["i2", "i3", "i4", "i5"]


def test_changelog_round_trip() -> None:
    p = Profile("u")
    p.apply(act("a", days=1))
    p.apply(act("b", "view", days=2))
    state = p.to_state()
    back = Profile.from_state(state.model_validate_json(state.model_dump_json()))
    assert back.positive_items() == ["a"]
    assert list(back.seen) == ["a", "b"]
    assert back.interactions == 2


def test_interest_vector_is_the_decayed_mean() -> None:
    vectors = np.eye(3, dtype=np.float32)
    index = {"x": 0, "y": 1, "z": 2}
    vec = interest_vector([("x", 1.0), ("y", 0.5), ("missing", 9.0)], index, vectors)
    assert vec is not None
    expected = np.array([1.0, 0.5, 0.0]) / np.linalg.norm([1.0, 0.5])
    assert np.allclose(vec, expected)
    assert interest_vector([("missing", 1.0)], index, vectors) is None


def test_seen_is_an_lru_whose_order_survives_the_changelog() -> None:
    p = Profile("u", max_seen=3)
    for item in ("a", "b", "c"):
        p.apply(act(item, "view"))
    p.apply(act("a", "click"))  # re-seen: now the most recent
    p.apply(act("d", "view"))  # evicts the least recent, b
    assert list(p.seen) == ["c", "a", "d"]
    back = Profile.from_state(p.to_state(), max_seen=3)
    back.apply(act("e", "view"))
    assert list(back.seen) == ["a", "d", "e"]
