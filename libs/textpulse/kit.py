"""The service kit: one declarative :class:`Service` description, from which a service's app follows.

A service declares *what* it is (name, settings class, metrics, how it subscribes, the
resources its handlers need, extra readiness, HTTP API); the kit builds *how* every service
runs, the same way for all of them:

- the broker (``make_broker``), the consumer group (``consumer_group``), the delivery runner
  (``batch_runner``: at-least-once or exactly-once), the dead letters (``DeadLetters``, counted
  by itself) and record writers, all on one :class:`Kit` handed to ``subscribe`` and ``resources``;
- the lifespan: ``resources`` (an async context manager: models, clients, state restore) yields
  the handlers' dependencies, put into FastStream's context as ``deps`` (handlers take
  ``deps: Annotated[Deps, Context("deps")]``); after the broker is connected the DLQ size
  limit is read and the lag probe started (real Apache Kafka only), background tasks are
  started, one ``<service> started`` line is logged; everything is stopped in reverse order;
- ``/health``, ``/ready`` (broker reachable and the service's own check) and ``/metrics``; an API
  service's FastAPI app also gets the API guard, the HTTP metrics middleware and RFC 9457 errors;
- ``main``: settings or exit 2 (one line, no traceback), logging, config errors or exit 2, uvicorn.

``services/_example`` is the smallest complete use; ``README.md`` "Add a service" walks through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from aiokafka import ConsumerRebalanceListener
from faststream.kafka import KafkaBroker

from textpulse.contracts.services import consumer_group
from textpulse.kafka.broker import batch_subscriber, make_broker, start_with_retry
from textpulse.kafka.dedup import RecentIds
from textpulse.kafka.dlq import DeadLetters
from textpulse.kafka.transactions import AtLeastOnce, BatchRunner, batch_runner, settings_or_exit
from textpulse.kafka.writer import RecordWriter, check_fast_path, faststream_producer
from textpulse.observability.http import OpsAsgiFastStream, ops_routes, serve
from textpulse.observability.lag import LagMonitor
from textpulse.observability.logging import configure_logging
from textpulse.observability.metrics import ServiceMetrics
from textpulse.settings import KafkaSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from textpulse.observability.apikey import ApiSecuritySettings

log = logging.getLogger(__name__)


class KitSettings(Protocol):
    """What the kit reads off a service's settings class (a ``ServiceSettings`` with a DLQ topic)."""

    # Read-only properties: a protocol's plain attributes would be invariant (Literal fields would not match).
    @property
    def kafka(self) -> KafkaSettings: ...
    @property
    def group_id(self) -> str | None: ...
    @property
    def delivery(self) -> str: ...
    @property
    def topic_dlq(self) -> str: ...
    @property
    def lag_refresh_s(self) -> float: ...
    @property
    def publish_timeout_s(self) -> float: ...
    @property
    def log_level(self) -> str: ...
    @property
    def log_json(self) -> bool: ...
    @property
    def http_host(self) -> str: ...
    @property
    def http_port(self) -> int: ...


S = TypeVar("S", bound=KitSettings)
M = TypeVar("M", bound=ServiceMetrics)


