"""Tracing hooks: off costs nothing, on keeps each event in one trace across a batch."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from textpulse.kafka.writer import OutRecord
from textpulse.observability import tracing

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@dataclass
class Rec:
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    key: bytes | None = None
    topic: str = "text.raw"
    partition: int = 0
    offset: int = 0


def traced(event_id: str, trace_id: str = TRACE, offset: int = 0) -> Rec:
    return Rec(
        b"{}",
        [("event-id", event_id.encode()), ("traceparent", f"00-{trace_id}-{PARENT}-01".encode())],
        offset=offset,
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.init_tracing("classify", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()


def test_off_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TEXTPULSE_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not tracing.init_tracing("classify")
    assert not tracing.enabled()
    assert tracing.broker_middlewares("classify") == []
    records = [OutRecord(b"{}", None, {"event-id": "e1"})]
    with tracing.publish("text.classified", records) as out:
        assert out is records  # untouched: no copy, no header
    with tracing.consume("classify", [traced("e1")]), tracing.span("infer") as inner:
        assert inner is None


def test_endpoint_from_settings_and_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.delenv("TEXTPULSE_OTLP_ENDPOINT", raising=False)
    assert tracing.otlp_traces_endpoint() == "http://collector:4318/v1/traces"
    monkeypatch.setenv("TEXTPULSE_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing.otlp_traces_endpoint() == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.otlp_traces_endpoint() is None


def test_each_event_keeps_its_trace_through_a_batch(spans: InMemorySpanExporter) -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    records = [traced("e1"), traced("e2", other, offset=1), Rec(b"{}", offset=2)]
    with tracing.consume("classify", records):
        with tracing.span("infer"):
            pass
        outs = [OutRecord(b"{}", None, {"event-id": "e1", "traceparent": "stale"}), OutRecord(b"{}", None, {})]
        with tracing.publish("text.classified", outs) as written:
            sent = list(written)
    assert tracing.force_flush()
    by_name: dict[str, list[Any]] = {}
    for s in spans.get_finished_spans():
        by_name.setdefault(s.name, []).append(s)
    batch = by_name["consume text.raw"][0]
    assert batch.parent is None
    assert batch.kind is SpanKind.CONSUMER
    assert {format(link.context.trace_id, "032x") for link in batch.links} == {TRACE, other}
    hops = {s.attributes["textpulse.event_id"]: s for s in by_name["process text.raw"]}
    assert set(hops) == {"e1", "e2"}  # the record without an event id has no span of its own
    assert format(hops["e1"].context.trace_id, "032x") == TRACE
    assert format(hops["e1"].parent.span_id, "016x") == PARENT
    assert hops["e1"].links[0].context.span_id == batch.context.span_id
    infer, send = by_name["infer"][0], by_name["send text.classified"][0]
    assert infer.parent.span_id == batch.context.span_id
    assert send.parent.span_id == batch.context.span_id
    assert send.kind is SpanKind.PRODUCER
    # The record of e1 continues e1's trace from its process span; the one without an event the batch's.
    assert sent[0].headers["traceparent"] == f"00-{TRACE}-{format(hops['e1'].context.span_id, '016x')}-01"
    assert sent[0].headers["event-id"] == "e1"
    assert sent[1].headers["traceparent"].split("-")[1] == format(batch.context.trace_id, "032x")


def test_outside_records_get_a_trace_per_event_linked_with_the_batch(spans: InMemorySpanExporter) -> None:
    """text.in from an outside client: no traceparent, no event-id header; ingest names the events."""
    records = [Rec(b"{}", topic="text.in", offset=i) for i in range(3)]
    with tracing.consume("ingest", records):
        # ingest writes the validated events (event-id headers it assigned); two in one write, one later.
        first = [OutRecord(b"{}", None, {"event-id": "a"}), OutRecord(b"{}", None, {"event-id": "b"})]
        with tracing.publish("text.raw", first) as written:
            sent = list(written)
        with tracing.publish("text.raw", [OutRecord(b"{}", None, {"event-id": "c"})]) as written:
            sent += list(written)
        # A second output of an event already seen continues its trace; none beyond the records consumed.
        more = [OutRecord(b"{}", None, {"event-id": "a"}), OutRecord(b"{}", None, {"event-id": "extra"})]
        with tracing.publish("text.raw", more) as written:
            sent += list(written)
    assert tracing.force_flush()
    finished: list[Any] = list(spans.get_finished_spans())
    (batch,) = [s for s in finished if s.name == "consume text.in"]
    hops = {s.attributes["textpulse.event_id"]: s for s in finished if s.name == "process text.in"}
    assert set(hops) == {"a", "b", "c"}
    trace_ids = {hop.context.trace_id for hop in hops.values()}
    assert len(trace_ids) == 3  # a trace per event
    assert batch.context.trace_id not in trace_ids  # not the batch's
    for hop in hops.values():
        assert hop.parent is None  # the root of the event's trace
        assert hop.kind is SpanKind.CONSUMER
        assert [link.context.span_id for link in hop.links] == [batch.context.span_id]
        assert hop.start_time == batch.start_time  # timed like a process span started with the batch
        assert hop.end_time <= batch.end_time
    # Linked from the batch span too, with the event id.
    assert {(link.context.span_id, link.attributes["textpulse.event_id"]) for link in batch.links} == {
        (hop.context.span_id, event_id) for event_id, hop in hops.items()
    }

    def parent(rec: OutRecord) -> tuple[str, str]:
        _, trace_id, span_id, _ = rec.headers["traceparent"].split("-")
        return trace_id, span_id

    for rec in sent[:4]:
        hop = hops[rec.headers["event-id"]]
        assert parent(rec) == (format(hop.context.trace_id, "032x"), format(hop.context.span_id, "016x"))
    # More events than records without an event id: the surplus stays in the batch's trace.
    assert parent(sent[4])[0] == format(batch.context.trace_id, "032x")


def test_named_records_start_no_trace_for_other_outputs(spans: InMemorySpanExporter) -> None:
    """A batch whose records all name their event (text.raw onwards): an output of another id stays in the batch."""
    outs = [OutRecord(b"{}", None, {"event-id": "alert-7"})]
    with tracing.consume("alert", [traced("e1")]), tracing.publish("alerts.financial", outs) as written:
        (sent,) = list(written)
    tracing.force_flush()
    names = sorted(s.name for s in spans.get_finished_spans())
    assert names == ["consume text.raw", "process text.raw", "send alerts.financial"]
    (batch,) = [s for s in spans.get_finished_spans() if s.name == "consume text.raw"]
    assert sent.headers["traceparent"].split("-")[1] == format(batch.context.trace_id, "032x")


def test_failed_batch_marks_its_events(spans: InMemorySpanExporter) -> None:
    with pytest.raises(RuntimeError), tracing.consume("classify", [traced("e1")]):
        raise RuntimeError("boom")
    tracing.force_flush()
    status = {s.name: s.status.status_code.name for s in spans.get_finished_spans()}
    assert status == {"consume text.raw": "ERROR", "process text.raw": "ERROR"}


def test_log_lines_carry_trace_span_and_event_ids(spans: InMemorySpanExporter) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(tracing.TraceContextFilter())
    logger = logging.getLogger("textpulse.test_tracing")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with tracing.consume("classify", [traced("e1")]):
            logger.info("inside")
    finally:
        logger.removeHandler(handler)
    outside, inside = records
    assert not hasattr(outside, "trace_id")
    assert not hasattr(outside, "event_id")
    assert inside.event_id == "e1"  # type: ignore[attr-defined]
    assert len(inside.trace_id) == 32  # type: ignore[attr-defined]
    assert len(inside.span_id) == 16  # type: ignore[attr-defined]


def test_kafka_header_getter() -> None:
    carrier = [("traceparent", b"x"), ("other", None), ("Traceparent", "y")]
    assert tracing.KAFKA_HEADERS.get(carrier, "traceparent") == ["x", "y"]
    assert tracing.KAFKA_HEADERS.get(carrier, "missing") is None
    assert tracing.KAFKA_HEADERS.keys(carrier) == ["traceparent", "other", "Traceparent"]
