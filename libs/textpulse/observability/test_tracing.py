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
