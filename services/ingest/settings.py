"""Settings of the ingest service (env prefix ``TEXTPULSE_INGEST_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import TEXT_IN, TEXT_RAW, dlq
from textpulse.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Topics, limits and the idempotency window of ingest."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_INGEST_", extra="ignore")

    http_port: int = Field(8080, ge=0, le=65535)
    topic_in: str = Field(TEXT_IN.name, description="Raw JSON from other producers.")
    topic_out: str = Field(TEXT_RAW.name, description="Validated events.")
    topic_dlq: str = Field(dlq("ingest").name, description="Rejected text.in records.")
    consume_text_in: bool = Field(True, description="Run the text.in → text.raw Kafka edge.")
    max_event_bytes: int = Field(256 * 1024, ge=1024, description="Largest single-event body (413 above).")
    max_batch_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest batch body (413 above).")
    max_batch_events: int = Field(5000, ge=1, description="Most events in one batch request (413 above).")
    publish_timeout_s: float = Field(10.0, gt=0, description="Wait for broker acks before answering 503.")
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503.")
    dedup_capacity: int = Field(1_000_000, ge=0, description="Event ids remembered for idempotency.")
    dedup_ttl_s: float = Field(24 * 3600, gt=0, description="How long an id is remembered.")
    dedup_warmup_records: int = Field(
        50_000, ge=0, description="Records per text.raw partition re-read at start to rebuild the id window."
    )
    kafka_batch_records: int = Field(5000, ge=1, description="Most text.in records per consumed batch.")
    kafka_batch_timeout_ms: int = Field(100, ge=1, description="Wait to fill a text.in batch.")
