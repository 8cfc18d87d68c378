"""Contracts of the recommendation service: catalogue items, interactions, profiles, recommendations."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BeforeValidator, Field, StringConstraints

from .events import SCHEMA_VERSION, Identifier, ModelRef, ShortLabel, WireModel, _normalise_before

Title = Annotated[str, BeforeValidator(_normalise_before), StringConstraints(min_length=1, max_length=500)]

#: Actions a client can report; which of them count as positive is decided by :func:`is_positive`.
Action = Literal["view", "click", "like", "dislike", "rate", "purchase"]

#: A rating at or above this counts as a positive interaction (MovieLens convention used here).
POSITIVE_RATING = 4.0


class Item(WireModel):
    """One catalogue item (value of the compacted ``items`` topic, keyed by ``item_id``; null value deletes)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    item_id: Identifier = Field(description="Item id (also the Kafka key).")
    title: Title = Field(description="Title shown to users.")
    genres: list[ShortLabel] = Field(default_factory=list, max_length=64, description="Genres / categories.")
    tags: list[ShortLabel] = Field(default_factory=list, max_length=256, description="Free-form tags.")
    description: str | None = Field(None, max_length=4000, description="Optional longer text.")

    def text(self) -> str:
        """The text the encoder embeds: title, genres, tags (and description when present)."""
        parts = [self.title]
        if self.genres:
            parts.append("Genres: " + ", ".join(self.genres))
        if self.tags:
            parts.append("Tags: " + ", ".join(dict.fromkeys(self.tags)))
        if self.description:
            parts.append(self.description)
        return ". ".join(parts)


class Interaction(WireModel):
    """A user acting on an item (value of ``user.interactions``, keyed by ``user_id``)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    event_id: Identifier | None = Field(None, description="Unique id; a redelivered interaction is applied once.")
    user_id: Identifier = Field(description="User id (also the Kafka key).")
    item_id: Identifier = Field(description="Item acted on.")
    action: Action = Field(description="view | click | like | dislike | rate | purchase.")
    rating: float | None = Field(None, ge=0, le=10, description="Rating for action=rate (≥ 4 is positive).")
    time: AwareDatetime = Field(description="When the user acted.")

    def is_positive(self) -> bool:
        """like, purchase, or a rating ≥ 4: evidence of interest that moves the profile."""
        if self.action in {"like", "purchase"}:
            return True
        return self.action == "rate" and self.rating is not None and self.rating >= POSITIVE_RATING


class PositiveRef(WireModel):
    """One positive interaction kept in a profile."""

    item_id: Identifier
    time: float = Field(description="Unix seconds of the interaction.")
    weight: float = Field(1.0, gt=0, description="Strength (1 for a like; rating-scaled for ratings).")


class UserProfileState(WireModel):
    """Changelog record of one user's profile (compacted ``recs.profiles``, keyed by ``user_id``).

    Model-independent on purpose: item ids and times, not vectors, so a new encoder
    version recomputes every profile from the catalogue without a migration.
    """

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    user_id: Identifier
    positives: list[PositiveRef] = Field(default_factory=list, description="Recent positives, oldest first.")
    seen: list[Identifier] = Field(default_factory=list, description="Items the user interacted with (excluded).")
    interactions: int = Field(0, ge=0, description="Interactions applied so far.")
    updated_at: AwareDatetime


class ScoredItem(WireModel):
    """One recommended item."""

    item_id: Identifier
    score: float = Field(description="Hybrid score (higher is better; comparable within one list).")
    reason: str = Field(max_length=200, description="Short human-readable reason.")


class Recommendations(WireModel):
    """Top-k items for a user (value of ``recs.scores``, keyed by ``user_id``)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    user_id: Identifier
    items: list[ScoredItem] = Field(description="Best first.")
    model: ModelRef = Field(description="Encoder that embedded the items.")
    popular_fallback: bool = Field(False, description="True when the user has no profile yet: popular items.")
    generated_at: AwareDatetime