class Kit(Generic[S, M]):
    """One running service's shared parts; handed to ``subscribe``/``resources``, in the context as ``kit``."""

    def __init__(
        self, service: Service[S, M], settings: S, broker: KafkaBroker, metrics: M, *, real_kafka: bool
    ) -> None:
        self.service = service
        self.name = service.name
        self.settings = settings
        self.broker = broker
        self.metrics = metrics
        #: False in in-memory tests (``TestKafkaBroker``): no DLQ limit read, no lag probe, no state restore.
        self.real_kafka = real_kafka
        self.group_id = consumer_group(service.name, settings.group_id, service.group_suffix)
        # A service without transactions (``exactly_once=False``) runs at-least-once whatever the setting says.
        self.runner: BatchRunner = (
            batch_runner(settings, service=service.name, group_id=self.group_id, on_abort=self._aborted)
            if service.exactly_once
            else AtLeastOnce()
        )
        self.dead_letters = DeadLetters(
            broker.publish, service=service.name, topic=settings.topic_dlq, kafka=settings.kafka, metrics=metrics
        )
        #: What ``resources`` yielded: the handlers' dependencies.
        self.deps: Any = None
        #: The app's state (``app.state``): what tests, readiness and HTTP routes read.
        self.state: Any = SimpleNamespace()
        #: Called after an aborted exactly-once transaction (state kept in memory is ahead of Kafka).
        self.on_abort: Callable[[], Awaitable[None]] | None = None
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._lag: LagMonitor | None = None

    @property
    def apache(self) -> bool:
        """Real Apache Kafka (Tansu answers neither DescribeConfigs nor OffsetFetch in aiokafka's form)."""
        return self.real_kafka and self.settings.kafka.flavor == "apache"

    def subscriber(
        self,
        *topics: str,
        title: str,
        description: str,
        group_id: str | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> Any:
        """The platform's batch consumer (:func:`~textpulse.kafka.broker.batch_subscriber`) in the kit's group."""
        settings: Any = self.settings  # a ServiceSettings with the batch fields (BatchConsumerSettings)
        return batch_subscriber(
            self.broker,
            *topics,
            settings=settings,
            service=self.name,
            title=title,
            description=description,
            group_id=group_id or self.group_id,
            listener=listener,
        )

    async def run_batch(self, msg: Any, handle: Callable[[Sequence[Any]], Awaitable[None]]) -> None:
        """One polled batch through the delivery runner; a record failing every try ends in the DLQ."""
        await self.runner.process(msg, lambda records: self.dead_letters.guard(records, handle))

    def writer(self, topic: str) -> RecordWriter:
        """A writer of ``topic`` that waits for every ack (inside a transaction: its producer)."""
        return RecordWriter(
            self.broker.publish,
            topic,
            timeout_s=self.settings.publish_timeout_s,
            producer=lambda: faststream_producer(self.broker),
        )

    def recent_ids(self) -> RecentIds | None:
        """At-least-once: the ids already written, so a redelivered batch is not written twice."""
        return RecentIds() if self.runner.delivery == "at_least_once" else None

    def background(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """A task started once the broker is connected and cancelled at shutdown (timers, refreshes)."""
        self._background.append((name, loop))

    async def _aborted(self) -> None:
        if self.on_abort is not None:
            await self.on_abort()

    async def on_started(self) -> None:
        """Once the broker is connected: DLQ limit, lag probe, ``after_start``, background tasks, one log line."""
        service = self.service
        # Refuse to run on a FastStream whose producer moved rather than silently write one record at a time.
        check_fast_path(self.broker)
        if self.apache:
            await self.dead_letters.start()
            default = [getattr(self.settings, "topic_in", "")]
            topics = [t for t in (service.lag_topics(self.settings) if service.lag_topics else default) if t]
            if topics:
                self._lag = LagMonitor(
                    self.settings.kafka, self.metrics, self.group_id, topics, self.settings.lag_refresh_s
                )
                self._lag.start()
        if service.after_start is not None:
            await service.after_start(self)
        self._tasks = [asyncio.create_task(loop(), name=f"{self.name}-{name}") for name, loop in self._background]
        extra = dict(service.started(self)) if service.started else {}
        log.info("%s started", self.name, extra={**extra, "delivery": self.runner.delivery})

    async def stop_tasks(self) -> None:
        """Background tasks and the lag probe (before the broker stops: a timer may still write)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        lag, self._lag = self._lag, None
        if lag is not None:
            await lag.stop()

    async def stop(self) -> None:
        """Background tasks, lag probe and the delivery runner (its producers), in that order."""
        await self.stop_tasks()
        await self.runner.close()

    async def ready(self) -> bool:
        """The service's own readiness check, then the broker's."""
        service = self.service
        if service.ready is not None and not await service.ready(self):
            return False
        return await self.broker.ping(timeout=2.0)


@dataclass(frozen=True)
class Api:
    """The HTTP API of an ``api`` service (a FastAPI app instead of FastStream's ASGI app)."""

    title: str
    description: str
    #: ``fastapi.APIRouter``s with the service's routes.
    routers: Sequence[Any]
    #: Wait this long for Kafka at start-up (the HTTP API is up meanwhile; /ready says not yet).
    connect_timeout_s: float = 60.0
    #: OpenAPI components added by hand: models of bodies the routes read themselves (ingest's ``TextEventIn``).
    schemas: Mapping[str, Any] | None = None
    #: Every request starts or continues a trace (when tracing is on): the platform's HTTP entry points.
    trace_requests: bool = False


@dataclass(frozen=True)
class Service(Generic[S, M]):
    """The declarative description of a service: everything else follows from it (:func:`build`)."""

    #: The registry name (``contracts.services.REGISTRY``): group, client id, DLQ and logs follow.
    name: str
    #: The pydantic-settings class (env prefix ``TEXTPULSE_<NAME>_``).
    settings: type[S]
    #: Subscribers and publishers on ``kit.broker`` (the AsyncAPI document is generated from them).
    subscribe: Callable[[Kit[S, M]], None]
    #: The metrics class, built once per app.
    metrics: Callable[[], M]
    #: Clients, models and state: an async context manager yielding the handlers' ``deps``.
    resources: Callable[[Kit[S, M]], AbstractAsyncContextManager[Any]] | None = None
    #: Readiness beyond "the broker answers" (models loaded, search cluster reachable).
    ready: Callable[[Kit[S, M]], Awaitable[bool]] | None = None
    #: Topics whose lag is measured (default: ``settings.topic_in``).
    lag_topics: Callable[[S], Sequence[str]] | None = None
    #: Suffix of the main consumer group (``textpulse-<name><suffix>``).
    group_suffix: str = ""
    #: Runs once the broker is connected, before the background tasks start.
    after_start: Callable[[Kit[S, M]], Awaitable[None]] | None = None
    #: Fields of the one ``<name> started`` log line.
    started: Callable[[Kit[S, M]], Mapping[str, Any]] | None = None
    #: Errors of the service's own config files raised while the app is built: ``main`` exits 2 with one line.
    config_errors: tuple[type[Exception], ...] = ()
    #: What those files are, in that line (``invalid <config_what>: <error>``; default ``<name> configuration``).
    config_what: str | None = None
    #: Honours ``delivery=exactly_once`` (consume→produce in transactions); False: always at-least-once
    #: (an HTTP edge or a sink such as Elasticsearch, whose writes a Kafka transaction cannot cover).
    exactly_once: bool = True
    #: An ``api`` service's HTTP API (None: a worker with only the ops routes).
    api: Api | None = None


@dataclass
class _Lifecycle(Generic[S, M]):
    service: Service[S, M]
    kit: Kit[S, M]
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def enter(self) -> None:
        kit = self.kit
        if self.service.resources is not None:
            kit.deps = await self.stack.enter_async_context(self.service.resources(kit))
        # Pushed after the resources, so it runs first: tasks, lag probe and runner stop before models and clients.
        self.stack.push_async_callback(kit.stop)
        kit.broker.context.set_global("deps", kit.deps)
        kit.broker.context.set_global("kit", kit)

    async def exit(self) -> None:
        await self.stack.aclose()


def build(
    service: Service[S, M],
    settings: S | None = None,
    *,
    broker: KafkaBroker | None = None,
    real_kafka: bool = True,
    api_security: ApiSecuritySettings | None = None,
    connect_timeout_s: float | None = None,
) -> Any:
    """The app of ``service``: FastStream's ASGI app (workers) or a FastAPI app (``service.api``).

    Tests pass their own ``broker`` (``TestKafkaBroker``) with ``real_kafka=False``.
    """
    settings = settings or service.settings()
    metrics = service.metrics()
    broker = broker or make_broker(settings.kafka, service=service.name, metrics=metrics)
    kit = Kit(service, settings, broker, metrics, real_kafka=real_kafka)
    service.subscribe(kit)

    if service.api is None:
        return _worker_app(service, kit)
    return _api_app(service, kit, api_security, connect_timeout_s or service.api.connect_timeout_s)


def _worker_app(service: Service[S, M], kit: Kit[S, M]) -> OpsAsgiFastStream:
    run = _Lifecycle(service, kit)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        await run.enter()
        try:
            yield
        finally:
            await run.exit()

    app = OpsAsgiFastStream(
        kit.broker,
        asgi_routes=ops_routes(kit.metrics, kit.ready),  # type: ignore[arg-type]  # dict vs MutableMapping scope
        lifespan=lifespan,
        after_startup=[kit.on_started],
        # FastStream stops the broker after on_shutdown, before the lifespan exits: timers go first.
        on_shutdown=[kit.stop_tasks],
        logger=logging.getLogger(f"textpulse.{service.name}.app"),
    )
    _share_state(kit, kit.state)
    app.state = kit.state  # type: ignore[attr-defined]  # read by tests and the AsyncAPI generator
    return app


def _api_app(
    service: Service[S, M],
    kit: Kit[S, M],
    api_security: ApiSecuritySettings | None,
    connect_timeout_s: float,
) -> FastAPI:
    # FastAPI only for api services: a worker image needs none of it.
    from fastapi import FastAPI
    from starlette.routing import Route

    import textpulse
    from textpulse.observability.apikey import ApiSecuritySettings, install_api_guard
    from textpulse.observability.http import HttpMetricsMiddleware, install_problem_handlers, problem_openapi
    from textpulse.observability.tracing import instrument_asgi

    assert service.api is not None  # the caller checked
    api = service.api
    run = _Lifecycle(service, kit)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run.enter()
        # Last in, first out, as in a worker: timers and lag probe, then the broker (its consumers), then
        # kit.stop (the runner) and the resources the handlers use.
        run.stack.push_async_callback(kit.broker.stop)
        run.stack.push_async_callback(kit.stop_tasks)
        try:
            await start_with_retry(kit.broker, connect_timeout_s)
            await kit.on_started()
            yield
        finally:
            await run.exit()

    app = FastAPI(
        title=api.title,
        version=textpulse.__version__,
        description=api.description,
        lifespan=lifespan,
    )
    for router in api.routers:
        app.include_router(router)
    _share_state(kit, app.state)
    for path, endpoint in ops_routes(kit.metrics, kit.ready):
        app.router.routes.append(Route(path, endpoint, methods=["GET"], include_in_schema=False))
    # Before the metrics middleware, so that it runs inside it: refusals (401/413/429) are counted.
    install_api_guard(app, api_security or ApiSecuritySettings.for_service(service.name))
    app.add_middleware(HttpMetricsMiddleware, metrics=kit.metrics)
    # 422 of FastAPI's own checks, 404, 405 and 500: the same RFC 9457 problem body as the routes' errors.
    install_problem_handlers(app)
    if api.trace_requests:
        # Last added, so outermost: every request (refusals included) starts or continues a trace.
        instrument_asgi(app)
    if api.schemas:
        app.openapi = problem_openapi(app, api.schemas)  # type: ignore[method-assign]
    return app


def _share_state(kit: Kit[Any, Any], state: Any) -> None:
    """Make ``state`` the app's state: what ``subscribe`` put on ``kit.state`` so far, plus the kit's parts."""
    for name, value in vars(kit.state).items():
        setattr(state, name, value)
    state.kit, state.broker, state.metrics, state.settings = kit, kit.broker, kit.metrics, kit.settings
    kit.state = state


def main(service: Service[Any, Any], create_app: Callable[[Any], Any]) -> None:
    """A service's entry point: settings (or exit 2), logging, the app (or exit 2 on a config error), uvicorn."""
    settings = settings_or_exit(service.settings, service.name)
    configure_logging(service.name, settings.log_level, json=settings.log_json)
    try:
        app = create_app(settings)
    except service.config_errors as exc:
        log.critical("invalid %s: %s", service.config_what or f"{service.name} configuration", exc)
        sys.exit(2)
    serve(app, settings)
