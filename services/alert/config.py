"""Detector configuration (YAML), validated once at start-up.

Every threshold lives in the file (default ``services/alert/alert.yaml``) so
operators tune detection without a release; a bad file stops the service at
start with the offending field named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from textpulse.settings import load_yaml_model

DEFAULT_CONFIG = Path(__file__).with_name("alert.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowConfig(_Strict):
    """Event-time sliding windows."""

    size_s: int = Field(300, ge=1, description="Window length in seconds.")
    slide_s: int = Field(60, ge=1, description="Step between window ends; size must be a multiple of it.")
    allowed_lateness_s: int = Field(
        60, ge=0, description="Events up to this far behind the watermark's event time are still counted."
    )
    idle_source_s: float = Field(
        30.0, gt=0, description="An input partition silent this long (wall clock) stops holding the watermark back."
    )

    @model_validator(mode="after")
    def _multiple(self) -> WindowConfig:
        if self.size_s % self.slide_s:
            msg = f"window.size_s ({self.size_s}) must be a multiple of window.slide_s ({self.slide_s})"
            raise ValueError(msg)
        return self

    @property
    def buckets(self) -> int:
        """Slides per window."""
        return self.size_s // self.slide_s


class BaselineConfig(_Strict):
    """Exponentially weighted baseline per key."""

    alpha: float = Field(0.05, gt=0, lt=1, description="Weight of the newest window (0.05 ≈ last 20 windows).")
    min_windows: int = Field(10, ge=1, description="Windows with volume needed before detectors may fire.")
    population_min_mentions: int = Field(
        1000, ge=1, description="Mentions seen before a cold key's surge is judged against the population share."
    )
    min_share_std: float = Field(0.05, gt=0, description="Floor of the negative-share std in z-scores.")
    min_volume_std: float = Field(1.0, gt=0, description="Floor of the volume std in z-scores.")


class SurgeConfig(_Strict):
    """Negative-sentiment surge: negative share well above baseline, with a minimum volume."""

    enabled: bool = True
    method: Literal["zscore", "cusum"] = "zscore"
    min_volume: int = Field(10, ge=1, description="Mentions in the window before the share counts.")
    min_negative: int = Field(5, ge=1, description="Negative mentions the window must hold to fire.")
    min_share: float = Field(0.5, ge=0, le=1, description="Negative share must also reach this.")
    z_threshold: float = Field(3.0, gt=0, description="zscore: fire when (share − mean) / std ≥ this.")
    cusum_k: float = Field(0.5, ge=0, description="cusum: slack in stds subtracted per window.")
    cusum_h: float = Field(5.0, gt=0, description="cusum: fire when the cumulative sum (in stds) ≥ this.")
    severity: Literal["warning", "critical"] = "critical"


class VolumeConfig(_Strict):
    """Volume spike: mentions per window well above baseline."""

    enabled: bool = True
    min_volume: int = Field(10, ge=1, description="Mentions in the window needed to fire.")
    z_threshold: float = Field(4.0, gt=0, description="(volume − mean) / std ≥ this …")
    min_ratio: float = Field(3.0, ge=1, description="… and volume ≥ this × mean.")
    severity: Literal["warning", "critical"] = "warning"


class ReversalConfig(_Strict):
    """Sentiment reversal: the previous window mostly positive, this one mostly negative."""

    enabled: bool = True
    min_volume: int = Field(8, ge=1, description="Mentions needed in each of the two windows.")
    from_positive_share: float = Field(0.6, gt=0, le=1, description="Positive share of the previous window.")
    to_negative_share: float = Field(0.6, gt=0, le=1, description="Negative share of the current window.")
    severity: Literal["warning", "critical"] = "warning"


class LifecycleConfig(_Strict):
    """Alert lifecycle: re-notification and resolution."""

    cooldown_s: int = Field(900, ge=0, description="Least event time between two notifications of one alert.")
    resolve_after_windows: int = Field(3, ge=1, description="Consecutive clear windows before resolving.")
    refire_holdoff_s: int = Field(600, ge=0, description="After a resolution, no new alert of that key+detector.")
    top_k: int = Field(5, ge=1, le=50, description="Evidence events per alert.")


class SentimentConfig(_Strict):
    """Which model labels mean negative and positive (label names vary by model)."""

    negative: list[str] = Field(default_factory=lambda: ["negative", "Bearish"])
    positive: list[str] = Field(default_factory=lambda: ["positive", "Bullish"])


class AlertConfig(_Strict):
    """The whole detector file."""

    version: Literal[1] = 1
    window: WindowConfig = Field(default_factory=WindowConfig)
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    negative_surge: SurgeConfig = Field(default_factory=SurgeConfig)
    volume_spike: VolumeConfig = Field(default_factory=VolumeConfig)
    reversal: ReversalConfig = Field(default_factory=ReversalConfig)
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    sentiment: SentimentConfig = Field(default_factory=SentimentConfig)
    entity_alerts: bool = Field(True, description="Windows per entity (entity.mentions).")
    topic_alerts: bool = Field(True, description="Windows per topic label (text.enriched).")


class ConfigError(ValueError):
    """The detector file is missing or invalid; the message names the file and fields."""


def load_config(path: Path | str | None = None) -> AlertConfig:
    """Read and validate the YAML detector file."""
    return load_yaml_model(Path(path) if path else DEFAULT_CONFIG, AlertConfig, what="alert config", error=ConfigError)
