"""MovieLens (``movielens_small``) as items with text and time-ordered interactions, plus temporal splits.

The shared copy already lacks each user's latest 20% of ratings (the withheld
test split); :func:`temporal_split` cuts a dev split the same way from what is
left: per user, the latest ``fraction`` of ratings by timestamp.

Tags are part of the item text, and a user tags the films they watch: a tag
written in a user's held-out period tells the text model about a held-out
interaction. ``tags.csv`` covers every period (it was not cut with the
ratings), so evaluation and fine-tuning build item text with
:meth:`MovieLens.items_as_of` and :func:`tag_cutoffs` of the train part: a tag
counts only when its author wrote it no later than their latest train rating.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from textpulse.contracts.recs import POSITIVE_RATING, Item

DATASET = "movielens_small"
LICENCE = "MovieLens (GroupLens) research-only licence: evaluation and research use only."
#: Tags per item in the item text.
MAX_TAGS = 20


@dataclass(frozen=True, slots=True)
class Rating:
    """One rating event."""

    user: str
    item: str
    rating: float
    time: float

    @property
    def positive(self) -> bool:
        return self.rating >= POSITIVE_RATING


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag a user put on an item, with its time."""

    user: str
    item: str
    tag: str
    time: float


@dataclass(frozen=True)
class MovieLens:
    """Items (with text), ratings ordered by time and the tags behind the item text.

    ``items`` carries every tag (the catalogue as published, for live use);
    evaluation and training use :meth:`items_as_of` with the cut-offs of their train part.
    """

    items: dict[str, Item]
    ratings: list[Rating]
    tags: list[Tag] = field(default_factory=list)

    def items_as_of(self, cutoffs: Mapping[str, float]) -> dict[str, Item]:
        """The items with only the tags written before their author's cut-off (see :func:`item_tags`)."""
        kept = item_tags(self.tags, cutoffs)
        return {i: item.model_copy(update={"tags": kept.get(i, [])[:MAX_TAGS]}) for i, item in self.items.items()}


def data_dir() -> Path:
    """``TEXTPULSE_DATA_DIR`` (default ``../shared/datasets`` next to the repository)."""
    default = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
    return Path(os.environ.get("TEXTPULSE_DATA_DIR", str(default)))


def load_tags(directory: Path) -> list[Tag]:
    """``tags.csv`` in file order (non-empty tags, at most 128 characters)."""
    with (directory / "tags.csv").open(encoding="utf-8", newline="") as fh:
        rows = [
            Tag(r["userId"], r["movieId"], r["tag"].strip()[:128], float(r["timestamp"])) for r in csv.DictReader(fh)
        ]
    return [t for t in rows if t.tag]


def tag_cutoffs(train: list[Rating]) -> dict[str, float]:
    """Per user, the time of their latest train rating: later tags may describe held-out interactions."""
    out: dict[str, float] = {}
    for r in train:
        out[r.user] = max(out.get(r.user, r.time), r.time)
    return out


def item_tags(tags: list[Tag], cutoffs: Mapping[str, float] | None = None) -> dict[str, list[str]]:
    """Distinct tags per item (case-insensitive, first spelling kept).

    With ``cutoffs`` a tag is kept only when its author has a cut-off and wrote
    it at or before it; users with no train rating have no cut-off, so their
    tags are dropped (nothing places them in the train period).
    """
    out: dict[str, list[str]] = defaultdict(list)
    for t in tags:
        if cutoffs is not None and not (t.user in cutoffs and t.time <= cutoffs[t.user]):
            continue
        if t.tag.lower() not in {x.lower() for x in out[t.item]}:
            out[t.item].append(t.tag)
    return dict(out)


def load_items(directory: Path, tags: list[Tag] | None = None) -> dict[str, Item]:
    """Movies with title, genres and the distinct tags users gave them (every tag: see the module docstring)."""
    by_item = item_tags(load_tags(directory) if tags is None else tags)
    items: dict[str, Item] = {}
    with (directory / "movies.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            items[row["movieId"]] = Item(
                item_id=row["movieId"],
                title=row["title"],
                genres=genres,
                tags=by_item.get(row["movieId"], [])[:MAX_TAGS],
            )
    return items


def load_ratings(path: Path) -> list[Rating]:
    """Ratings sorted by (time, user, item) so replays and splits are deterministic."""
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [
            Rating(r["userId"], r["movieId"], float(r["rating"]), float(r["timestamp"])) for r in csv.DictReader(fh)
        ]
    rows.sort(key=lambda r: (r.time, r.user, r.item))
    return rows


def load_movielens(directory: Path | None = None) -> MovieLens:
    """The shared ``movielens_small`` set."""
    directory = directory or data_dir() / DATASET
    tags = load_tags(directory)
    return MovieLens(items=load_items(directory, tags), ratings=load_ratings(directory / "ratings.csv"), tags=tags)


def temporal_split(ratings: list[Rating], fraction: float = 0.2) -> tuple[list[Rating], list[Rating]]:
    """Per user, the latest ``fraction`` of ratings (at least one when the user has two) → second list."""
    by_user: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        by_user[r.user].append(r)
    train: list[Rating] = []
    held: list[Rating] = []
    for rows in by_user.values():
        rows.sort(key=lambda r: (r.time, r.item))
        n_held = round(len(rows) * fraction)
        if len(rows) >= 2:  # noqa: PLR2004 - a single rating stays in train
            n_held = max(1, n_held)
        cut = len(rows) - n_held
        train.extend(rows[:cut])
        held.extend(rows[cut:])
    train.sort(key=lambda r: (r.time, r.user, r.item))
    held.sort(key=lambda r: (r.time, r.user, r.item))
    return train, held


def positives_by_user(ratings: list[Rating]) -> dict[str, list[Rating]]:
    """Positive ratings per user, oldest first."""
    out: dict[str, list[Rating]] = defaultdict(list)
    for r in ratings:
        if r.positive:
            out[r.user].append(r)
    return dict(out)


def seen_by_user(ratings: list[Rating]) -> dict[str, set[str]]:
    """Every item a user rated (positive or not): excluded from that user's recommendations."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in ratings:
        out[r.user].add(r.item)
    return dict(out)
