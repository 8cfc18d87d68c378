"""Wiring of the recommend service: FastAPI (recommendations API, OpenAPI) + FastStream Kafka subscriber.

Run: ``python -m services.recommend.app`` or ``textpulse serve recommend`` (port 8086). At start-up the
encoder is loaded (Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process), the whole catalogue
(``items``) and every profile (``recs.profiles``) are replayed, item-kNN and popularity are built, and
only then does the consumer group start; item-kNN and popularity are rebuilt every ``cf_refresh_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import textpulse
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from starlette.routing import Route
from textpulse.contracts.services import consumer_group
from textpulse.kafka import DeadLetters, make_broker
from textpulse.kafka.broker import start_with_retry
from textpulse.kafka.transactions import settings_or_exit
from textpulse.kafka.writer import RecordWriter, faststream_producer
from textpulse.observability import HttpMetricsMiddleware, configure_logging
from textpulse.observability.apikey import ApiSecuritySettings, install_api_guard
from textpulse.observability.http import install_problem_handlers, ops_routes, serve
from textpulse.observability.lag import LagMonitor
from textpulse.recsys.embed import Embedder, make_embedder

from . import api, handlers
from .core import SERVICE, Outputs, Processor, State, find_ranker, restore
from .metrics import RecommendMetrics
from .settings import RecommendSettings

log = logging.getLogger(__name__)


async def _cf_loop(state: State, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            await state.refresh_cf()
        except Exception:
            log.exception("item-kNN refresh failed; serving the previous model")


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
    """Build the recommend app; tests pass their own broker / embedder, and skip the replay in memory."""
    settings = settings or RecommendSettings()
    if settings.delivery == "exactly_once":
        # Outputs are idempotent per user (latest profile / latest list wins), so transactions would add
        # cost without changing what a consumer sees; refuse rather than silently ignore the setting.
        msg = "recommend supports delivery=at_least_once only (its outputs are idempotent per user)"
        raise ValueError(msg)
    metrics = RecommendMetrics()
    broker = broker or make_broker(settings.kafka, service=SERVICE, metrics=metrics)
    ref: dict[str, Processor] = {}
    handlers.register(broker, settings, ref)
    handlers.declare_outputs(broker, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        enc = embedder or make_embedder(settings.inference, settings.model_name, allow_base=settings.allow_base_model)
        background: list[asyncio.Task[None]] = []
        lag: LagMonitor | None = None
        try:
            await enc.start()
            # Fails start-up when a ranker is shipped but cannot be served (see core.find_ranker).
            state = State(settings, enc, metrics, find_ranker(settings, enc))
            if restore_state:
                restored = await restore(settings, state)
                log.info(
                    "state restored", extra={**restored, "items": len(state.catalogue), "users": len(state.profiles)}
                )
            app.state.recommend = state

            def writer(topic: str) -> RecordWriter:
                return RecordWriter(
                    broker.publish,
                    topic,
                    timeout_s=settings.publish_timeout_s,
                    producer=lambda: faststream_producer(broker),
                )

            ref["processor"] = Processor(
                state,
                Outputs(
                    profiles=writer(settings.topic_profiles),
                    recs=writer(settings.topic_out),
                    dead_letters=DeadLetters(
                        broker.publish, service=SERVICE, topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
                    ),
                ),
                settings,
            )
            await start_with_retry(broker, connect_timeout_s)
            background.append(asyncio.create_task(_cf_loop(state, settings.cf_refresh_s), name="recommend-cf"))
            if lag_probe and settings.kafka.flavor == "apache":
                await ref["processor"].outputs.dead_letters.start()
                lag = LagMonitor(
                    settings.kafka,
                    metrics,
                    consumer_group(SERVICE, settings.group_id),
                    [settings.topic_items, settings.topic_interactions],
                    settings.lag_refresh_s,
                )
                lag.start()
            log.info(
                "recommend started",
                extra={"model": enc.model.name, "version": enc.model.version, "items": len(state.catalogue)},
            )
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if lag:
                await lag.stop()
            await broker.stop()
            await enc.close()

    app = FastAPI(
        title="textpulse recommend",
        version=textpulse.__version__,
        description=(
            "Recommendations from user interests (time-decayed profile over item text embeddings) mixed with "
            "item-kNN and popularity; unknown users get popular items."
        ),
        lifespan=lifespan,
    )
    app.include_router(api.router)
    app.state.broker = broker

    async def ready() -> bool:
        state: State | None = getattr(app.state, "recommend", None)
        return state is not None and await state.embedder.ready() and await broker.ping(timeout=2.0)

    for path, endpoint in ops_routes(metrics, ready):
        app.router.routes.append(Route(path, endpoint, methods=["GET"], include_in_schema=False))
    # Inside the metrics middleware, so refused requests (401/413/429) are counted too.
    install_api_guard(app, api_security or ApiSecuritySettings.for_service(SERVICE))
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics)

    # Every error (422, 404, 405, 503 of HTTPException) is the shared RFC 9457 problem body.
    install_problem_handlers(app)

    return app


def main() -> None:
    """Entry point: configure logging from settings and serve with uvicorn."""
    settings = settings_or_exit(RecommendSettings, SERVICE)
    configure_logging(SERVICE, settings.log_level, json=settings.log_json)
    if settings.blas_threads:
        # One BLAS thread per scoring call: on a small box several threads per 10k×384 product only
        # contend with the event loop and the encoder thread (measured: 2 threads ran 2.5× slower under load).
        from threadpoolctl import threadpool_limits

        threadpool_limits(settings.blas_threads, user_api="blas")
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
