"""Event-time windows, baselines, detectors and the alert lifecycle — no I/O.

Time model
    Windows are aligned to ``slide_s``: a key's mentions are counted in
    buckets of one slide; the window ending at bucket boundary ``e`` is the
    ``size_s / slide_s`` buckets before it. The instance watermark is the
    newest event time seen minus ``allowed_lateness_s``; a window is evaluated
    once, when the watermark passes its end. The watermark is the *slowest*
    input partition's newest event time minus ``allowed_lateness_s`` (as in
    Flink or Kafka Streams): replaying a backlog, one partition read far ahead
    of the others must not make their events late. Every *assigned* partition
    counts from its assignment (:meth:`Engine.hold_sources`), before it has
    delivered anything: on a backlog the first fetches may come from a few
    partitions only, and the others must not find the watermark already past
    their records. A partition that has not delivered yet stops holding it
    back once the consumer shows it has nothing to read
    (:meth:`Engine.release_sources`); any partition silent for
    ``idle_source_s`` (wall clock) stops holding it back. Events behind the
    watermark are dropped as late (counted, never silently). The watermark is
    per instance, not per key, so a quiet key's windows still close (and its
    alerts resolve) while other keys keep flowing.

State
    :class:`KeyState` holds everything of one key (buckets, baselines, open
    alerts, an outbox of notifications not yet confirmed published, the
    last input offset applied per topic-partition and, for entity keys, the
    ``entity.mentions`` partition that feeds it). It serialises to JSON for
    the compacted changelog topic, so a restarted instance — or the replica a
    rebalance moved the partition to — continues where the previous owner
    stopped: a redelivered record is recognised by its offset and not counted
    twice, an open alert is neither forgotten nor fired again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel, Field
from textpulse.contracts.alerts import (
    AlertEvidence,
    AlertStatus,
    BaselineFigures,
    Detector,
    EvidenceEvent,
    FinancialAlert,
    KeyKind,
    SentimentCounts,
    WindowFigures,
)
from textpulse.contracts.events import Classification

from .config import AlertConfig
from .stats import EwStat

TextLookup = Callable[[str], str | None]
#: Characters of an event text kept as evidence (the state, texts included, goes to the changelog).
EVIDENCE_TEXT_CHARS = 500
STATE_VERSION = 1


class Item(BaseModel):
    """One mention kept as evidence candidate."""

    id: str
    t: float
    neg: float
    label: str | None = None
    text: str | None = None


class Bucket(BaseModel):
    """Counts of one slide of one key, plus its top negative mentions."""

    neg: int = 0
    pos: int = 0
    neu: int = 0
    last_ingest: float = 0.0
    top: list[Item] = Field(default_factory=list)


class OpenAlert(BaseModel):
    """An alert that fired and is not resolved yet."""

    alert_id: str
    started_at: float
    last_notified: float
    sequence: int
    clear_windows: int = 0
    evidence: AlertEvidence


class KeyState(BaseModel):
    """All state of one key; the value of its changelog record."""

    v: int = STATE_VERSION
    key: str
    kind: KeyKind
    subject: str
    max_time: float = 0.0
    buckets: dict[int, Bucket] = Field(default_factory=dict)
    last_end: int | None = None
    share: EwStat = Field(default_factory=EwStat)
    volume: EwStat = Field(default_factory=EwStat)
    cusum: float = 0.0
    alerts: dict[Detector, OpenAlert] = Field(default_factory=dict)
    holdoff: dict[Detector, float] = Field(default_factory=dict)
    offsets: dict[str, int] = Field(default_factory=dict)
    outbox: list[FinancialAlert] = Field(default_factory=list)
    #: Input partition that feeds the key (entity keys: the ``entity.mentions`` partition, which is
    #: also the key's changelog partition). None: not known (topic keys; states written before it existed).
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A notification the engine decided; ``ingest_time`` is the newest ingest time of its window."""

    alert: FinancialAlert
    ingest_time: float


