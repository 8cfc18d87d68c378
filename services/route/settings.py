"""Settings of the route service (env prefix ``TEXTPULSE_ROUTE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import SUPPORT_ROUTED, TEXT_ENRICHED, dlq
from textpulse.settings import ServiceSettings

from .rules import DEFAULT_RULES

#: Per-queue topics are ``<prefix><queue>``; the lead declares them in contracts.topics.
QUEUE_TOPIC_PREFIX = "support.queue."


class RouteSettings(ServiceSettings):
    """Topics and rules file of the route service."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_ROUTE_", extra="ignore")

    http_port: int = Field(8084, ge=0, le=65535)
    rules_path: Path = Field(DEFAULT_RULES, description="Routing rules YAML, validated at start.")
    topic_in: str = Field(TEXT_ENRICHED.name, description="Enriched events; only channel 'support' is routed.")
    topic_out: str = Field(SUPPORT_ROUTED.name, description="Every routed message, keyed by conversation.")
    queue_topic_prefix: str = Field(QUEUE_TOPIC_PREFIX, description="Per-queue topics: <prefix><queue>.")
    topic_dlq: str = Field(dlq("route").name, description="Records the service cannot read.")
    publish_timeout_s: float = Field(10.0, gt=0, description="Wait for broker acks.")
    kafka_batch_records: int = Field(2000, ge=1, description="Most records per consumed batch.")
    kafka_batch_timeout_ms: int = Field(100, ge=1, description="Wait to fill a batch.")
