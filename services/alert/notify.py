"""Pushes to Prometheus Alertmanager (API v2) and to an optional webhook.

Kafka (``alerts.financial``) is the record of truth; these pushes are best
effort: a failure is logged and counted, and Alertmanager is brought up to
date by the periodic re-push of every open alert (which also keeps firing
alerts from timing out there: each push sets ``endsAt`` a few intervals ahead).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from textpulse.contracts.alerts import AlertStatus, FinancialAlert
from textpulse.contracts.events import utcnow

log = logging.getLogger(__name__)

SOURCE_LABEL = "textpulse-alert"


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def postable(alert: FinancialAlert, *, generator_url: str, ttl_s: float, now: datetime | None = None) -> dict[str, Any]:
    """Alertmanager API v2 ``PostableAlert`` of a notification (labels identify key + detector)."""
    now = now or utcnow()
    ev = alert.evidence
    ends = now if alert.status is AlertStatus.RESOLVED else now + timedelta(seconds=ttl_s)
    return {
        "labels": {
            "alertname": "FinancialSentimentAlert",
            "source": SOURCE_LABEL,
            "service": "alert",
            "detector": alert.detector.value,
            "key_kind": alert.key_kind.value,
            "entity": alert.subject[:200],
            "severity": alert.severity,
        },
        "annotations": {
            "summary": alert.summary,
            "alert_id": alert.alert_id,
            "sequence": str(alert.sequence),
            "window": f"{_iso(ev.current.start)} – {_iso(ev.current.end)}",
            "top_events": ", ".join(e.event_id for e in ev.top_events),
        },
        "startsAt": _iso(min(alert.started_at, now)),
        "endsAt": _iso(ends),
        "generatorURL": generator_url,
    }


class Notifier:
    """Alertmanager and webhook clients (either may be disabled with ``None``)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        alertmanager_url: str | None,
        webhook_url: str | None,
        generator_url: str,
        ttl_s: float,
    ) -> None:
        self.client = client
        self.alertmanager_url = alertmanager_url.rstrip("/") if alertmanager_url else None
        self.webhook_url = webhook_url or None
        self.generator_url = generator_url
        self.ttl_s = ttl_s

    async def push(self, alerts: Sequence[FinancialAlert]) -> list[str]:
        """Push notifications; returns the targets that failed (``alertmanager``, ``webhook``)."""
        failed: list[str] = []
        if not alerts:
            return failed
        if self.alertmanager_url:
            body = [postable(a, generator_url=self.generator_url, ttl_s=self.ttl_s) for a in alerts]
            if not await self._post(f"{self.alertmanager_url}/api/v2/alerts", body, "alertmanager"):
                failed.append("alertmanager")
        if self.webhook_url:
            for alert in alerts:
                if not await self._post(self.webhook_url, alert.model_dump(mode="json"), "webhook"):
                    failed.append("webhook")
                    break
        return failed

    async def _post(self, url: str, body: Any, target: str) -> bool:
        try:
            resp = await self.client.post(url, json=body)
            resp.raise_for_status()
            return True
        except httpx.HTTPError as exc:
            log.warning("alert push failed", extra={"target": target, "url": url, "error": repr(exc)})
            return False
