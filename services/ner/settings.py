"""Settings of the NER service (env prefix ``TEXTPULSE_NER_``; inference: ``TEXTPULSE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import ENTITY_MENTIONS, TEXT_CLASSIFIED, TEXT_ENRICHED, dlq
from textpulse.inference.settings import InferenceSettings
from textpulse.settings import ServiceSettings


class NerSettings(ServiceSettings):
    """Topics, model name, batching and backoff of NER."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_NER_", extra="ignore")

    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    http_port: int = Field(8082, ge=0, le=65535)
    topic_in: str = Field(TEXT_CLASSIFIED.name, description="Classified events.")
    topic_out: str = Field(TEXT_ENRICHED.name, description="Fully enriched events.")
    topic_mentions: str = Field(ENTITY_MENTIONS.name, description="One record per entity mention.")
    topic_dlq: str = Field(dlq("ner").name, description="Records NER cannot process.")
    ner_model: str = Field("ner", description="Token-classification model name.")
    cashtags: bool = Field(True, description="Merge $TICKER cashtags in by rule (type TICKER).")
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
