"""Search API: ``/v1/search``, ``/v1/entities/{key}/sentiment``, ``POST /v1/support/similar``.

Parameters are validated by FastAPI (bad values → 422 with the failing
parameter); checks across parameters (``from`` before ``to``, the paging window)
raise the same 422 shape. Elasticsearch being unreachable is a 503. Every error is
an RFC 9457 problem body (``textpulse.observability.http.install_problem_handlers``).

``GET /v1/support/similar?text=…`` still answers but is deprecated: a ticket's text (possibly
personal data) in a URL ends up in proxy and browser logs; ``POST`` takes it in a JSON body.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

from elasticsearch import ApiError, AsyncElasticsearch, TransportError
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential
from textpulse.contracts import Channel

from .mappings import EVENTS, ROUTES
from .metrics import IndexMetrics
from .pii import redact
from .queries import Interval, SearchFilters, routes_body, search_body, sentiment_over_time_body, similar_body
from .settings import IndexSettings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["search"])

HTTP_BAD_REQUEST = 400
HTTP_UNAVAILABLE = 503
#: Elasticsearch answers 503 ("all shards failed") while a just-created index's shard starts: the first
#: document of a month creates that month's index, and a search over the pattern in the next few hundred
#: milliseconds failed (seen in the CI run of the live observability test). A search waits this long for
#: the shard, backing off, before it answers 503 itself. The transport's own retry is immediate.
SHARD_START_WAIT_S = 2.0


def _shard_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.meta.status == HTTP_UNAVAILABLE


Label = Annotated[str | None, Query(min_length=1, max_length=128)]


class LabelOut(BaseModel):
    label: str
    score: float


class EntityOut(BaseModel):
    key: str
    type: str
    surface: str
    start: int
    end: int


class Hit(BaseModel):
    id: str
    score: float | None = Field(description="Relevance (null when sorted by time).")
    text: str
    channel: str
    source: str
    event_time: datetime
    sentiment: LabelOut | None = None
    topic: LabelOut | None = None
    intent: LabelOut | None = None
    entities: list[EntityOut] = []
    highlight: list[str] = Field(default_factory=list, description="Matching fragments, terms in <em>.")


class SearchResponse(BaseModel):
    total: int = Field(description="Documents matching (exact).")
    page: int
    size: int
    hits: list[Hit]


class SentimentBucket(BaseModel):
    start: datetime = Field(description="Start of the interval (UTC).")
    count: int = Field(description="Documents mentioning the entity in the interval.")
    sentiment: dict[str, int] = Field(description="Documents per sentiment label.")
    avg_score: float | None = Field(description="Mean probability of the winning sentiment label.")


class SentimentResponse(BaseModel):
    entity: str
    interval: Interval
    total: int
    buckets: list[SentimentBucket]


class Route(BaseModel):
    queue: str | None = None
    priority: str | None = None
    urgent: bool | None = None
    triaged: bool | None = None
    intent: str | None = None


class SimilarMessage(BaseModel):
    id: str
    score: float
    text: str
    event_time: datetime
    conversation_id: str | None = None
    intent: LabelOut | None = None
    sentiment: LabelOut | None = None
    route: Route | None = Field(None, description="How the message was routed, if its route is indexed.")


class SimilarResponse(BaseModel):
    hits: list[SimilarMessage]


class SimilarRequest(BaseModel):
    """The body of ``POST /v1/support/similar``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=3, max_length=5000, description="The new ticket's text.")
    size: int = Field(5, ge=1, le=50, description="Number of similar messages.")


def es_dep(request: Request) -> AsyncElasticsearch:
    return request.app.state.es  # type: ignore[no-any-return]


def settings_dep(request: Request) -> IndexSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


def metrics_dep(request: Request) -> IndexMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


ES = Annotated[AsyncElasticsearch, Depends(es_dep)]
Settings = Annotated[IndexSettings, Depends(settings_dep)]
Metrics = Annotated[IndexMetrics, Depends(metrics_dep)]


