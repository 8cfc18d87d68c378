"""Settings of the classify service (env prefix ``TEXTPULSE_CLASSIFY_``; inference: ``TEXTPULSE_``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict
from textpulse.contracts import Channel
from textpulse.contracts.topics import TEXT_CLASSIFIED, TEXT_RAW, dlq
from textpulse.inference import HeadSpec
from textpulse.inference.settings import InferenceSettings
from textpulse.settings import ServiceSettings

from .core import INTENT, SENTIMENT, TOPIC, parse_head, routes_for


class ClassifySettings(ServiceSettings):
    """Topics, model heads, batching and backoff of classify."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_CLASSIFY_", extra="ignore")

    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    http_port: int = Field(8081, ge=0, le=65535)
    topic_in: str = Field(TEXT_RAW.name, description="Validated events.")
    topic_out: str = Field(TEXT_CLASSIFIED.name, description="Events with labels.")
    topic_dlq: str = Field(dlq("classify").name, description="Records classify cannot process.")
    # Heads per task and channel group: MODEL (its primary head) or MODEL:HEAD; a head is named
    # by the task it was trained for. Defaults: one multi-head pass per event (finance / support).
    sentiment_head: str = Field(
        "finance:sentiment", description="Sentiment of news / social / review (single-task: `sentiment`)."
    )
    topic_head: str = Field("finance:topic", description="Topic of news / social (single-task: `topic`).")
    support_intent_head: str = Field(
        "support:clinc150", description="Intent with out-of-scope of support (single-task: `intent`)."
    )
    support_sentiment_head: str = Field(
        "support:sentiment", description="Sentiment of support (single-task: `sentiment`)."
    )
    expected_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Optional pin per task (sentiment, topic, intent): start-up fails when a head's labels differ.",
    )
    top_k_scores: int = Field(5, ge=1, le=200, description="Label probabilities kept per result.")
    kafka_batch_records: int = Field(
        512,  # 256 read 209-213 ev/s, 512 216-243 in the pipeline benchmark (docs/models.md, "CPU layout")
        ge=1,
        description="Most records per poll = per inference batch.",
    )
    kafka_batch_timeout_ms: int = Field(50, ge=1, description="Wait to fill a batch.")
    # Off by default: on the idle 2-core bench (2,000 tweets, in-process, two A/B rounds) chunks of 128
    # gave the same throughput (166.7 vs 168.7 ev/s) for ~4 % more CPU (9.9 vs 9.5 CPU-s per 1,000
    # events): the next stage starts sooner in a burst, but the smaller sorted sets pad more.
    chunk_records: int = Field(
        0,
        ge=0,
        description=(
            "Records handled and written together within a poll (0: the whole poll): the next stage gets its "
            "first input after one chunk, not after the whole poll."
        ),
    )
    publish_timeout_s: float = Field(15.0, gt=0, description="Wait for broker acks of the outputs.")
    unavailable_max_wait_s: float = Field(
        240.0, gt=0, description="Retry an unavailable backend this long per batch, then redeliver the batch."
    )
    unavailable_backoff_s: float = Field(0.5, gt=0, description="First wait before retrying the backend.")
    unavailable_backoff_max_s: float = Field(10.0, gt=0)

    @field_validator("sentiment_head", "topic_head", "support_intent_head", "support_sentiment_head")
    @classmethod
    def _model_head(cls, value: str) -> str:
        parse_head(value)
        return value

    @field_validator("expected_labels")
    @classmethod
    def _known_tasks(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - {SENTIMENT, TOPIC, INTENT})
        if unknown:
            msg = f"expected_labels: unknown task(s) {unknown}; use {SENTIMENT}, {TOPIC}, {INTENT}"
            raise ValueError(msg)
        return value

    def routes(self) -> dict[Channel, dict[str, HeadSpec]]:
        """Channel → task → model head (raises ValueError on a malformed ``MODEL:HEAD``)."""
        return routes_for(
            self.sentiment_head,
            self.topic_head,
            self.support_intent_head,
            self.support_sentiment_head,
            self.expected_labels,
        )
