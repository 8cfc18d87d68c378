"""Wiring of the recommend service on the service kit (:mod:`textpulse.kit`): recommendations API + Kafka.

Run: ``python -m services.recommend.app`` or ``textpulse serve recommend`` (port 8086). At start-up the
encoder is loaded (Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process), the whole catalogue
(``items``) and every profile (``recs.profiles``) are replayed, item-kNN and popularity are built, and
only then does the consumer group start; item-kNN and popularity are rebuilt every ``cf_refresh_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.observability.apikey import ApiSecuritySettings
from textpulse.recsys.embed import Embedder, make_embedder

from . import api, handlers
from .core import SERVICE, Outputs, Processor, State, find_ranker, restore
from .metrics import RecommendMetrics
from .settings import RecommendSettings

log = logging.getLogger(__name__)

Kit: TypeAlias = kit.Kit[RecommendSettings, RecommendMetrics]

API = kit.Api(
    title="textpulse recommend",
    description=(
        "Recommendations from user interests (time-decayed profile over item text embeddings) mixed with "
        "item-kNN and popularity; unknown users get popular items."
    ),
    routers=[api.router],
)


async def _cf_loop(state: State, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await state.refresh_cf()
        except Exception:
            log.exception("item-kNN refresh failed; serving the previous model")
        state.save_vectors()  # new items' vectors survive a crash after the next refresh


def resources(
    embedder: Embedder | None, restore_state: bool
) -> Callable[[Kit], AbstractAsyncContextManager[Processor]]:
    """The encoder (``embedder``, else from the settings), the ranker, the restored state and its processor."""

    @asynccontextmanager
    async def opened(k: Kit) -> AsyncIterator[Processor]:
        s = k.settings
        enc = embedder or make_embedder(s.inference, s.model_name, allow_base=s.allow_base_model)
        state: State | None = None
        try:
            await enc.start()
            # Fails start-up when a ranker is shipped but cannot be served (see core.find_ranker).
            state = State(s, enc, k.metrics, find_ranker(s, enc))
            if restore_state:
                restored = await restore(s, state)
                log.info(
                    "state restored", extra={**restored, "items": len(state.catalogue), "users": len(state.profiles)}
                )
                state.save_vectors()
            k.state.recommend = state  # the API routes and readiness read it
            k.background("cf", lambda: _cf_loop(state, s.cf_refresh_s))
            outputs = Outputs(
                profiles=k.writer(s.topic_profiles), recs=k.writer(s.topic_out), dead_letters=k.dead_letters
            )
            yield Processor(state, outputs, s)
        finally:
            # The kit stops the consumers first: no batch is encoding when the encoder closes.
            if state is not None:
                state.save_vectors()
            await enc.close()

    return opened


async def ready(k: Kit) -> bool:
    state: State | None = getattr(k.state, "recommend", None)
    return state is not None and await state.embedder.ready()


def started(k: Kit) -> Mapping[str, Any]:
    state: State = k.state.recommend
    return {"model": state.embedder.model.name, "version": state.embedder.model.version, "items": len(state.catalogue)}


def service(
    embedder: Embedder | None = None, *, restore_state: bool = True
) -> kit.Service[RecommendSettings, RecommendMetrics]:
    return kit.Service(
        name=SERVICE,
        settings=RecommendSettings,
        metrics=RecommendMetrics,
        subscribe=handlers.subscribe,
        resources=resources(embedder, restore_state),
        exactly_once=False,  # refused in create_app: outputs are idempotent per user
        ready=ready,
        lag_topics=lambda s: [s.topic_items, s.topic_interactions],
        started=started,
        api=API,
    )


def create_app(
    settings: RecommendSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    embedder: Embedder | None = None,
    connect_timeout_s: float = 60.0,
    lag_probe: bool = True,
    restore_state: bool = True,
    api_security: ApiSecuritySettings | None = None,
) -> FastAPI:
    """Build the recommend app; tests pass their own broker / embedder, and skip the replay in memory.

    ``lag_probe=False`` skips the DLQ size read and the lag probe.
    """
    settings = settings or RecommendSettings()
    if settings.delivery == "exactly_once":
        # Outputs are idempotent per user (latest profile / latest list wins), so transactions would add
        # cost without changing what a consumer sees; refuse rather than silently ignore the setting.
        msg = "recommend supports delivery=at_least_once only (its outputs are idempotent per user)"
        raise ValueError(msg)
    app: FastAPI = kit.build(
        service(embedder, restore_state=restore_state),
        settings,
        broker=broker,
        real_kafka=lag_probe,
        api_security=api_security,
        connect_timeout_s=connect_timeout_s,
    )
    return app


def _served(settings: RecommendSettings) -> FastAPI:
    if settings.blas_threads:
        # One BLAS thread per scoring call: on a small box several threads per 10k×384 product only
        # contend with the event loop and the encoder thread (measured: 2 threads ran 2.5× slower under load).
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.blas_threads, user_api="blas")
    return create_app(settings)


def main() -> None:
    kit.main(service(), _served)


if __name__ == "__main__":
    main()
