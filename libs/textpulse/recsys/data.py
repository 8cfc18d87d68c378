"""MovieLens (``movielens_small``) as items with text and time-ordered interactions, plus temporal splits.

The shared copy already lacks each user's latest 20% of ratings (the withheld
test split); :func:`temporal_split` cuts a dev split the same way from what is
left: per user, the latest ``fraction`` of ratings by timestamp.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from textpulse.contracts.recs import POSITIVE_RATING, Item

DATASET = "movielens_small"
LICENCE = "MovieLens (GroupLens) research-only licence: evaluation and research use only."


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


@dataclass(frozen=True)
class MovieLens:
    """Items (with text) and ratings ordered by time."""

    items: dict[str, Item]
    ratings: list[Rating]


def data_dir() -> Path:
    """``TEXTPULSE_DATA_DIR`` (default ``../shared/datasets`` next to the repository)."""
    default = Path(__file__).resolve().parents[3].parent / "shared" / "datasets"
    return Path(os.environ.get("TEXTPULSE_DATA_DIR", str(default)))


def load_items(directory: Path) -> dict[str, Item]:
    """Movies with title, genres and the distinct tags users gave them."""
    tags: dict[str, list[str]] = defaultdict(list)
    with (directory / "tags.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            tag = row["tag"].strip()[:128]
            if tag and tag.lower() not in {t.lower() for t in tags[row["movieId"]]}:
                tags[row["movieId"]].append(tag)
    items: dict[str, Item] = {}
    with (directory / "movies.csv").open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            genres = [g for g in row["genres"].split("|") if g and g != "(no genres listed)"]
            items[row["movieId"]] = Item(
                item_id=row["movieId"], title=row["title"], genres=genres, tags=tags.get(row["movieId"], [])[:20]
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
    return MovieLens(items=load_items(directory), ratings=load_ratings(directory / "ratings.csv"))


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
