"""Realistic mention streams from real labelled tweets (tests and ``make bench-alert``).

The sentiment signal is each tweet's *true* label (Bearish / Bullish /
Neutral of ``twitter_fin_sentiment``) with a simulated model confidence, so
the figures measure the detectors, not a classifier. Entity attribution: a
tweet's cashtags where it has any (what the NER service's cashtag rule
finds); otherwise one ticker drawn from a Zipf law over the data set's most
frequent cashtags (standing in for company names the NER model would find),
because only ~15 % of the tweets carry a cashtag and per-entity volume would
otherwise be too small for any baseline.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from textpulse.contracts.events import Channel, Classification, EntityMention, ModelRef

CASHTAG = re.compile(r"\$([A-Za-z][A-Za-z.]{0,5})\b")
TRUTH_MODEL = ModelRef(name="truth:twitter_fin_sentiment", version="labels")
LABELS = ("Bearish", "Bullish", "Neutral")


class Labelled(Protocol):
    """What synth needs of a labelled text (``textpulse.datasets.TextExample`` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def label(self) -> str | None: ...


def cashtags(text: str) -> list[str]:
    """Normalised tickers of a text (upper case, no trailing dot), in order, unique."""
    seen: dict[str, None] = {}
    for tag in CASHTAG.findall(text):
        seen[tag.upper().rstrip(".")] = None
    return list(seen)


def sentiment(label: str, confidence: float) -> Classification:
    """A sentiment classification with ``label`` winning at ``confidence``."""
    rest = (1.0 - confidence) / (len(LABELS) - 1)
    scores = {name: round(confidence if name == label else rest, 4) for name in LABELS}
    return Classification(label=label, score=round(confidence, 4), scores=scores, model=TRUTH_MODEL)


def mention(
    *, event_id: str, entity: str, label: str, confidence: float, event_time: datetime, ingest_time: datetime
) -> EntityMention:
    """One ``entity.mentions`` value."""
    return EntityMention(
        event_id=event_id,
        entity_key=entity,
        entity_type="TICKER",
        surface=f"${entity}",
        channel=Channel.SOCIAL,
        source="replay:twitter_fin_sentiment",
        sentiment=sentiment(label, confidence),
        event_time=event_time,
        ingest_time=ingest_time,
    )


@dataclass(frozen=True, slots=True)
class Planned:
    """A mention with the tweet text behind it, and whether it belongs to the injected burst."""

    mention: EntityMention
    text: str
    burst: bool


def universe(examples: Sequence[Labelled], size: int) -> list[str]:
    """The ``size`` most frequent cashtags of the data set."""
    counts = Counter(t for e in examples for t in cashtags(e.text))
    return [t for t, _ in counts.most_common(size)]


def day_stream(
    examples: Sequence[Labelled],
    *,
    start: datetime,
    burst_entity: str,
    burst_at: timedelta,
    burst_size: int,
    burst_minutes: float,
    passes: int = 1,
    entities: int = 50,
    seed: int = 13,
) -> list[Planned]:
    """Background tweets spread over one simulated day plus a burst of real Bearish tweets about one entity.

    Returns mentions sorted by event time; ingest time = event time + a small
    random pipeline delay. Burst tweets are real Bearish tweets, attributed to
    ``burst_entity`` at ``start + burst_at`` over ``burst_minutes``.
    """
    rng = random.Random(seed)  # reproducible replays, not security
    tickers = universe(examples, entities)
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(tickers))]
    day = 24 * 3600.0
    out: list[Planned] = []
    labelled = [e for e in examples if e.label in LABELS]
    for p in range(passes):
        for e in labelled:
            tags = cashtags(e.text) or rng.choices(tickers, weights)
            t = start + timedelta(seconds=rng.uniform(0, day))
            out.extend(_planned(e, f"{e.id}#{p}", tag, t, rng, burst=False) for tag in tags)
    bearish = [e for e in labelled if e.label == "Bearish"]
    for i, e in enumerate(rng.sample(bearish, burst_size)):
        t = start + burst_at + timedelta(seconds=burst_minutes * 60 * i / burst_size)
        out.append(_planned(e, f"{e.id}#burst", burst_entity, t, rng, burst=True))
    out.sort(key=lambda pl: pl.mention.event_time)
    return out


def _planned(e: Labelled, event_id: str, entity: str, t: datetime, rng: random.Random, *, burst: bool) -> Planned:
    assert e.label is not None
    m = mention(
        event_id=event_id.replace(" ", "_")[:128],
        entity=entity,
        label=e.label,
        confidence=rng.uniform(0.6, 0.99),
        event_time=t,
        ingest_time=t + timedelta(seconds=rng.uniform(0.05, 2.0)),
    )
    return Planned(m, e.text, burst)


def surge_scenario(
    examples: Sequence[Labelled],
    *,
    entity: str,
    start: datetime,
    minutes: tuple[int, int, int] = (60, 6, 20),
    per_minute: int = 10,
    surge_per_minute: int = 20,
    seed: int = 5,
) -> list[Planned]:
    """One entity: ``minutes[0]`` of background, a surge of real Bearish tweets, ``minutes[2]`` of background.

    Background tweets are drawn from the data set with their natural label mix
    (~15 % Bearish); during the surge 90 % of the mentions are real Bearish tweets.
    Event ids are unique and ordered (``<entity>-<n>``); ``burst`` marks surge tweets.
    """
    rng = random.Random(seed)  # reproducible replays, not security
    labelled = [e for e in examples if e.label in LABELS]
    bearish = [e for e in labelled if e.label == "Bearish"]
    others = [e for e in labelled if e.label != "Bearish"]
    before, surge, after = minutes
    out: list[Planned] = []

    def emit(minute: int, e: Labelled, i: int, n: int, *, burst: bool) -> None:
        t = start + timedelta(minutes=minute, seconds=59 * i / n)
        out.append(_planned(e, f"{entity}-{len(out)}", entity, t, rng, burst=burst))

    for minute in range(before + surge + after):
        in_surge = before <= minute < before + surge
        n = surge_per_minute if in_surge else per_minute
        for i in range(n):
            if in_surge:
                burst = i < int(0.9 * n)
                emit(minute, rng.choice(bearish if burst else others), i, n, burst=burst)
            else:
                emit(minute, rng.choice(labelled), i, n, burst=False)
    return out