def _invalid(loc: str, msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["query", loc], "msg": msg, "type": "value_error"}])


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _filters(time_from: datetime | None, time_to: datetime | None, **kw: Any) -> SearchFilters:
    time_from, time_to = _utc(time_from), _utc(time_to)
    if time_from and time_to and time_from >= time_to:
        raise _invalid("to", "'to' must be after 'from'")
    return SearchFilters(time_from=time_from, time_to=time_to, **kw)


async def _search(es: AsyncElasticsearch, index: str, body: dict[str, Any]) -> dict[str, Any]:
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_shard_unavailable),
            stop=stop_after_delay(SHARD_START_WAIT_S),
            wait=wait_exponential(multiplier=0.05, max=0.5),
            reraise=True,
        ):
            with attempt:
                resp = await es.search(index=index, ignore_unavailable=True, allow_no_indices=True, **body)
    except ApiError as exc:
        if exc.meta.status == HTTP_BAD_REQUEST:
            # e.g. too many histogram buckets for the range and interval asked
            reason = redact(str(exc.message))[:300]
            raise RequestValidationError([{"loc": ["query"], "msg": reason, "type": "backend_rejected"}]) from exc
        log.warning("search failed", extra={"status": exc.meta.status, "error": redact(str(exc))[:300]})
        raise HTTPException(503, "search backend unavailable", headers={"Retry-After": "5"}) from exc
    except TransportError as exc:
        log.warning("search failed: Elasticsearch unavailable", extra={"error": repr(exc)[:300]})
        raise HTTPException(503, "search backend unavailable", headers={"Retry-After": "5"}) from exc
    return resp.body  # type: ignore[no-any-return]


def _label(src: dict[str, Any], name: str) -> LabelOut | None:
    value = src.get(name)
    return LabelOut(label=value["label"], score=value["score"]) if isinstance(value, dict) else None


def _hit(h: dict[str, Any]) -> Hit:
    src = h["_source"]
    return Hit(
        id=h["_id"],
        score=h.get("_score"),
        text=src["text"],
        channel=src["channel"],
        source=src["source"],
        event_time=src["event_time"],
        sentiment=_label(src, "sentiment"),
        topic=_label(src, "topic"),
        intent=_label(src, "intent"),
        entities=[EntityOut(**{k: e[k] for k in EntityOut.model_fields}) for e in src.get("entities", [])],
        highlight=h.get("highlight", {}).get("text", []),
    )


