"""Item text keeps only the tags written in the train period (no held-out leak through tags)."""

from __future__ import annotations

from pathlib import Path

from textpulse.recsys.data import load_movielens, tag_cutoffs, temporal_split
from textpulse.recsys.evaluate import make_split

MOVIES = "movieId,title,genres\n1,Alpha (1990),Drama\n2,Beta (1991),Comedy\n3,Gamma (1992),Drama\n"
# User 7 rates 1, 2 at t=100, 200 (train) and 3 at t=300 (held out with fraction 0.34 of 3 ratings).
RATINGS = "userId,movieId,rating,timestamp\n7,1,5.0,100\n7,2,4.0,200\n7,3,4.5,300\n"
TAGS = (
    "userId,movieId,tag,timestamp\n"
    "7,1,before,150\n"  # within the train period: kept
    "7,2,at split,200\n"  # at the latest train rating: kept
    "7,3,after split,250\n"  # after the latest train rating (held-out period): dropped
    "9,1,unrated user,50\n"  # an author with no train rating: no cut-off, dropped
)


def _write(directory: Path) -> None:
    (directory / "movies.csv").write_text(MOVIES, "utf-8")
    (directory / "ratings.csv").write_text(RATINGS, "utf-8")
    (directory / "tags.csv").write_text(TAGS, "utf-8")


def test_tag_written_after_the_split_time_is_excluded(tmp_path: Path) -> None:
    _write(tmp_path)
    ml = load_movielens(tmp_path)
    train, held = temporal_split(ml.ratings, 0.34)
    assert [r.item for r in held] == ["3"]
    assert tag_cutoffs(train) == {"7": 200.0}
    items = ml.items_as_of(tag_cutoffs(train))
    assert items["1"].tags == ["before"]
    assert items["2"].tags == ["at split"]
    assert items["3"].tags == []
    split = make_split(ml, 0.34)
    text = "\n".join(split.texts)
    assert "after split" not in text
    assert "unrated user" not in text
    assert "before" in text


def test_published_catalogue_keeps_every_tag(tmp_path: Path) -> None:
    """``MovieLens.items`` (live use, not evaluation) is the catalogue as published."""
    _write(tmp_path)
    ml = load_movielens(tmp_path)
    assert ml.items["3"].tags == ["after split"]
    assert ml.items["1"].tags == ["before", "unrated user"]
