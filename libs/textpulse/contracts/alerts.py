"""Wire contracts of the financial sentiment alerts (``alerts.financial``).

One record per notification of an alert: the first firing, each re-notification
(at most one per cooldown) and the resolution. ``alert_id`` is stable for the
life of one alert and ``sequence`` counts its notifications, so a consumer
de-duplicates a redelivered notification by ``(alert_id, sequence)``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, Field

from .events import SCHEMA_VERSION, ShortLabel, WireModel


class Detector(StrEnum):
    """Which anomaly an alert reports."""

    NEGATIVE_SURGE = "negative_surge"
    VOLUME_SPIKE = "volume_spike"
    REVERSAL = "reversal"


class AlertStatus(StrEnum):
    """Lifecycle state carried by a notification."""

    FIRING = "firing"
    RESOLVED = "resolved"


class KeyKind(StrEnum):
    """What an alert key is about."""

    ENTITY = "entity"
    TOPIC = "topic"


class SentimentCounts(WireModel):
    """Mentions in a window by sentiment (events without sentiment count as neutral)."""

    negative: int = Field(0, ge=0, description="Mentions whose sentiment is negative (e.g. Bearish).")
    positive: int = Field(0, ge=0, description="Mentions whose sentiment is positive (e.g. Bullish).")
    neutral: int = Field(0, ge=0, description="Every other mention.")

    @property
    def total(self) -> int:
        """All mentions of the window."""
        return self.negative + self.positive + self.neutral


class WindowFigures(WireModel):
    """Figures of one event-time window."""

    start: AwareDatetime = Field(description="Window start (inclusive, event time).")
    end: AwareDatetime = Field(description="Window end (exclusive, event time).")
    counts: SentimentCounts = Field(description="Mentions by sentiment.")
    negative_share: float = Field(ge=0.0, le=1.0, description="negative / total (0 when empty).")
    positive_share: float = Field(ge=0.0, le=1.0, description="positive / total (0 when empty).")


class BaselineFigures(WireModel):
    """Exponentially weighted baseline of a key before the alert."""

    windows: int = Field(ge=0, description="Windows folded into the baseline.")
    share_source: Literal["key", "population"] = Field(
        "key", description="Negative-share baseline of this key, or of all mentions while the key is cold."
    )
    negative_share_mean: float = Field(description="EW mean of the negative share (windows with enough volume).")
    negative_share_std: float = Field(ge=0.0, description="EW standard deviation of the negative share.")
    volume_mean: float = Field(ge=0.0, description="EW mean of mentions per window.")
    volume_std: float = Field(ge=0.0, description="EW standard deviation of mentions per window.")


class EvidenceEvent(WireModel):
    """One event that drove the alert."""

    event_id: str = Field(description="Id of the event (join with text.raw / the search index).")
    event_time: AwareDatetime = Field(description="Event time.")
    negative_score: float = Field(ge=0.0, le=1.0, description="Model probability of negative sentiment.")
    sentiment: str | None = Field(None, description="Winning sentiment label.")
    text: str | None = Field(None, description="Text of the event when the service saw it (else null).")


class AlertEvidence(WireModel):
    """Why the alert fired: current window vs baseline, and the events behind it."""

    current: WindowFigures = Field(description="The window that (last) met the condition.")
    previous: WindowFigures | None = Field(None, description="The window before it (reversal detector).")
    baseline: BaselineFigures = Field(description="Baseline of the key before this window.")
    score: float = Field(description="Detector statistic: z-score, CUSUM value or negative share (see detector).")
    threshold: float = Field(description="Threshold the statistic crossed.")
    method: str = Field(description="zscore | cusum | ratio | shares.")
    top_events: list[EvidenceEvent] = Field(
        default_factory=list, description="Top-k events of the window by negative confidence."
    )


class FinancialAlert(WireModel):
    """Value of ``alerts.financial``: one notification of one alert, keyed by ``key``."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    alert_id: ShortLabel = Field(description="Stable id of this alert: '<detector>:<key>:<start epoch seconds>'.")
    key: ShortLabel = Field(description="Alert key: 'entity:<normalised entity>' or 'topic:<topic label>'.")
    key_kind: KeyKind = Field(description="entity | topic.")
    subject: str = Field(description="The entity key or topic label alone.")
    detector: Detector = Field(description="negative_surge | volume_spike | reversal.")
    status: AlertStatus = Field(description="firing | resolved.")
    severity: Literal["warning", "critical"] = Field(description="From the detector configuration.")
    sequence: int = Field(ge=1, description="Notification number of this alert (1 = first firing).")
    started_at: AwareDatetime = Field(description="Event time of the window end at which it first fired.")
    updated_at: AwareDatetime = Field(description="Event time of this notification.")
    resolved_at: AwareDatetime | None = Field(None, description="Event time of the resolution (resolved only).")
    notified_time: AwareDatetime = Field(description="Wall-clock time the service emitted this notification.")
    summary: str = Field(description="One human-readable line.")
    evidence: AlertEvidence = Field(description="Figures and events behind the alert.")