@router.get("/search", response_model=SearchResponse, summary="Full-text search with filters")
async def search(
    es: ES,
    settings: Settings,
    metrics: Metrics,
    q: Annotated[str | None, Query(min_length=1, max_length=1000, description="Words to match (all of them).")] = None,
    entity: Annotated[str | None, Query(min_length=1, max_length=128, description="Entity key.")] = None,
    entity_type: Annotated[str | None, Query(min_length=1, max_length=32, description="Entity type.")] = None,
    sentiment: Label = None,
    topic: Label = None,
    intent: Label = None,
    channel: Channel | None = None,
    source: Label = None,
    time_from: Annotated[datetime | None, Query(alias="from", description="Event time ≥ (ISO 8601).")] = None,
    time_to: Annotated[datetime | None, Query(alias="to", description="Event time < (ISO 8601).")] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SearchResponse:
    """Enriched events matching the text and every given filter; relevance first, newest first without text."""
    filters = _filters(
        time_from,
        time_to,
        entity=entity,
        entity_type=entity_type,
        sentiment=sentiment,
        topic=topic,
        intent=intent,
        channel=channel.value if channel else None,
        source=source,
    )
    if page * size > settings.search_max_window:
        raise _invalid("page", f"page × size must be ≤ {settings.search_max_window}; narrow the filters instead")
    metrics.search_hits.labels("index", "search").inc()
    body = await _search(es, EVENTS.alias(settings.index_prefix), search_body(q, filters, page=page, size=size))
    hits = body["hits"]
    return SearchResponse(total=hits["total"]["value"], page=page, size=size, hits=[_hit(h) for h in hits["hits"]])


@router.get(
    "/entities/{key}/sentiment", response_model=SentimentResponse, summary="Sentiment about an entity over time"
)
async def entity_sentiment(
    es: ES,
    settings: Settings,
    metrics: Metrics,
    key: Annotated[str, Path(min_length=1, max_length=128, description="Normalised entity key.")],
    interval: Interval = Interval.DAY,
    channel: Channel | None = None,
    time_from: Annotated[datetime | None, Query(alias="from")] = None,
    time_to: Annotated[datetime | None, Query(alias="to")] = None,
) -> SentimentResponse:
    """Per interval: documents mentioning the entity, counts per sentiment label and the mean score."""
    filters = _filters(time_from, time_to, channel=channel.value if channel else None)
    metrics.search_hits.labels("index", "entity_sentiment").inc()
    body = await _search(es, EVENTS.alias(settings.index_prefix), sentiment_over_time_body(key, filters, interval))
    buckets = body.get("aggregations", {}).get("over_time", {}).get("buckets", [])
    return SentimentResponse(
        entity=key,
        interval=interval,
        total=body["hits"]["total"]["value"],
        buckets=[
            SentimentBucket(
                start=datetime.fromtimestamp(b["key"] / 1000, UTC),
                count=b["doc_count"],
                sentiment={s["key"]: s["doc_count"] for s in b["sentiment"]["buckets"]},
                avg_score=b["avg_score"]["value"],
            )
            for b in buckets
        ],
    )


@router.post("/support/similar", response_model=SimilarResponse, summary="Past support messages similar to a text")
async def support_similar(es: ES, settings: Settings, metrics: Metrics, body: SimilarRequest) -> SimilarResponse:
    """The most similar past support messages (more_like_this, BM25), each with its route when indexed."""
    return await _similar(es, settings, metrics, body.text, body.size)


@router.get(
    "/support/similar",
    response_model=SimilarResponse,
    summary="Past support messages similar to a text (deprecated: use POST)",
    deprecated=True,
)
async def support_similar_get(
    es: ES,
    settings: Settings,
    metrics: Metrics,
    text: Annotated[str, Query(min_length=3, max_length=5000, description="The new ticket's text.")],
    size: Annotated[int, Query(ge=1, le=50)] = 5,
) -> SimilarResponse:
    """As ``POST /v1/support/similar``, with the text in the query string (kept for old clients)."""
    return await _similar(es, settings, metrics, text, size)


async def _similar(es: ES, settings: Settings, metrics: Metrics, text: str, size: int) -> SimilarResponse:
    metrics.search_hits.labels("index", "support_similar").inc()
    like = redact(text) if settings.redact_pii else text
    body = await _search(es, EVENTS.alias(settings.index_prefix), similar_body(like, size=size))
    hits = body["hits"]["hits"]
    routes: dict[str, Route] = {}
    if hits:
        found = await _search(es, ROUTES.alias(settings.index_prefix), routes_body([h["_id"] for h in hits]))
        for r in found["hits"]["hits"]:
            src = r["_source"]
            routes.setdefault(src["event_id"], Route(**{k: src.get(k) for k in Route.model_fields}))
    out = []
    for h in hits:
        src = h["_source"]
        out.append(
            SimilarMessage(
                id=h["_id"],
                score=h["_score"],
                text=src["text"],
                event_time=src["event_time"],
                conversation_id=src.get("conversation_id"),
                intent=_label(src, "intent"),
                sentiment=_label(src, "sentiment"),
                route=routes.get(h["_id"]),
            )
        )
    return SimilarResponse(hits=out)
