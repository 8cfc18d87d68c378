"""Wire contracts: one pydantic model per topic value.

Services never hand-build dicts for the wire; they build these models and
serialise them with :func:`encode`. Every value the platform writes carries ``schema_version``,
the contract's *major* version (docs/contracts.md, schema evolution):

- Within one major version a producer may add optional fields. Consumers are
  tolerant readers: :class:`WireModel` ignores fields it does not know, so an
  older consumer reads a newer producer's record, and a newer consumer reads an
  older record because every added field has a default.
- A breaking change (a removed, renamed or retyped field, a new required field,
  a narrower constraint) bumps ``schema_version``; a consumer refuses
  (dead-letters) a major version it does not read instead of misreading it.
- The outside edge stays strict: :class:`TextEventIn` (``POST /v1/events`` and
  ``text.in``) rejects unknown fields with ``unknown_field``, so a client's typo
  is reported instead of silently dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1

#: Maximum characters of ``text`` after normalisation. Long enough for a news
#: paragraph or a support e-mail; longer inputs are rejected rather than
#: silently truncated, so a client learns its data did not fit.
MAX_TEXT_CHARS = 10_000

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7E]+$"),
]
"""Printable ASCII without spaces: safe as a Kafka key, a header value and an ES doc id."""

ShortLabel = Annotated[str, StringConstraints(min_length=1, max_length=128)]
MetadataValue = str | int | float | bool | None


#: Category Cc (C0 and C1 controls) except tab and newline, plus lone surrogates (Cs),
#: which JSON escapes can produce and which cannot be encoded as UTF-8.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]+")

#: Raw input larger than this is refused before normalisation, to bound work.
MAX_RAW_TEXT_CHARS = 4 * MAX_TEXT_CHARS


def normalise_text(text: str) -> str:
    """NFC, CRLF → LF, control characters (except newline and tab) removed, trimmed.

    Format characters (category Cf, e.g. the zero-width joiner inside emoji) are
    kept: removing them would change meaning.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROLS.sub("", text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.strip()


def _normalise_before(value: object) -> object:
    """Normalise a text field before its length constraints apply (non-strings pass to the type check)."""
    if isinstance(value, str):
        if len(value) > MAX_RAW_TEXT_CHARS:
            msg = f"text has {len(value)} characters; the maximum is {MAX_TEXT_CHARS} after normalisation"
            raise ValueError(msg)
        return normalise_text(value)
    return value


NormalisedText = Annotated[
    str, BeforeValidator(_normalise_before), StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)
]
"""Text normalised by :func:`normalise_text`, 1 to MAX_TEXT_CHARS characters afterwards (idempotent)."""


class Channel(StrEnum):
    """Where a text came from; decides which models run on it."""

    NEWS = "news"
    SOCIAL = "social"
    SUPPORT = "support"
    REVIEW = "review"


class WireModel(BaseModel):
    """Base of every wire model: a tolerant reader, immutable once built.

    Unknown fields are ignored (not kept, not re-serialised): a newer producer may add
    optional fields within the same ``schema_version`` without dead-lettering records at
    consumers that are not upgraded yet (rolling upgrades). Producers still cannot add
    a field by mistake: the pydantic mypy plugin (``init_forbid_extra``) rejects an
    unknown keyword in a constructor call, and :func:`encode` writes declared fields only.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class TextEvent(WireModel):
    """A piece of text entering the platform (value of ``text.raw``)."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    id: Identifier = Field(description="Event id, unique per event; re-sending the same id is a no-op.")
    source: ShortLabel = Field(description="Producer of the text, e.g. a feed name or 'replay:twitter_fin_sentiment'.")
    channel: Channel = Field(description="news | social | support | review.")
    text: NormalisedText = Field(description="Normalised text (NFC, no control characters), at most 10,000 characters.")
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] = Field(
        "en", description="BCP-47 language tag."
    )
    event_time: AwareDatetime = Field(description="When the text was written (producer's clock, timezone-aware).")
    ingest_time: AwareDatetime = Field(description="When the platform accepted it (ingest's clock, UTC).")
    entity_key: Identifier | None = Field(None, description="Optional subject the text is about, e.g. a ticker.")
    conversation_id: Identifier | None = Field(None, description="Optional support conversation; keeps its order.")
    user_id: Identifier | None = Field(None, description="Optional author or customer id.")
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], MetadataValue] = Field(
        default_factory=dict, max_length=32, description="Free scalar metadata (at most 32 keys)."
    )


class ModelRef(WireModel):
    """Which model produced a result, so every label can be traced to a version."""

    name: ShortLabel = Field(description="Model name in the model repository, e.g. 'sentiment'.")
    version: ShortLabel = Field(description="Model version (repository version number or a hash).")


class Classification(WireModel):
    """One classification result (sentiment, topic or intent)."""

    label: ShortLabel = Field(description="Winning label, taken from the model's own id2label.")
    score: float = Field(ge=0.0, le=1.0, description="Probability of the winning label.")
    scores: dict[str, float] = Field(default_factory=dict, description="Probabilities of the top labels.")
    model: ModelRef = Field(description="Model that produced the label.")


