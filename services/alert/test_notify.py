"""Unit tests of the Alertmanager payload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from textpulse.contracts.alerts import (
    AlertEvidence,
    AlertStatus,
    BaselineFigures,
    Detector,
    FinancialAlert,
    KeyKind,
    SentimentCounts,
    WindowFigures,
)

from .notify import SOURCE_LABEL, postable

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def alert(status: AlertStatus) -> FinancialAlert:
    window = WindowFigures(
        start=NOW - timedelta(minutes=5),
        end=NOW,
        counts=SentimentCounts(negative=9, positive=1, neutral=2),
        negative_share=0.75,
        positive_share=1 / 12,
    )
    baseline = BaselineFigures(
        windows=40, negative_share_mean=0.15, negative_share_std=0.05, volume_mean=10, volume_std=3
    )
    evidence = AlertEvidence(current=window, baseline=baseline, score=5.1, threshold=3.0, method="zscore")
    return FinancialAlert(
        alert_id="negative_surge:entity:ACME:1",
        key="entity:ACME",
        key_kind=KeyKind.ENTITY,
        subject="ACME",
        detector=Detector.NEGATIVE_SURGE,
        status=status,
        severity="critical",
        sequence=1,
        started_at=NOW,
        updated_at=NOW,
        notified_time=NOW,
        summary="s",
        evidence=evidence,
    )


def test_firing_alert_ends_in_the_future() -> None:
    body = postable(alert(AlertStatus.FIRING), generator_url="http://x", ttl_s=180, now=NOW)
    assert body["labels"] == {
        "alertname": "FinancialSentimentAlert",
        "source": SOURCE_LABEL,
        "service": "alert",
        "detector": "negative_surge",
        "key_kind": "entity",
        "entity": "ACME",
        "severity": "critical",
    }
    assert body["endsAt"] == "2026-03-02T12:03:00Z"
    assert body["annotations"]["alert_id"] == "negative_surge:entity:ACME:1"


def test_resolved_alert_ends_now() -> None:
    body = postable(alert(AlertStatus.RESOLVED), generator_url="http://x", ttl_s=180, now=NOW)
    assert body["endsAt"] == "2026-03-02T12:00:00Z"
