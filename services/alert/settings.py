"""Settings of the alert service (env prefix ``TEXTPULSE_ALERT_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import ALERTS_FINANCIAL, ENTITY_MENTIONS, TEXT_ENRICHED, dlq
from textpulse.settings import ServiceSettings

from .config import DEFAULT_CONFIG

#: Changelog topic of the alert state (compacted, keyed by alert key); the lead declares it in contracts.topics.
ALERT_STATE_TOPIC = "alerts.state"


class AlertSettings(ServiceSettings):
    """Topics, detector file, Alertmanager and webhook of the alert service."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_ALERT_", extra="ignore")

    http_port: int = Field(8083, ge=0, le=65535)
    config_path: Path = Field(DEFAULT_CONFIG, description="Detector YAML (thresholds, windows, lifecycle).")
    topic_mentions: str = Field(ENTITY_MENTIONS.name, description="Entity mentions (entity windows).")
    topic_enriched: str = Field(TEXT_ENRICHED.name, description="Enriched events (topic windows, evidence texts).")
    topic_out: str = Field(ALERTS_FINANCIAL.name, description="Alert notifications.")
    topic_state: str = Field(ALERT_STATE_TOPIC, description="Compacted changelog of the per-key state.")
    topic_dlq: str = Field(dlq("alert").name, description="Records the service cannot read.")
    consume_enriched: bool = Field(True, description="Also consume text.enriched (topic windows, texts).")
    alertmanager_url: str | None = Field(
        "http://127.0.0.1:9093", description="Alertmanager base URL (API v2); empty disables the push."
    )
    webhook_url: str | None = Field(None, description="Optional URL that receives every notification as JSON.")
    push_interval_s: float = Field(60.0, gt=0, description="Open alerts are re-pushed to Alertmanager this often.")
    tick_interval_s: float = Field(
        1.0, gt=0, description="Windows the watermark passed are evaluated this often while no batch arrives."
    )
    push_timeout_s: float = Field(5.0, gt=0, description="Timeout of one Alertmanager / webhook request.")
    external_url: str = Field("http://127.0.0.1:8083", description="generatorURL of pushed alerts.")
    text_cache_size: int = Field(200_000, ge=0, description="Event texts kept for evidence (from text.enriched).")
    publish_timeout_s: float = Field(10.0, gt=0, description="Wait for broker acks of alerts and state.")
    restore_timeout_s: float = Field(120.0, gt=0, description="Longest changelog replay at start.")
    kafka_batch_records: int = Field(2000, ge=1, description="Most records per consumed batch.")
    kafka_batch_timeout_ms: int = Field(200, ge=1, description="Wait to fill a batch.")
