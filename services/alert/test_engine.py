"""Unit tests of windows, detectors and the alert lifecycle (no Kafka)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textpulse.contracts.alerts import AlertStatus, Detector, FinancialAlert, KeyKind
from textpulse.contracts.events import Classification, ModelRef

from .config import AlertConfig, ConfigError, load_config
from .engine import Engine

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MODEL = ModelRef(name="sentiment", version="1")


def sentiment(label: str, score: float) -> Classification:
    others = {"Bearish", "Bullish", "Neutral"} - {label}
    rest = (1.0 - score) / 2
    return Classification(label=label, score=score, scores={label: score, **dict.fromkeys(others, rest)}, model=MODEL)


class Feed:
    """Feeds one entity's mentions minute by minute, and collects notifications."""

    def __init__(self, engine: Engine, key: str = "acme", seed: int = 7) -> None:
        self.engine = engine
        self.key = key
        self.rng = random.Random(seed)
        self.n = 0
        self.notes: list[FinancialAlert] = []

    def minute(self, minute: int, *, total: int, neg: int, pos: int = 0, key: str | None = None) -> None:
        for i in range(total):
            label = "Bearish" if i < neg else "Bullish" if i < neg + pos else "Neutral"
            score = 0.6 + 0.4 * self.rng.random()
            self.n += 1
            t = T0 + timedelta(minutes=minute, seconds=(i * 59) // max(total, 1))
            self.engine.add(
                key=f"entity:{key or self.key}",
                kind=KeyKind.ENTITY,
                subject=key or self.key,
                event_id=f"e{self.n}",
                event_time=t,
                sentiment=sentiment(label, score),
                text=f"text {self.n} {label}",
            )
        self.notes.extend(n.alert for n in self.engine.advance())

    def background(self, start: int, end: int, *, total: int = 10, neg: int = 2, pos: int = 3) -> None:
        for m in range(start, end):
            self.minute(m, total=total, neg=neg, pos=pos)

    def of(self, detector: Detector) -> list[FinancialAlert]:
        return [a for a in self.notes if a.detector is detector]


def config(**overrides: object) -> AlertConfig:
    base = AlertConfig().model_dump()
    for dotted, value in overrides.items():
        section, field = dotted.split("__")
        base[section][field] = value
    return AlertConfig.model_validate(base)


def test_steady_background_raises_nothing() -> None:
    feed = Feed(Engine(AlertConfig()))
    feed.background(0, 120)
    assert feed.notes == []


def test_surge_fires_once_with_evidence_then_resolves() -> None:
    feed = Feed(Engine(AlertConfig()))
    feed.background(0, 60)
    for m in range(60, 66):
        feed.minute(m, total=20, neg=18, pos=1)
    feed.background(66, 90)
    surge = feed.of(Detector.NEGATIVE_SURGE)
    assert [a.status for a in surge] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
    fired, resolved = surge
    assert fired.alert_id == resolved.alert_id
    assert (fired.sequence, resolved.sequence) == (1, 2)
    ev = fired.evidence
    assert ev.current.negative_share > 0.5
    assert ev.baseline.negative_share_mean == pytest.approx(0.2, abs=0.02)
    assert ev.score >= 3.0
    assert ev.current.end - ev.current.start == timedelta(minutes=5)
    assert (
        ev.current.counts.total == ev.current.counts.negative + ev.current.counts.positive + ev.current.counts.neutral
    )
    assert len(ev.top_events) == 5
    scores = [e.negative_score for e in ev.top_events]
    assert scores == sorted(scores, reverse=True)
    assert all(e.sentiment == "Bearish" and e.text for e in ev.top_events)
    # Fired within two windows of the surge start (watermark = newest event - 60 s lateness).
    assert fired.updated_at - (T0 + timedelta(minutes=60)) <= timedelta(minutes=3)
    assert resolved.resolved_at is not None
    assert resolved.resolved_at > T0 + timedelta(minutes=66)


def test_long_surge_renotifies_only_after_cooldown() -> None:
    cfg = config(lifecycle__cooldown_s=600)
    feed = Feed(Engine(cfg))
    feed.background(0, 60)
    for m in range(60, 90):
        feed.minute(m, total=20, neg=18, pos=1)
    surge = [a for a in feed.of(Detector.NEGATIVE_SURGE) if a.status is AlertStatus.FIRING]
    assert len({a.alert_id for a in surge}) == 1
    assert [a.sequence for a in surge] == list(range(1, len(surge) + 1))
    gaps = [(b.updated_at - a.updated_at).total_seconds() for a, b in itertools.pairwise(surge)]
    assert gaps
    assert all(g >= 600 for g in gaps)


def test_refire_holdoff_stops_flapping() -> None:
    feed = Feed(Engine(config(lifecycle__refire_holdoff_s=3600, lifecycle__resolve_after_windows=1)))
    feed.background(0, 60)
    for start in (60, 72, 84):
        for m in range(start, start + 3):
            feed.minute(m, total=20, neg=18)
        feed.background(start + 3, start + 12)
    firings = [a for a in feed.of(Detector.NEGATIVE_SURGE) if a.status is AlertStatus.FIRING]
    assert len(firings) == 1


def test_volume_spike_without_sentiment_change() -> None:
    feed = Feed(Engine(AlertConfig()))
    feed.background(0, 60)
    feed.background(60, 64, total=60, neg=12, pos=18)
    assert [a.status for a in feed.of(Detector.VOLUME_SPIKE)][:1] == [AlertStatus.FIRING]
    assert feed.of(Detector.NEGATIVE_SURGE) == []


def test_reversal_from_positive_to_negative() -> None:
    feed = Feed(Engine(AlertConfig()))
    feed.background(0, 10, total=4, neg=0, pos=4)
    feed.background(10, 16, total=4, neg=4, pos=0)
    rev = feed.of(Detector.REVERSAL)
    assert rev
    assert rev[0].status is AlertStatus.FIRING
    assert rev[0].evidence.previous is not None
    assert rev[0].evidence.previous.positive_share >= 0.6


def test_cusum_method_fires_on_sustained_moderate_rise() -> None:
    feed = Feed(Engine(config(negative_surge__method="cusum")))
    feed.background(0, 60)
    for m in range(60, 72):
        feed.minute(m, total=10, neg=6, pos=2)
    fired = feed.of(Detector.NEGATIVE_SURGE)
    assert fired
    assert fired[0].evidence.method == "cusum"


def test_late_and_duplicate_records_are_not_counted() -> None:
    engine = Engine(AlertConfig())
    kw: dict[str, Any] = {"key": "entity:x", "kind": KeyKind.ENTITY, "subject": "x"}
    kw["sentiment"] = sentiment("Bearish", 0.9)
    assert engine.add(event_id="a", event_time=T0, source="p0", offset=1, **kw) == "added"
    assert engine.add(event_id="a", event_time=T0, source="p0", offset=1, **kw) == "duplicate"
    later = T0 + timedelta(minutes=10)
    assert engine.add(event_id="b", event_time=later, source="p0", offset=2, **kw) == "added"
    engine.advance()  # the watermark moves per consumed batch
    assert engine.add(event_id="c", event_time=later - timedelta(seconds=59), source="p0", offset=3, **kw) == "added"
    assert engine.add(event_id="d", event_time=later - timedelta(seconds=61), source="p0", offset=4, **kw) == "late"
    assert engine.late == 1
    assert sum(b.neg for b in engine.keys["entity:x"].buckets.values()) == 3


def test_restore_mid_surge_keeps_one_alert() -> None:
    engine = Engine(AlertConfig())
    feed = Feed(engine)
    feed.background(0, 60)
    for m in range(60, 64):
        feed.minute(m, total=20, neg=18)
    assert len(feed.of(Detector.NEGATIVE_SURGE)) == 1
    saved = [Engine.dump(s) for s in engine.take_dirty()]
    restored = Engine(AlertConfig())
    for value in saved:
        restored.restore(value)
    assert restored.max_time == engine.max_time
    assert [a.alert_id for a in restored.pending()] == [a.alert_id for a in engine.pending()]
    feed2 = Feed(restored, seed=8)
    feed2.n = 10_000
    for m in range(64, 70):
        feed2.minute(m, total=20, neg=18)
    assert [a for a in feed2.of(Detector.NEGATIVE_SURGE) if a.status is AlertStatus.FIRING] == []


def test_mark_published_empties_outbox() -> None:
    engine = Engine(AlertConfig())
    feed = Feed(engine)
    feed.background(0, 60)
    for m in range(60, 64):
        feed.minute(m, total=20, neg=18)
    assert engine.pending()
    engine.take_dirty()
    engine.mark_published(["entity:acme"])
    assert engine.pending() == []
    assert [s.key for s in engine.take_dirty()] == ["entity:acme"]


def test_quiet_key_resolves_while_others_flow() -> None:
    feed = Feed(Engine(AlertConfig()))
    feed.background(0, 60)
    for m in range(60, 64):
        feed.minute(m, total=20, neg=18)
    for m in range(64, 80):
        feed.minute(m, total=3, neg=0, pos=3, key="other")
    statuses = [a.status for a in feed.of(Detector.NEGATIVE_SURGE) if a.subject == "acme"]
    assert statuses == [AlertStatus.FIRING, AlertStatus.RESOLVED]


def test_default_config_file_loads() -> None:
    cfg = load_config()
    assert cfg.window.buckets == 5


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("window: {size_s: 300, slide_s: 70}", "multiple of window.slide_s"),
        ("negative_surge: {method: ewma}", "negative_surge.method"),
        ("volume_spike: {z_treshold: 3}", "volume_spike.z_treshold"),
        ("window: [1, 2", "invalid YAML"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "alert.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_watermark_follows_the_slowest_partition() -> None:
    engine = Engine(AlertConfig())
    kw: dict[str, Any] = {"kind": KeyKind.ENTITY, "sentiment": sentiment("Neutral", 0.9)}
    engine.add(key="entity:a", subject="a", event_id="a1", event_time=T0 + timedelta(hours=5), source="p0", **kw)
    engine.add(key="entity:b", subject="b", event_id="b1", event_time=T0, source="p1", **kw)
    engine.advance()
    assert engine.watermark == (T0 - timedelta(seconds=60)).timestamp()
    # p1 is behind, not late: its next events still count.
    out = engine.add(
        key="entity:b", subject="b", event_id="b2", event_time=T0 + timedelta(minutes=1), source="p1", **kw
    )
    assert out == "added"


def test_idle_partition_stops_holding_the_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    engine = Engine(AlertConfig())
    kw: dict[str, Any] = {"kind": KeyKind.ENTITY, "sentiment": sentiment("Neutral", 0.9)}
    engine.add(key="entity:b", subject="b", event_id="b1", event_time=T0, source="p1", **kw)
    clock[0] += 31
    engine.add(key="entity:a", subject="a", event_id="a1", event_time=T0 + timedelta(hours=1), source="p0", **kw)
    engine.advance()
    assert engine.watermark == (T0 + timedelta(minutes=59)).timestamp()


def test_assigned_partition_holds_the_watermark_before_its_first_record() -> None:
    """A backlog: p0's records arrive first; p1 (assigned, not fetched yet) must not find them late."""
    engine = Engine(AlertConfig())
    kw: dict[str, Any] = {"kind": KeyKind.ENTITY, "sentiment": sentiment("Neutral", 0.9)}
    engine.hold_sources(["p0", "p1"])
    assert engine.waiting_sources() == ["p0", "p1"]
    engine.add(key="entity:a", subject="a", event_id="a1", event_time=T0 + timedelta(hours=5), source="p0", **kw)
    assert engine.advance() == []
    assert engine.watermark == float("-inf")
    assert engine.waiting_sources() == ["p1"]
    assert engine.add(key="entity:b", subject="b", event_id="b1", event_time=T0, source="p1", **kw) == "added"
    engine.advance()
    assert engine.watermark == (T0 - timedelta(seconds=60)).timestamp()
    engine.hold_sources(["p0", "p1"])  # re-assigned: tracked sources keep their figures
    assert engine.waiting_sources() == []
    assert engine.watermark == (T0 - timedelta(seconds=60)).timestamp()


def test_waiting_partition_stops_holding_when_empty_or_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    kw: dict[str, Any] = {"kind": KeyKind.ENTITY, "sentiment": sentiment("Neutral", 0.9)}
    later = T0 + timedelta(hours=1)
    for release in ("empty", "idle"):
        engine = Engine(AlertConfig())
        engine.hold_sources(["p0", "p1", "p2"])
        engine.add(key="entity:a", subject="a", event_id="a1", event_time=later, source="p0", **kw)
        engine.add(key="entity:b", subject="b", event_id="b1", event_time=T0, source="p2", **kw)
        assert not engine.due()
        if release == "empty":
            engine.release_sources(["p1", "p2"])  # p2 delivered: releasing only applies to waiting sources
            assert "p2" in engine.source_max
        else:
            clock[0] += 31
            engine.add(key="entity:b", subject="b", event_id="b2", event_time=T0, source="p2", **kw)
        assert engine.waiting_sources() == []
        assert engine.due()
        engine.advance()
        assert engine.watermark == (T0 - timedelta(seconds=60)).timestamp()
        assert not engine.due()
