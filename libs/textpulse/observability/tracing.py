"""OpenTelemetry tracing across HTTP and Kafka, exported by OTLP/HTTP (e.g. to Jaeger).

Off unless an endpoint is configured (``TEXTPULSE_OTLP_ENDPOINT``, or the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``): then nothing is
imported beyond the API, no middleware is installed and every hook below is a constant-time
no-op, so an untraced deployment pays nothing per record.

What a traced service records (the hooks sit in the shared kit, not in the services):

- **HTTP** (:func:`instrument_asgi`, ingest): a server span per request that starts the
  trace, or continues the caller's W3C ``traceparent``.
- **Consume** (:class:`KafkaTracingMiddleware`, added by ``make_broker``): per polled batch a
  ``consume <topic>`` span in a trace of its own, with a link to the trace of each record
  (its ``traceparent`` header), and for each record that names its event (``event-id``) a
  ``process <topic>`` span *in that event's trace*, linked back to the batch span. The event
  keeps one trace from ingest to ``text.enriched`` and ``support.routed``, while the batch's
  work (decode, inference, writes) is timed once, in the batch trace. A record with no
  ``event-id`` header (``text.in`` from an outside client: its event id is known only once
  ingest validated it) gets its ``process`` span when the event's first output is written
  (:func:`publish`): a trace of its own per event, linked to and from the batch span, not
  the batch's trace shared by every event of the batch.
- **Infer** (:func:`span`, around ``until_available``): one ``infer`` span per batch.
- **Produce** (:func:`publish`, in ``RecordWriter.write``): a ``send <topic>`` span per write;
  each record gets the ``traceparent`` of its event's ``process`` span (matched by the
  ``event-id`` header), else of the current span (the HTTP request, the batch).
- **Logs** (:class:`TraceContextFilter`): ``trace_id``, ``span_id`` and, where one event is
  in hand, ``event_id`` on every log record.

Propagation is OpenTelemetry's own (``opentelemetry.propagate`` with the configured
propagators, W3C trace context by default) over Kafka record headers
(:data:`KAFKA_HEADERS`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from functools import partial
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from textpulse.kafka.writer import OutRecord

log = logging.getLogger(__name__)

#: The record header that names the event a record belongs to (set by ingest, kept by every service).
EVENT_ID_HEADER = "event-id"
#: Span attribute with the event id (searchable in Jaeger as a tag: ``textpulse.event_id=<id>``).
EVENT_ID_ATTR = "textpulse.event_id"
#: Trace headers of an input record that an output record must not inherit (they are re-injected).
_TRACE_HEADERS = ("traceparent", "tracestate")


class TracingSettings(BaseSettings):
    """Where spans go. Unset endpoint and no ``OTEL_EXPORTER_OTLP_*ENDPOINT``: tracing is off."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_OTLP_", extra="ignore")

    endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (spans go to <endpoint>/v1/traces). Unset: the "
            "standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else no tracing."
        ),
    )


class _State:
    """The process's tracer once :func:`init_tracing` enabled tracing (None: off)."""

    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None
    service: str = ""


_STATE = _State()


@dataclasses.dataclass(slots=True)
class _Batch:
    """The batch being consumed in this task: its span and its events' ``process`` spans."""

    span: trace.Span
    topic: str
    #: Attributes of a ``process`` span (topic, system).
    common: dict[str, str]
    #: event id -> its ``process`` span.
    hops: dict[str, trace.Span]
    #: Records without an ``event-id`` header not yet matched to an event: each may become one
    #: event (ingest's ``text.in``), whose span :func:`publish` starts on its first output.
    unnamed: int


_BATCH: ContextVar[_Batch | None] = ContextVar("textpulse_trace_batch", default=None)
#: The event the current task works on (one HTTP event, a batch of one), for the log lines.
_EVENT_ID: ContextVar[str | None] = ContextVar("textpulse_event_id", default=None)


def enabled() -> bool:
    """Whether this process exports spans."""
    return _STATE.tracer is not None


