"""Settings of the index service (env prefix ``TEXTPULSE_INDEX_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import ALERTS_FINANCIAL, SUPPORT_ROUTED, TEXT_ENRICHED, dlq
from textpulse.settings import ServiceSettings


class IndexSettings(ServiceSettings):
    """Elasticsearch connection, index naming, topics, batching, retries and redaction."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_INDEX_", extra="ignore")

    http_port: int = Field(8085, ge=0, le=65535)
    es_url: str = Field("http://127.0.0.1:9200", description="Elasticsearch HTTP endpoint(s), comma-separated.")
    es_ca_file: Path | None = Field(
        None, description="PEM CA bundle that signed an https es_url (e.g. ECK's self-signed HTTP certificate)."
    )
    es_request_timeout_s: float = Field(30.0, gt=0, description="Per-request timeout to Elasticsearch.")
    es_connect_timeout_s: float = Field(120.0, gt=0, description="Wait for Elasticsearch at start-up.")
    index_prefix: str = Field(
        "textpulse",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Indices are <prefix>-<family>-YYYY.MM; the search alias is <prefix>-<family>.",
    )
    shards: int = Field(1, ge=1, le=64, description="Primary shards of each monthly index.")
    replicas: int = Field(0, ge=0, le=5, description="Replicas (0 on the single local node).")
    refresh_interval: str = Field("1s", description="Index refresh interval (search visibility delay).")
    retention_months: int = Field(
        13, ge=0, description="Monthly indices older than this many months are deleted (0 = current month only)."
    )
    retention_check_s: float = Field(3600.0, gt=0, description="How often the retention job runs.")
    topic_enriched: str = Field(TEXT_ENRICHED.name, description="Enriched events (EnrichedEvent).")
    topic_alerts: str = Field(ALERTS_FINANCIAL.name, description="Financial alerts (indexed as opaque JSON).")
    topic_routed: str = Field(SUPPORT_ROUTED.name, description="Routed support messages (indexed as opaque JSON).")
    topic_dlq: str = Field(dlq("index").name, description="Records that cannot be indexed, with the reason.")
    consume_alerts: bool = Field(True, description="Index alerts.financial.")
    consume_routed: bool = Field(True, description="Index support.routed.")
    redact_pii: bool = Field(True, description="Mask e-mails, phones, cards and IBANs in documents and logs.")
    kafka_batch_records: int = Field(
        5000, ge=1, description="Most records per consumed batch (several bulk chunks: building overlaps writing)."
    )
    kafka_batch_timeout_ms: int = Field(200, ge=1, description="Wait to fill a batch.")
    bulk_chunk_docs: int = Field(1000, ge=1, description="Documents per bulk request.")
    bulk_chunk_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024, description="Largest bulk request body.")
    bulk_concurrency: int = Field(
        2,
        ge=1,
        le=16,
        description=(
            "Bulk requests in flight at once within a batch (chunks sharing a document id never overlap, "
            "so the last record of an id wins as with 1); the batch is committed when all are acknowledged."
        ),
    )
    retry_initial_s: float = Field(0.5, gt=0, description="First backoff after a retryable failure.")
    retry_max_s: float = Field(10.0, gt=0, description="Longest backoff between retries.")
    retry_deadline_s: float = Field(
        120.0,
        gt=0,
        description=(
            "How long one batch is retried inside the handler; then the batch is nacked (not committed) and "
            "redelivered, so an outage never loses data and the consumer stays within max.poll.interval."
        ),
    )
    search_max_window: int = Field(10_000, ge=100, description="Deepest result reachable by paging (from + size).")
