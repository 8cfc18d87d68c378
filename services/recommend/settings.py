"""Settings of the recommend service (env prefix ``TEXTPULSE_RECOMMEND_``; inference: ``TEXTPULSE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict
from textpulse.contracts.topics import ITEMS, RECS_PROFILES, RECS_SCORES, USER_INTERACTIONS, dlq
from textpulse.inference.settings import InferenceSettings
from textpulse.recsys.recommender import RecommenderConfig
from textpulse.recsys.scoring import HybridWeights
from textpulse.settings import ServiceSettings


class RecommendSettings(ServiceSettings):
    """Topics, scoring weights, state bounds and refresh periods of recommend."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_RECOMMEND_", extra="ignore")

    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    http_port: int = Field(8086, ge=0, le=65535)
    model_name: str = Field("recommend", description="Embedding model in the repository / on Triton.")
    allow_base_model: bool = Field(
        True, description="Use the pretrained base encoder when no 'recommend' model is exported (in-process only)."
    )
    topic_items: str = Field(ITEMS.name, description="Catalogue (compacted).")
    topic_interactions: str = Field(USER_INTERACTIONS.name, description="User-item interactions.")
    topic_out: str = Field(RECS_SCORES.name, description="Recommendations per user.")
    topic_profiles: str = Field(RECS_PROFILES.name, description="Compacted changelog of the user profiles.")
    topic_dlq: str = Field(dlq("recommend").name, description="Records recommend cannot process.")
    ranker: bool = Field(
        True,
        description="Serve the LambdaRank ranker shipped in the encoder's export (ranker/ beside its weights) "
        "when there is one; unknown users and users without a known positive get the hybrid / popular fallback.",
    )
    ranker_dir: Path | None = Field(
        None, description="A ranker folder to serve instead of the export's (must exist and match the encoder)."
    )
    new_item_slots: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Slots of each list kept for the best text matches among items nobody liked yet (unset: the "
        "ranker's own, 1 as shipped; 0 trades new items' exposure for ~0.007 nDCG@10 on the dev split, see README).",
    )
    top_k: int = Field(10, ge=1, le=100, description="Items per published recommendation.")
    max_k: int = Field(100, ge=1, le=1000, description="Largest k the HTTP API serves.")
    publish_on_change: bool = Field(True, description="Publish recs.scores for every user whose profile changed.")
    # Defaults = the config make bench-recommend chose on an inner temporal split of MovieLens (see README).
    weight_text: float = Field(2.0, ge=0, description="Weight of the text cosine in the hybrid score.")
    weight_cf: float = Field(1.0, ge=0, description="Weight of item-kNN (scaled to the user's best).")
    weight_pop: float = Field(0.15, ge=0, description="Weight of the popularity prior.")
    half_life_days: float = Field(30.0, gt=0, description="Interest of a positive halves this long before the newest.")
    profile_items: int = Field(200, ge=1, description="Recent positives in the interest vector.")
    max_positives: int = Field(200, ge=1, description="Positives kept per profile (CF input).")
    max_seen: int = Field(5000, ge=1, description="Seen items kept per profile (excluded from results).")
    knn_neighbours: int = Field(100, ge=1, description="Neighbours kept per item in item-kNN.")
    cf_refresh_s: float = Field(30.0, gt=0, description="Rebuild item-kNN and popularity this often (when changed).")
    cache_size: int = Field(100_000, ge=0, description="Cached recommendation lists (user, k).")
    blas_threads: int = Field(1, ge=0, description="BLAS threads for scoring (0: the library's default).")
    kafka_batch_records: int = Field(500, ge=1, description="Most records per consumed batch.")
    kafka_batch_timeout_ms: int = Field(100, ge=1, description="Wait to fill a batch.")
    publish_timeout_s: float = Field(15.0, gt=0, description="Wait for broker acks of profiles and recommendations.")
    restore_timeout_s: float = Field(300.0, gt=0, description="Longest catalogue + profile replay at start.")
    vector_cache_dir: Path | None = Field(
        None,
        description=(
            "Directory of the item vectors kept across restarts (one file per model version, by item text): "
            "a restart embeds only new or changed items. Unset: every item is embedded again at start-up."
        ),
    )
    unavailable_max_wait_s: float = Field(120.0, gt=0, description="Retry an unavailable encoder this long per batch.")

    def recommender_config(self) -> RecommenderConfig:
        return RecommenderConfig(
            weights=HybridWeights(text=self.weight_text, cf=self.weight_cf, pop=self.weight_pop),
            half_life_days=self.half_life_days,
            profile_items=self.profile_items,
            knn_neighbours=self.knn_neighbours,
        )
