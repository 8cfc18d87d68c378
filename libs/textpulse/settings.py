"""Settings shared by every service (pydantic-settings).

Kafka connection settings use the shared prefix ``TEXTPULSE_KAFKA_`` so one
environment configures every service; each service adds its own settings class
with its own prefix (``TEXTPULSE_INGEST_`` …) for topics, limits and ports.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

M = TypeVar("M", bound=BaseModel)


def validation_problems(exc: ValidationError, *, root: str = "<root>") -> str:
    """A pydantic error as one line an operator can act on: ``field.path: message; ...``.

    No input values (settings may hold secrets) and no "Value error, " prefix: the message of a
    custom validator is ours. ``root`` names an error about the whole document.
    """
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or root}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors(include_url=False, include_input=False)
    )


def load_yaml_model(path: Path, model: type[M], *, what: str, error: type[ValueError] = ValueError) -> M:
    """Read a YAML file and validate it as ``model`` (see :func:`load_yaml_document`)."""
    return load_yaml_document(path, model, what=what, error=error)[0]


def load_yaml_document(path: Path, model: type[M], *, what: str, error: type[ValueError] = ValueError) -> tuple[M, str]:
    """The YAML file validated as ``model`` (an empty file is ``{}``: every default), and its text.

    The one loader of the YAML files the services read at start (route's rules, alert's
    detectors) and of the training configs: any problem raises ``error`` (the caller's own
    class) with one line naming ``what``, the file and the problem (unreadable, not YAML/JSON,
    or the invalid fields, see :func:`validation_problems`), which start-up logs before
    exiting. The text comes back so that a caller can fingerprint exactly what it validated.
    A ``.json`` file is parsed as JSON: PyYAML reads YAML 1.1, where JSON's ``5e-05`` is a string.
    """
    try:
        text = path.read_text("utf-8")
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except OSError as exc:
        msg = f"{what} {path}: cannot read: {exc}"
        raise error(msg) from exc
    except yaml.YAMLError as exc:
        msg = f"{what} {path}: invalid YAML: {exc}"
        raise error(msg) from exc
    except json.JSONDecodeError as exc:
        msg = f"{what} {path}: invalid JSON: {exc}"
        raise error(msg) from exc
    try:
        return model.model_validate(raw or {}), text
    except ValidationError as exc:
        msg = f"{what} {path}: {validation_problems(exc)}"
        raise error(msg) from exc


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
            "Consumer-group session timeout (default on Apache Kafka 8 s for a dynamic member, 30 s for a "
            "static one; 10 s on Tansu): how long a SIGKILLed consumer holds its partitions before the group "
            "reassigns them. With a static member (group_instance_id) a restart inside this time gets its "
            "partitions back at once."
        ),
    )
    group_instance_id: str | None = Field(
        None,
        description=(
            "Static group membership (KIP-345) of this replica: a stable id, unique per replica, e.g. the "
            "pod name of a StatefulSet or of a Deployment's pod (a container restart keeps it). "
            "'{hostname}' is replaced by the host name. Unset: dynamic membership (a restart waits for the "
            "session timeout of its killed predecessor, ~8 s). Not on Tansu."
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


# The two derivations of how to connect live beside KafkaSettings, not in textpulse.kafka: the lag
# monitor (textpulse.observability) needs them, and textpulse.kafka imports observability (no cycle).
def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """TLS context for SSL / SASL_SSL listeners (None for plaintext)."""
    if settings.security_protocol not in {"SSL", "SASL_SSL"}:
        return None
    ctx = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    if settings.ssl_certfile:
        ctx.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None)
    return ctx


def client_options(settings: KafkaSettings) -> dict[str, object]:
    """Connection options for raw aiokafka clients (admin, lag probe, replay readers)."""
    opts: dict[str, object] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    ctx = ssl_context(settings)
    if ctx is not None:
        opts["ssl_context"] = ctx
    return opts