def otlp_traces_endpoint(settings: TracingSettings | None = None) -> str | None:
    """The OTLP/HTTP traces URL from the settings or the standard variables (None: tracing off)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    settings = settings or TracingSettings()
    if settings.endpoint:
        return settings.endpoint.rstrip("/") + "/v1/traces"
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def init_tracing(
    service: str, settings: TracingSettings | None = None, *, exporter: SpanExporter | None = None
) -> bool:
    """Enable tracing for ``service`` when an endpoint is configured (or ``exporter`` given); idempotent.

    The service name in the backend is ``textpulse-<service>`` unless ``OTEL_SERVICE_NAME`` says
    otherwise; ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` apply as
    usual. Spans are batched and exported in the background; the provider flushes at exit.
    Returns whether tracing is on.
    """
    if _STATE.tracer is not None:
        return True
    endpoint = None if exporter is not None else otlp_traces_endpoint(settings)
    if exporter is None and endpoint is None:
        return False
    # The SDK and exporter load only when tracing is on: an untraced service never imports them.
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import textpulse

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    resource = Resource.create(
        {
            SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or f"textpulse-{service}",
            SERVICE_NAMESPACE: "textpulse",
            SERVICE_VERSION: textpulse.__version__,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _STATE.provider, _STATE.service = provider, service
    _STATE.tracer = provider.get_tracer("textpulse", textpulse.__version__)
    log.info("tracing on", extra={"otlp_endpoint": endpoint or type(exporter).__name__})
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter, and switch tracing off (tests; the provider also flushes at exit)."""
    provider = _STATE.provider
    _STATE.provider, _STATE.tracer, _STATE.service = None, None, ""
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_ms: int = 5000) -> bool:
    """Export every finished span now (True when done or when tracing is off)."""
    return _STATE.provider.force_flush(timeout_ms) if _STATE.provider is not None else True


# ------------------------------------------------------------------ Kafka headers


class KafkaHeadersGetter(Getter[Sequence[tuple[str, bytes | str | None]]]):
    """Reads a propagator's fields from a consumed record's headers (``(name, bytes)`` pairs)."""

    def get(self, carrier: Sequence[tuple[str, bytes | str | None]], key: str) -> list[str] | None:
        found = [
            value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
            for name, value in carrier
            if name.lower() == key and value is not None
        ]
        return found or None

    def keys(self, carrier: Sequence[tuple[str, bytes | str | None]]) -> list[str]:
        return [name for name, _ in carrier]


KAFKA_HEADERS = KafkaHeadersGetter()


def _header(rec: Any, name: str) -> str | None:
    for key, value in rec.headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes | bytearray) else str(value)
    return None


# ---------------------------------------------------------------------- consume


@contextmanager
def consume(service: str, records: Sequence[Any]) -> Iterator[None]:
    """The spans of one consumed batch (see the module docstring); a no-op when tracing is off."""
    tracer = _STATE.tracer
    if tracer is None or not records:
        yield
        return
    topic = str(records[0].topic)
    common: dict[str, str] = {"messaging.system": "kafka", "messaging.destination.name": topic}
    parents: list[tuple[Any, str | None, otel_context.Context]] = []
    links: list[Link] = []
    for rec in records:
        ctx = propagate.extract(list(rec.headers or ()), getter=KAFKA_HEADERS)
        event_id = _header(rec, EVENT_ID_HEADER)
        parents.append((rec, event_id, ctx))
        parent = trace.get_current_span(ctx).get_span_context()
        if parent.is_valid:
            links.append(Link(parent, {EVENT_ID_ATTR: event_id} if event_id else None))
    batch_attrs: Attributes = {
        **common,
        "messaging.operation.type": "process",
        "messaging.batch.message_count": len(records),
        "textpulse.service": service,
    }
    # A root of its own (empty parent context): the batch is not part of any one event's trace.
    with tracer.start_as_current_span(
        f"consume {topic}", context=otel_context.Context(), kind=SpanKind.CONSUMER, links=links, attributes=batch_attrs
    ) as batch:
        back = [Link(batch.get_span_context())]
        hops: dict[str, trace.Span] = {}
        unnamed = 0
        for rec, event_id, ctx in parents:
            if not event_id:
                unnamed += 1
                continue
            if event_id in hops:
                continue
            hops[event_id] = tracer.start_span(
                f"process {topic}",
                context=ctx,
                kind=SpanKind.CONSUMER,
                links=back,
                attributes={
                    **common,
                    "messaging.operation.type": "process",
                    "messaging.destination.partition.id": str(rec.partition),
                    "messaging.kafka.offset": int(rec.offset),
                    EVENT_ID_ATTR: event_id,
                },
            )
        batch_token = _BATCH.set(_Batch(batch, topic, common, hops, unnamed))
        event_token = _EVENT_ID.set(next(iter(hops)) if len(hops) == 1 else None)
        try:
            yield
        except BaseException as exc:
            # Spans started by publish() for unnamed records are in ``hops`` too.
            for hop in hops.values():
                hop.set_status(Status(StatusCode.ERROR, f"batch failed: {type(exc).__name__}"))
            raise
        finally:
            _EVENT_ID.reset(event_token)
            _BATCH.reset(batch_token)
            for hop in hops.values():
                hop.end()


class KafkaTracingMiddleware(BaseMiddleware[Any, Any]):
    """FastStream middleware: every consumed (batch) message runs inside :func:`consume`."""

    def __init__(self, msg: Any, /, *, context: Any, service: str) -> None:
        super().__init__(msg, context=context)
        self.service = service

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        raw = msg.raw_message
        records = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
        with consume(self.service, records):
            return await call_next(msg)


def broker_middlewares(service: str) -> list[Any]:
    """The middlewares ``make_broker`` adds for ``service``: none when tracing is off."""
    if not enabled():
        return []
    return [partial(KafkaTracingMiddleware, service=service)]


# ------------------------------------------------------------------ produce, spans


@contextmanager
def _publish(tracer: trace.Tracer, topic: str, records: Sequence[OutRecord]) -> Iterator[list[OutRecord]]:
    attrs: Attributes = {
        "messaging.system": "kafka",
        "messaging.destination.name": topic,
        "messaging.operation.type": "send",
        "messaging.batch.message_count": len(records),
    }
    with tracer.start_as_current_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attrs):
        batch = _BATCH.get()
        current = otel_context.get_current()
        out = []
        for rec in records:
            event_id = rec.headers.get(EVENT_ID_HEADER, "")
            hop = batch.hops.get(event_id) if batch is not None else None
            if hop is None and event_id and batch is not None and batch.unnamed > 0:
                hop = _own_trace(tracer, batch, event_id)
            ctx = trace.set_span_in_context(hop) if hop is not None else current
            headers = {k: v for k, v in rec.headers.items() if k not in _TRACE_HEADERS}
            propagate.inject(headers, context=ctx)
            out.append(dataclasses.replace(rec, headers=headers))
        yield out


def _own_trace(tracer: trace.Tracer, batch: _Batch, event_id: str) -> trace.Span:
    """The ``process`` span of an event whose consumed record named none: the root of the event's own trace.

    Timed from the batch's start (ended with the batch, like the others), linked back to the batch
    span, which links to it in turn: an outside client's events do not share one batch trace.
    """
    batch.unnamed -= 1
    hop = tracer.start_span(
        f"process {batch.topic}",
        context=otel_context.Context(),
        kind=SpanKind.CONSUMER,
        links=[Link(batch.span.get_span_context())],
        attributes={**batch.common, "messaging.operation.type": "process", EVENT_ID_ATTR: event_id},
        start_time=getattr(batch.span, "start_time", None),
    )
    batch.span.add_link(hop.get_span_context(), {EVENT_ID_ATTR: event_id})
    batch.hops[event_id] = hop
    return hop


def publish(topic: str, records: Sequence[OutRecord]) -> AbstractContextManager[Sequence[OutRecord]]:
    """A ``send <topic>`` span around a write, yielding ``records`` with trace headers; as is when off."""
    tracer = _STATE.tracer
    if tracer is None:
        return nullcontext(records)
    return _publish(tracer, topic, records)


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[object]:
    """A child span of the current one (e.g. ``infer``); a no-op when tracing is off."""
    tracer = _STATE.tracer
    if tracer is None:
        return nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)


def bind_event(event_id: str) -> None:
    """The current task handles ``event_id``: log lines carry it, the current span gets it as a tag."""
    _EVENT_ID.set(event_id)
    if _STATE.tracer is not None:
        trace.get_current_span().set_attribute(EVENT_ID_ATTR, event_id)


# --------------------------------------------------------------------- HTTP, logs


#: Paths that are scraped or probed all the time: no spans for them.
_OPS_PATHS = "/health,/ready,/metrics"


def instrument_asgi(app: Any) -> None:
    """Trace ``app``'s requests (server spans from/with ``traceparent``); nothing when tracing is off."""
    if _STATE.provider is None:
        return
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    app.add_middleware(
        OpenTelemetryMiddleware,
        excluded_urls=_OPS_PATHS,
        tracer_provider=_STATE.provider,
        # One span per request; the per-chunk receive/send spans say nothing an operator needs.
        exclude_spans=["receive", "send"],
    )


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` (hex, as Jaeger shows them) and ``event_id`` to log records.

    Only what is known: no span, no ids; ``event_id`` when the task handles one event (an
    ``extra={"event_id": ...}`` of the call wins).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        event_id = _EVENT_ID.get()
        if event_id is not None and not hasattr(record, "event_id"):
            record.event_id = event_id
        return True