class IntentResult(Classification):
    """Intent classification with an out-of-scope decision."""

    out_of_scope: bool = Field(False, description="True when the intent is oos or below the calibrated threshold.")


class Entity(WireModel):
    """A named entity span; ``text[start:end]`` of the event equals ``surface``."""

    surface: str = Field(min_length=1, description="The span as written.")
    type: ShortLabel = Field(description="Entity type, e.g. ORG, PER, LOC, TICKER.")
    start: int = Field(ge=0, description="Start character offset in the event text.")
    end: int = Field(gt=0, description="End character offset (exclusive).")
    key: ShortLabel = Field(description="Normalised entity key (case, punctuation, legal suffixes removed).")
    score: float = Field(ge=0.0, le=1.0, description="Confidence (1.0 for rule matches).")
    origin: Literal["model", "rule"] = Field(description="Found by the NER model or by a rule (cashtags).")


class ClassifiedEvent(WireModel):
    """Value of ``text.classified``: the event plus its labels."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    event: TextEvent = Field(description="The original event, unchanged.")
    sentiment: Classification | None = Field(None, description="Sentiment (news, social, support).")
    topic: Classification | None = Field(None, description="Financial topic (news, social).")
    intent: IntentResult | None = Field(None, description="Customer-service intent (support).")
    classified_time: AwareDatetime = Field(description="When classification finished.")


class EnrichedEvent(WireModel):
    """Value of ``text.enriched``: the full enrichment of one event."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    event: TextEvent = Field(description="The original event, unchanged.")
    sentiment: Classification | None = Field(None, description="Sentiment (news, social, support).")
    topic: Classification | None = Field(None, description="Financial topic (news, social).")
    intent: IntentResult | None = Field(None, description="Customer-service intent (support).")
    entities: list[Entity] = Field(default_factory=list, description="Entities with character offsets.")
    ner_model: ModelRef | None = Field(None, description="NER model used, if any.")
    enriched_time: AwareDatetime = Field(description="When enrichment finished.")


class EntityMention(WireModel):
    """Value of ``entity.mentions``: one record per entity per event, keyed by ``entity_key``."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Contract version of this record.")
    event_id: Identifier = Field(description="Id of the event that mentions the entity.")
    entity_key: ShortLabel = Field(description="Normalised entity key (also the Kafka key).")
    entity_type: ShortLabel = Field(description="Entity type.")
    surface: str = Field(description="The span as written.")
    channel: Channel = Field(description="Channel of the event.")
    source: ShortLabel = Field(description="Source of the event.")
    sentiment: Classification | None = Field(None, description="Sentiment of the event.")
    topic: Classification | None = Field(None, description="Topic of the event.")
    event_time: AwareDatetime = Field(description="Event time of the mentioning event.")
    ingest_time: AwareDatetime = Field(description="Ingest time of the mentioning event.")


def utcnow() -> datetime:
    """Current time, timezone-aware UTC (the platform never uses naive datetimes)."""
    return datetime.now(UTC)


def encode(model: BaseModel) -> bytes:
    """Serialise a wire model to compact JSON bytes (the only wire encoding)."""
    return model.__pydantic_serializer__.to_json(model)


class TextEventIn(WireModel):
    """An event as clients send it (HTTP body, or a ``text.in`` record value).

    Strict about unknown fields, unlike the internal contracts: this is the edge outside
    writers use, and an unknown field there is far more often a typo (``conversationId``,
    ``entity``) that would silently lose ordering or dedup than a planned addition. A new
    optional field is added here first (ingest upgraded), then clients may send it.
    """

    model_config = ConfigDict(extra="forbid")

    id: Identifier | None = Field(None, description="Client event id; re-sending it is a no-op. Generated if absent.")
    source: ShortLabel = Field(description="Producer of the text.")
    channel: Channel = Field(description="news | social | support | review.")
    text: NormalisedText = Field(description=f"The text; at most {MAX_TEXT_CHARS} characters after normalisation.")
    language: Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")] = "en"
    event_time: AwareDatetime | None = Field(None, description="When it was written; ingest time if absent.")
    entity_key: Identifier | None = None
    conversation_id: Identifier | None = None
    user_id: Identifier | None = None
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], MetadataValue] = Field(
        default_factory=dict, max_length=32
    )

    def to_event(self, *, ingest_time: datetime, fallback_id: str | Callable[[], str]) -> TextEvent:
        """The :class:`TextEvent` (id and event time filled in).

        ``fallback_id`` may be a callable so an id is only generated when the
        client sent none. Validated again as a ``TextEvent`` (cheaper in
        pydantic-core than ``model_construct``, and it keeps the contract honest).
        """
        fields = dict(self.__dict__)
        if fields["id"] is None:
            fields["id"] = fallback_id() if callable(fallback_id) else fallback_id
        if fields["event_time"] is None:
            fields["event_time"] = ingest_time
        fields["ingest_time"] = ingest_time
        return TextEvent.model_validate(fields)
