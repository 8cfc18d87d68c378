"""Settings of the classify service (env prefix ``TEXTPULSE_CLASSIFY_``; inference: ``TEXTPULSE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import TEXT_CLASSIFIED, TEXT_RAW, dlq
from textpulse.inference.settings import InferenceSettings
from textpulse.settings import ServiceSettings


class ClassifySettings(ServiceSettings):
    """Topics, model names, batching and backoff of classify."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_CLASSIFY_", extra="ignore")

    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    http_port: int = Field(8081, ge=0, le=65535)
    topic_in: str = Field(TEXT_RAW.name, description="Validated events.")
    topic_out: str = Field(TEXT_CLASSIFIED.name, description="Events with labels.")
    topic_dlq: str = Field(dlq("classify").name, description="Records classify cannot process.")
    sentiment_model: str = Field("sentiment", description="Model name in the repository / on Triton.")
    topic_model: str = Field("topic")
    intent_model: str = Field("intent")
    top_k_scores: int = Field(5, ge=1, le=200, description="Label probabilities kept per result.")
    kafka_batch_records: int = Field(256, ge=1, description="Most records per poll = per inference batch.")
    kafka_batch_timeout_ms: int = Field(50, ge=1, description="Wait to fill a batch.")
    publish_timeout_s: float = Field(15.0, gt=0, description="Wait for broker acks of the outputs.")
    unavailable_max_wait_s: float = Field(
        240.0, gt=0, description="Retry an unavailable backend this long per batch, then redeliver the batch."
    )
    unavailable_backoff_s: float = Field(0.5, gt=0, description="First wait before retrying the backend.")
    unavailable_backoff_max_s: float = Field(10.0, gt=0)
