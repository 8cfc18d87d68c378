"""User profiles: recent positives (time-decayed interest vector) and the items a user already saw.

The state is item ids and times, not vectors: the interest vector is computed
from the current catalogue vectors, so it follows a new encoder version and an
item that arrives after the interaction still counts once it is embedded.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from cachetools import LRUCache

from textpulse.contracts.recs import Interaction, PositiveRef, UserProfileState

#: Weight of a positive by action; ratings scale with how far above the threshold they are.
ACTION_WEIGHT = {"like": 1.0, "purchase": 1.5}


def positive_weight(interaction: Interaction) -> float:
    """How much one positive interaction pulls the profile (rating 4 → 1.0, 5 → 1.5)."""
    if interaction.action == "rate" and interaction.rating is not None:
        return 1.0 + 0.5 * max(0.0, min(1.0, interaction.rating - 4.0))
    return ACTION_WEIGHT.get(interaction.action, 1.0)


@dataclass
class Profile:
    """One user's profile; ``max_positives`` / ``max_seen`` bound memory and the changelog record."""

    user_id: str
    max_positives: int = 200
    max_seen: int = 5000
    positives: deque[PositiveRef] = field(default_factory=deque)
    #: Bounded to the ``max_seen`` most recently seen items (LRU); iterates oldest first (see :meth:`_see`).
    seen: LRUCache[str, None] = field(default_factory=lambda: LRUCache(maxsize=5000))
    interactions: int = 0

    def __post_init__(self) -> None:
        if self.seen.maxsize != self.max_seen:
            old, self.seen = self.seen, LRUCache(maxsize=self.max_seen)
            for item in list(old)[-self.max_seen :]:
                self.seen[item] = None

    def _see(self, item_id: str) -> None:
        """Mark ``item_id`` as the most recently seen; the least recent one beyond ``max_seen`` is evicted.

        Delete-then-insert keeps the cache's iteration order (its dict's insertion order) equal to the
        recency order, which :meth:`to_state` persists: re-setting a present key alone would move it in
        the LRU order only, and a restored profile would then evict it too early.
        """
        if item_id in self.seen:
            del self.seen[item_id]
        self.seen[item_id] = None

    def apply(self, interaction: Interaction) -> bool:
        """Apply one interaction; False when it changed nothing (a redelivered duplicate)."""
        ts = interaction.time.timestamp()
        changed = interaction.item_id not in self.seen
        self._see(interaction.item_id)
        if interaction.is_positive():
            duplicate = any(p.item_id == interaction.item_id and p.time == ts for p in self.positives)
            if not duplicate:
                self.positives.append(
                    PositiveRef(item_id=interaction.item_id, time=ts, weight=positive_weight(interaction))
                )
                # Out-of-order arrivals (several partitions, replays) still decay by event time.
                if len(self.positives) > 1 and self.positives[-2].time > ts:
                    self.positives = deque(sorted(self.positives, key=lambda p: p.time))
                while len(self.positives) > self.max_positives:
                    self.positives.popleft()
                changed = True
        if changed:
            self.interactions += 1
        return changed

    def positive_items(self) -> list[str]:
        return [p.item_id for p in self.positives]

    def decay_weights(self, half_life_s: float, last: int) -> list[tuple[str, float]]:
        """(item, weight) of the ``last`` positives, halved every ``half_life_s`` before the newest."""
        recent = list(self.positives)[-last:]
        if not recent:
            return []
        newest = max(p.time for p in recent)
        return [(p.item_id, p.weight * math.exp(-math.log(2) * (newest - p.time) / half_life_s)) for p in recent]

    def to_state(self) -> UserProfileState:
        return UserProfileState(
            user_id=self.user_id,
            positives=list(self.positives),
            seen=list(self.seen),
            interactions=self.interactions,
            updated_at=datetime.now(UTC),
        )

    @classmethod
    def from_state(cls, state: UserProfileState, *, max_positives: int = 200, max_seen: int = 5000) -> Profile:
        return cls(
            user_id=state.user_id,
            max_positives=max_positives,
            max_seen=max_seen,
            positives=deque(sorted(state.positives, key=lambda p: p.time)[-max_positives:]),
            seen=_lru(state.seen[-max_seen:], max_seen),
            interactions=state.interactions,
        )


def _lru(items: list[str], maxsize: int) -> LRUCache[str, None]:
    cache: LRUCache[str, None] = LRUCache(maxsize=maxsize)
    for item in items:
        cache[item] = None
    return cache


def interest_vector(weighted: list[tuple[str, float]], index: dict[str, int], vectors: np.ndarray) -> np.ndarray | None:
    """L2-normalised weighted mean of the item vectors that are in the catalogue (None when none is)."""
    rows = [(index[item], w) for item, w in weighted if item in index]
    if not rows:
        return None
    idx = np.fromiter((r for r, _ in rows), dtype=np.int64, count=len(rows))
    w = np.fromiter((w for _, w in rows), dtype=np.float32, count=len(rows))
    vec = (vectors[idx] * w[:, None]).sum(axis=0)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else None
