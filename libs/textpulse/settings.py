"""Settings shared by every service (pydantic-settings).

Kafka connection settings use the shared prefix ``TEXTPULSE_KAFKA_`` so one
environment configures every service; each service adds its own settings class
with its own prefix (``TEXTPULSE_INGEST_`` …) for topics, limits and ports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class KafkaSettings(BaseSettings):
    """How to reach the broker, and the producer defaults that do not lose data."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    flavor: Literal["apache", "tansu"] = Field(
        "apache",
        description=(
            "Broker implementation. 'tansu' (the embedded demo broker) has no idempotent or "
            "transactional producer, so idempotence is switched off and exactly-once is refused."
        ),
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    compression: Literal["lz4", "zstd", "gzip", "none"] = Field(
        "lz4", description="lz4: cheap on CPU, good ratio on text."
    )
    linger_ms: int = Field(5, ge=0, le=1000, description="Wait to fill batches; 5 ms costs little latency.")
    max_batch_bytes: int = Field(256 * 1024, ge=16 * 1024, description="Producer batch size per partition.")
    max_request_bytes: int = Field(4 * 1024 * 1024, description="Largest produce request.")
    request_timeout_ms: int = Field(15_000, ge=1000, description="Per-request timeout to the broker.")
    idempotence: bool = Field(True, description="Idempotent producer (applied only where the broker supports it).")
    dlq_max_attempts: int = Field(
        5,
        ge=2,
        le=1000,
        description=(
            "Tries of a batch that fails the same way at the same offsets before its records are retried one by "
            "one and the one that still fails is dead-lettered ('retries exhausted'); outages are not counted."
        ),
    )
    session_timeout_ms: int | None = Field(
        None,
        ge=6000,
        description=(
            "Consumer-group session timeout (default 30 s on Apache Kafka, 10 s on Tansu): how long a "
            "SIGKILLed consumer holds its partitions before the group reassigns them. With a static "
            "member (group_instance_id) a restart inside this time gets its partitions back at once."
        ),
    )
    group_instance_id: str | None = Field(
        None,
        description=(
            "Static group membership (KIP-345) of this replica: a stable id, unique per replica, e.g. the "
            "pod name of a StatefulSet or of a Deployment's pod (a container restart keeps it). "
            "'{hostname}' is replaced by the host name. Unset: dynamic membership (a restart waits for the "
            "session timeout of its killed predecessor, ~30 s). Not on Tansu."
        ),
    )
    stuck_after_s: float = Field(
        60.0,
        gt=0,
        description=(
            "A partition whose committed offset has not moved for this long while records wait behind it is "
            "stuck: textpulse_consumer_stuck is 1 and /ready answers 503 until it moves again."
        ),
    )

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            msg = "SASL security needs TEXTPULSE_KAFKA_SASL_MECHANISM, _SASL_USERNAME and _SASL_PASSWORD"
            raise ValueError(msg)
        return self

    @property
    def use_idempotence(self) -> bool:
        """Idempotence only where the broker implements InitProducerId."""
        return self.idempotence and self.flavor == "apache"


class ServiceSettings(BaseSettings):
    """Fields every service has; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_", extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    http_host: str = Field("127.0.0.1", description="Address of the HTTP endpoints (/health, /ready, /metrics).")
    http_port: int = Field(8080, ge=0, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = Field(True, description="Structured JSON logs (false: human-readable lines).")
    metrics_enabled: bool = Field(True, description="Record textpulse_* metrics.")
    group_id: str | None = Field(None, description="Consumer group (default: textpulse-<service>).")
    lag_refresh_s: float = Field(15.0, gt=0, description="How often consumer lag is measured.")
    delivery: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description=(
            "Processing guarantee of a consume→produce service. at_least_once: commit after the outputs "
            "are acknowledged, consumers de-duplicate by event id. exactly_once: consume→transform→produce "
            "inside a Kafka transaction (Apache Kafka only)."
        ),
    )

    @model_validator(mode="after")
    def _check_delivery(self) -> ServiceSettings:
        if self.delivery == "exactly_once" and self.kafka.flavor == "tansu":
            msg = (
                "delivery=exactly_once needs Kafka transactions, which the embedded Tansu broker does not "
                "implement: use Apache Kafka (TEXTPULSE_KAFKA_FLAVOR=apache) or delivery=at_least_once"
            )
            raise ValueError(msg)
        return self