@dataclass(frozen=True, slots=True)
class Window:
    """Figures of one window of one key."""

    start: int
    end: int
    neg: int
    pos: int
    neu: int
    last_ingest: float

    @property
    def total(self) -> int:
        return self.neg + self.pos + self.neu

    @property
    def neg_share(self) -> float:
        return self.neg / self.total if self.total else 0.0

    @property
    def pos_share(self) -> float:
        return self.pos / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """A detector's decision on one window."""

    firing: bool
    score: float
    threshold: float
    method: str


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Engine:
    """Windows and alerts of the keys this instance owns."""

    def __init__(self, config: AlertConfig, *, text_lookup: TextLookup | None = None) -> None:
        self.config = config
        self.keys: dict[str, KeyState] = {}
        self.max_time = -math.inf
        self.dirty: set[str] = set()
        self.late = 0
        self.source_max: dict[str, float] = {}
        self._neg_mentions = 0
        self._all_mentions = 0
        self._source_seen: dict[str, float] = {}
        self._watermark = -math.inf
        self._advanced_to: int | None = None
        self._text = text_lookup or (lambda _id: None)
        self._negative = set(config.sentiment.negative)
        self._positive = set(config.sentiment.positive)

    # -- input -----------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """Slowest active partition's newest event time minus the lateness (−inf before any event)."""
        return self._watermark

    def _update_watermark(self) -> None:
        window = self.config.window
        now = time.monotonic()
        active = [t for s, t in self.source_max.items() if now - self._source_seen[s] <= window.idle_source_s]
        if not active and not self.source_max:
            return
        base = min(active) if active else max(self.source_max.values())
        # Never moves back: windows already evaluated stay evaluated.
        self._watermark = max(self._watermark, base - window.allowed_lateness_s)

    def hold_sources(self, sources: Iterable[str]) -> None:
        """Assigned input partitions (``topic:partition``) hold the watermark from now on.

        Until a source delivers its first record it holds the watermark where it is; it stops
        when it delivers, when :meth:`release_sources` says it is empty, or after ``idle_source_s``.
        Sources already tracked keep their figures.
        """
        now = time.monotonic()
        for source in sources:
            if source not in self.source_max:
                self.source_max[source] = -math.inf
                self._source_seen[source] = now

    def waiting_sources(self) -> list[str]:
        """Sources that hold the watermark without having delivered a record yet."""
        idle = self.config.window.idle_source_s
        now = time.monotonic()
        return [s for s, t in self.source_max.items() if t == -math.inf and now - self._source_seen[s] <= idle]

    def release_sources(self, sources: Iterable[str]) -> None:
        """Sources that have not delivered and have nothing to read (caught up, empty) stop holding."""
        self.forget_sources(s for s in sources if self.source_max.get(s) == -math.inf)

    def due(self) -> bool:
        """Whether :meth:`advance` would evaluate windows now (the watermark passed a new window end)."""
        self._update_watermark()
        if not math.isfinite(self.watermark):
            return False
        return math.floor(self.watermark / self.config.window.slide_s) != self._advanced_to

    def forget_sources(self, sources: Iterable[str]) -> None:
        """Stop tracking input partitions (``topic:partition``) this instance no longer reads.

        A revoked partition's newest event time must not hold the watermark back
        (nor wait ``idle_source_s`` to stop doing so): its new owner tracks it.
        """
        for source in sources:
            self.source_max.pop(source, None)
            self._source_seen.pop(source, None)

    def close_all(self, after_s: float) -> None:
        """Move the watermark ``after_s`` past the newest event (end of a replay: close every window)."""
        self._watermark = max(self._watermark, self.max_time + after_s)

    def negative_score(self, sentiment: Classification | None) -> tuple[float, str]:
        """(probability of negative, polarity: neg | pos | neu) of a classification."""
        if sentiment is None:
            return 0.0, "neu"
        neg = max((p for label, p in sentiment.scores.items() if label in self._negative), default=0.0)
        if sentiment.label in self._negative:
            return max(neg, sentiment.score), "neg"
        return neg, "pos" if sentiment.label in self._positive else "neu"

    def add(
        self,
        *,
        key: str,
        kind: KeyKind,
        subject: str,
        event_id: str,
        event_time: datetime,
        sentiment: Classification | None,
        ingest_time: datetime | None = None,
        text: str | None = None,
        source: str | None = None,
        offset: int | None = None,
        partition: int | None = None,
    ) -> str:
        """Count one mention. Returns ``added``, ``late`` or ``duplicate`` (offset already applied).

        ``partition``: the input partition of the record, kept in the state (see :attr:`KeyState.partition`).
        """
        state = self.keys.get(key)
        if state is None:
            state = self.keys[key] = KeyState(key=key, kind=kind, subject=subject)
        if partition is not None and state.partition != partition:
            state.partition = partition
            self.dirty.add(key)
        if source is not None and offset is not None:
            if offset <= state.offsets.get(source, -1):
                return "duplicate"
            state.offsets[source] = offset
        self.dirty.add(key)
        t = event_time.timestamp()
        self.max_time = max(self.max_time, t)
        state.max_time = max(state.max_time, t)
        src = source or "_"
        if t > self.source_max.get(src, -math.inf):
            self.source_max[src] = t
        self._source_seen[src] = time.monotonic()
        if t < self.watermark:
            self.late += 1
            return "late"
        neg, polarity = self.negative_score(sentiment)
        bucket = state.buckets.setdefault(int(t // self.config.window.slide_s), Bucket())
        self._all_mentions += 1
        if polarity == "neg":
            self._neg_mentions += 1
            bucket.neg += 1
        elif polarity == "pos":
            bucket.pos += 1
        else:
            bucket.neu += 1
        if ingest_time is not None:
            bucket.last_ingest = max(bucket.last_ingest, ingest_time.timestamp())
        label = sentiment.label if sentiment else None
        item = Item(id=event_id, t=t, neg=neg, label=label, text=text[:EVIDENCE_TEXT_CHARS] if text else None)
        top = bucket.top
        k = self.config.lifecycle.top_k
        if len(top) < k or neg > top[-1].neg:
            top.append(item)
            top.sort(key=lambda i: -i.neg)
            del top[k:]
        return "added"

    # -- evaluation --------------------------------------------------------------

    def advance(self, now: datetime | None = None) -> list[Notification]:
        """Evaluate every window whose end the watermark passed; return the notifications decided."""
        self._update_watermark()
        if not math.isfinite(self.watermark):
            return []
        slide = self.config.window.slide_s
        last_end = math.floor(self.watermark / slide)
        if last_end == self._advanced_to:
            return []  # no window closed since the last call
        self._advanced_to = last_end
        wall = now or datetime.now(UTC)
        out: list[Notification] = []
        for state in self.keys.values():
            if state.last_end is not None and state.last_end >= last_end:
                continue
            if not state.buckets and not state.alerts:
                continue
            out.extend(self._advance_key(state, last_end, wall))
            self.dirty.add(state.key)
        return out

    def _advance_key(self, state: KeyState, last_end: int, wall: datetime) -> list[Notification]:
        n = self.config.window.buckets
        out: list[Notification] = []
        first_data = min(state.buckets) + 1 if state.buckets else None
        end = state.last_end + 1 if state.last_end is not None else (first_data or last_end)
        while end <= last_end:
            if not state.alerts and first_data is not None and end < first_data:
                self._skip_empty(state, min(first_data, last_end + 1) - end)
                end = min(first_data, last_end + 1)
                continue
            if not state.alerts and (first_data is None or end > max(state.buckets) + 2 * n):
                # Nothing left in this key's windows: fold the empty windows in at once.
                self._skip_empty(state, last_end - end + 1)
                end = last_end + 1
                break
            out.extend(self._evaluate(state, end, wall))
            end += 1
        state.last_end = last_end
        for idx in [i for i in state.buckets if i < last_end - 2 * n]:
            del state.buckets[idx]
        return out

    def _skip_empty(self, state: KeyState, windows: int) -> None:
        state.volume.decay(windows, self.config.baseline.alpha)

    def window(self, state: KeyState, end: int) -> Window:
        """Figures of the window of ``state`` ending at bucket boundary ``end``."""
        n = self.config.window.buckets
        neg = pos = neu = 0
        last_ingest = 0.0
        for idx in range(end - n, end):
            b = state.buckets.get(idx)
            if b is not None:
                neg, pos, neu = neg + b.neg, pos + b.pos, neu + b.neu
                last_ingest = max(last_ingest, b.last_ingest)
        return Window(end - n, end, neg, pos, neu, last_ingest)

    def share_baseline(self, state: KeyState) -> tuple[float, float, str] | None:
        """(mean, std, source) of the negative share a window is compared with, or None while cold.

        A key's own baseline once it has ``min_windows`` windows with enough
        volume; before that the population's share (all mentions of this
        instance, once ``population_min_mentions`` were seen), so an entity
        that is rarely discussed can still show a surge against the market mood.
        """
        base = self.config.baseline
        if state.share.n >= base.min_windows:
            return state.share.mean, state.share.std, "key"
        if self._all_mentions >= base.population_min_mentions:
            return self._neg_mentions / self._all_mentions, 0.0, "population"
        return None

    def _surge(self, state: KeyState, cur: Window) -> Verdict:
        cfg, base = self.config.negative_surge, self.config.baseline
        reference = self.share_baseline(state)
        if not cfg.enabled or cur.total < cfg.min_volume or reference is None:
            threshold = cfg.z_threshold if cfg.method == "zscore" else cfg.cusum_h
            return Verdict(firing=False, score=0.0, threshold=threshold, method=cfg.method)
        mean, std, _source = reference
        # The std is floored by the binomial standard error of a share over this many mentions:
        # on small windows sampling noise, not the baseline's spread, dominates.
        p0 = min(max(mean, 0.0), 1.0)
        z = (cur.neg_share - mean) / max(std, base.min_share_std, math.sqrt(p0 * (1 - p0) / cur.total))
        enough = cur.neg_share >= cfg.min_share and cur.neg >= cfg.min_negative
        if cfg.method == "zscore":
            return Verdict(z >= cfg.z_threshold and enough, z, cfg.z_threshold, "zscore")
        state.cusum = max(0.0, state.cusum + z - cfg.cusum_k)
        firing = state.cusum >= cfg.cusum_h and enough
        return Verdict(firing, state.cusum, cfg.cusum_h, "cusum")

    def _volume(self, state: KeyState, cur: Window) -> Verdict:
        cfg, base = self.config.volume_spike, self.config.baseline
        if not cfg.enabled or state.volume.n < base.min_windows:
            return Verdict(firing=False, score=0.0, threshold=cfg.z_threshold, method="zscore")
        floor = max(base.min_volume_std, math.sqrt(max(state.volume.mean, 0.0)))
        z = state.volume.zscore(cur.total, floor)
        firing = cur.total >= cfg.min_volume and z >= cfg.z_threshold and cur.total >= cfg.min_ratio * state.volume.mean
        return Verdict(firing, z, cfg.z_threshold, "zscore")

    def _reversal(self, cur: Window, prev: Window) -> Verdict:
        cfg = self.config.reversal
        enough = cfg.enabled and cur.total >= cfg.min_volume and prev.total >= cfg.min_volume
        firing = enough and prev.pos_share >= cfg.from_positive_share and cur.neg_share >= cfg.to_negative_share
        return Verdict(firing, cur.neg_share if enough else 0.0, cfg.to_negative_share, "shares")

    def _evaluate(self, state: KeyState, end: int, wall: datetime) -> list[Notification]:
        cur = self.window(state, end)
        prev = self.window(state, end - self.config.window.buckets)
        baseline = self._baseline_figures(state)
        verdicts = {
            Detector.NEGATIVE_SURGE: self._surge(state, cur),
            Detector.VOLUME_SPIKE: self._volume(state, cur),
            Detector.REVERSAL: self._reversal(cur, prev),
        }
        out = [
            note
            for detector, verdict in verdicts.items()
            if (note := self._lifecycle(state, detector, verdict, cur, prev, baseline, wall)) is not None
        ]
        if not any(v.firing for v in verdicts.values()):
            self._update_baseline(state, cur)
        return out

    def _update_baseline(self, state: KeyState, cur: Window) -> None:
        """Fold a window into the baselines, winsorised at the detector thresholds.

        A rising burst crosses the thresholds only after a window or two; without
        the clip those first windows would inflate the baseline and hide the burst.
        """
        base = self.config.baseline
        if state.volume.n or cur.total:
            cap = state.volume.mean + self.config.volume_spike.z_threshold * max(
                state.volume.std, base.min_volume_std, math.sqrt(max(state.volume.mean, 0.0))
            )
            state.volume.update(float(cur.total) if state.volume.n == 0 else min(float(cur.total), cap), base.alpha)
        if cur.total >= self.config.negative_surge.min_volume:
            cap = state.share.mean + self.config.negative_surge.z_threshold * max(state.share.std, base.min_share_std)
            state.share.update(cur.neg_share if state.share.n == 0 else min(cur.neg_share, cap), base.alpha)

    # -- lifecycle ---------------------------------------------------------------

    def _severity(self, detector: Detector) -> str:
        return {
            Detector.NEGATIVE_SURGE: self.config.negative_surge.severity,
            Detector.VOLUME_SPIKE: self.config.volume_spike.severity,
            Detector.REVERSAL: self.config.reversal.severity,
        }[detector]

    def _lifecycle(  # noqa: PLR0911 - one return per lifecycle transition reads best
        self,
        state: KeyState,
        detector: Detector,
        verdict: Verdict,
        cur: Window,
        prev: Window,
        baseline: BaselineFigures,
        wall: datetime,
    ) -> Notification | None:
        t = float(cur.end * self.config.window.slide_s)
        life = self.config.lifecycle
        open_alert = state.alerts.get(detector)
        if verdict.firing:
            evidence = self._evidence(state, verdict, cur, prev, baseline, detector)
            if open_alert is not None:
                open_alert.clear_windows = 0
                open_alert.evidence = evidence
                if t - open_alert.last_notified < life.cooldown_s:
                    return None
                open_alert.sequence += 1
                open_alert.last_notified = t
                return self._notify(state, detector, open_alert, AlertStatus.FIRING, t, cur, wall)
            if t < state.holdoff.get(detector, -math.inf):
                return None
            start = int(t)
            open_alert = OpenAlert(
                alert_id=f"{detector.value}:{state.key}:{start}",
                started_at=t,
                last_notified=t,
                sequence=1,
                evidence=evidence,
            )
            state.alerts[detector] = open_alert
            return self._notify(state, detector, open_alert, AlertStatus.FIRING, t, cur, wall)
        if open_alert is None:
            return None
        open_alert.clear_windows += 1
        if open_alert.clear_windows < life.resolve_after_windows:
            return None
        open_alert.sequence += 1
        open_alert.evidence = self._evidence(state, verdict, cur, prev, baseline, detector)
        del state.alerts[detector]
        state.holdoff[detector] = t + life.refire_holdoff_s
        return self._notify(state, detector, open_alert, AlertStatus.RESOLVED, t, cur, wall)

    def _notify(
        self,
        state: KeyState,
        detector: Detector,
        alert: OpenAlert,
        status: AlertStatus,
        t: float,
        cur: Window,
        wall: datetime,
    ) -> Notification:
        ev = alert.evidence
        verb = "resolved" if status is AlertStatus.RESOLVED else "firing"
        summary = (
            f"{detector.value} {verb} for {state.kind.value} {state.subject}: "
            f"negative share {ev.current.negative_share:.0%} of {ev.current.counts.total} mentions "
            f"(baseline {ev.baseline.negative_share_mean:.0%}, volume baseline {ev.baseline.volume_mean:.1f}); "
            f"{ev.method} {ev.score:.2f} vs {ev.threshold:.2f}"
        )
        record = FinancialAlert(
            alert_id=alert.alert_id,
            key=state.key,
            key_kind=state.kind,
            subject=state.subject,
            detector=detector,
            status=status,
            severity=self._severity(detector),  # type: ignore[arg-type]
            sequence=alert.sequence,
            started_at=_dt(alert.started_at),
            updated_at=_dt(t),
            resolved_at=_dt(t) if status is AlertStatus.RESOLVED else None,
            notified_time=wall,
            summary=summary,
            evidence=ev,
        )
        state.outbox.append(record)
        return Notification(record, cur.last_ingest)

    # -- evidence ----------------------------------------------------------------

    def _figures(self, w: Window) -> WindowFigures:
        slide = self.config.window.slide_s
        return WindowFigures(
            start=_dt(w.start * slide),
            end=_dt(w.end * slide),
            counts=SentimentCounts(negative=w.neg, positive=w.pos, neutral=w.neu),
            negative_share=w.neg_share,
            positive_share=w.pos_share,
        )

    def _baseline_figures(self, state: KeyState) -> BaselineFigures:
        mean, std, source = self.share_baseline(state) or (state.share.mean, state.share.std, "key")
        return BaselineFigures(
            windows=state.volume.n,
            share_source=source,  # type: ignore[arg-type]
            negative_share_mean=mean,
            negative_share_std=std,
            volume_mean=max(state.volume.mean, 0.0),
            volume_std=state.volume.std,
        )

    def _evidence(
        self,
        state: KeyState,
        verdict: Verdict,
        cur: Window,
        prev: Window,
        baseline: BaselineFigures,
        detector: Detector,
    ) -> AlertEvidence:
        items: list[Item] = []
        for idx in range(cur.start, cur.end):
            b = state.buckets.get(idx)
            if b is not None:
                items.extend(b.top)
        items.sort(key=lambda i: (-i.neg, i.t, i.id))
        top = [
            EvidenceEvent(
                event_id=i.id,
                event_time=_dt(i.t),
                negative_score=min(1.0, max(0.0, i.neg)),
                sentiment=i.label,
                text=i.text or (self._text(i.id) or "")[:EVIDENCE_TEXT_CHARS] or None,
            )
            for i in items[: self.config.lifecycle.top_k]
        ]
        return AlertEvidence(
            current=self._figures(cur),
            previous=self._figures(prev) if detector is Detector.REVERSAL else None,
            baseline=baseline,
            score=round(verdict.score, 6),
            threshold=verdict.threshold,
            method=verdict.method,
            top_events=top,
        )

    # -- persistence -------------------------------------------------------------

    def take_dirty(self) -> list[KeyState]:
        """States changed since the last call (to write to the changelog)."""
        states = [self.keys[k] for k in sorted(self.dirty) if k in self.keys]
        self.dirty.clear()
        return states

    def pending(self) -> list[FinancialAlert]:
        """Notifications decided but not yet confirmed published (outboxes)."""
        return [a for s in self.keys.values() for a in s.outbox]

    def mark_published(self, keys: Iterable[str]) -> None:
        """The outboxes of ``keys`` were published: empty them (the states become dirty)."""
        for key in keys:
            state = self.keys.get(key)
            if state is not None and state.outbox:
                state.outbox.clear()
                self.dirty.add(key)

    def open_alerts(self) -> list[tuple[KeyState, Detector, OpenAlert]]:
        """Every open alert (re-pushed to Alertmanager periodically)."""
        return [(s, d, a) for s in self.keys.values() for d, a in s.alerts.items()]

    def current_view(self, state: KeyState, detector: Detector, alert: OpenAlert) -> FinancialAlert:
        """An open alert as it stands (for the periodic Alertmanager re-push; not a new notification)."""
        ev = alert.evidence
        return FinancialAlert(
            alert_id=alert.alert_id,
            key=state.key,
            key_kind=state.kind,
            subject=state.subject,
            detector=detector,
            status=AlertStatus.FIRING,
            severity=self._severity(detector),  # type: ignore[arg-type]
            sequence=alert.sequence,
            started_at=_dt(alert.started_at),
            updated_at=_dt(alert.last_notified),
            notified_time=datetime.now(UTC),
            summary=f"{detector.value} firing for {state.kind.value} {state.subject}: "
            f"negative share {ev.current.negative_share:.0%} of {ev.current.counts.total} mentions",
            evidence=ev,
        )

    def partition_keys(self, partitions: Collection[int]) -> list[str]:
        """Entity keys fed from the given input partitions."""
        return [
            k
            for k, s in self.keys.items()
            if s.kind is KeyKind.ENTITY and s.partition is not None and s.partition in partitions
        ]

    def drop_partitions(self, partitions: Collection[int]) -> int:
        """Forget the entity keys of input partitions another replica owns now; returns how many.

        Only the memory: their changelog records stay, for the new owner to restore.
        """
        keys = self.partition_keys(partitions)
        for key in keys:
            del self.keys[key]
            self.dirty.discard(key)
        return len(keys)

    @staticmethod
    def dump(state: KeyState) -> bytes:
        """Changelog value of a key."""
        return state.__pydantic_serializer__.to_json(state)

    @staticmethod
    def load(value: bytes) -> KeyState:
        """Parse one changelog value (raises ValueError on a state version this code does not read)."""
        data = orjson.loads(value)
        if data.get("v") != STATE_VERSION:
            msg = f"changelog state version {data.get('v')!r} is not {STATE_VERSION}"
            raise ValueError(msg)
        return KeyState.model_validate(data)

    def install(self, state: KeyState) -> None:
        """Put a restored state in place of this key's (the newest per key wins: call in log order)."""
        self.keys[state.key] = state
        self.max_time = max(self.max_time, state.max_time)

    def restore(self, value: bytes) -> None:
        """Load one changelog value (the newest per key wins: call in log order)."""
        self.install(self.load(value))
