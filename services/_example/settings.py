"""Settings of the example service (env prefix ``TEXTPULSE_EXAMPLE_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.events import Channel
from textpulse.contracts.topics import TEXT_RAW, dlq
from textpulse.settings import ServiceSettings


class ExampleSettings(ServiceSettings):
    """Topics (defaults from contracts.topics) and the one knob of the logic."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_EXAMPLE_", extra="ignore")

    http_port: int = Field(8099, ge=0, le=65535)
    channels: frozenset[Channel] = Field(frozenset({Channel.SUPPORT}), description="Channels kept.")
    topic_in: str = Field(TEXT_RAW.name, description="Validated events.")
    topic_out: str = Field("example.kept", description="The kept events (a real service declares its topic).")
    topic_dlq: str = Field(dlq("example").name, description="Records that are not TextEvents.")
    publish_timeout_s: float = Field(10.0, gt=0, description="Wait for broker acks of the outputs.")
    kafka_batch_records: int = Field(500, ge=1, description="Most records per consumed batch.")
    kafka_batch_timeout_ms: int = Field(100, ge=1, description="Wait to fill a batch.")
