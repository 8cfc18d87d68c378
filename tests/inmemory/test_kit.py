"""The service kit (textpulse.kit) on FastStream's in-memory broker: what every service gets from it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import pytest
from faststream import Context
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse import kit
from textpulse.kafka import make_broker
from textpulse.observability.metrics import ServiceMetrics

from services._example.settings import ExampleSettings


class Probe:
    def __init__(self) -> None:
        self.events: list[str] = []
        self.seen: list[bytes] = []
        self.ready = True


def _service(probe: Probe, **extra: Any) -> kit.Service[ExampleSettings, ServiceMetrics]:
    def subscribe(k: kit.Kit[ExampleSettings, ServiceMetrics]) -> None:
        @k.subscriber(k.settings.topic_in, title="t.in", description="test")
        async def on_batch(msg: KafkaMessage, deps: Annotated[Probe, Context("deps")]) -> None:
            async def handle(records: Any) -> None:
                deps.seen.extend(r.value for r in records)

            await k.run_batch(msg, handle)

    @asynccontextmanager
    async def resources(k: kit.Kit[ExampleSettings, ServiceMetrics]) -> AsyncIterator[Probe]:
        probe.events.append("open")
        k.state.opened = True
        try:
            yield probe
        finally:
            probe.events.append("close")

    async def ticker() -> None:
        probe.events.append("tick")
        await asyncio.Event().wait()  # runs until cancelled at shutdown

    async def ready(_k: kit.Kit[ExampleSettings, ServiceMetrics]) -> bool:
        return probe.ready

    def subscribe_with_timer(k: kit.Kit[ExampleSettings, ServiceMetrics]) -> None:
        subscribe(k)
        k.background("ticker", ticker)

    return kit.Service(
        name="example",
        settings=ExampleSettings,
        metrics=lambda: ServiceMetrics("example"),
        subscribe=subscribe_with_timer,
        resources=resources,
        ready=ready,
        started=lambda _k: {"probe": True},
        **extra,
    )


async def test_deps_reach_the_handler_through_the_context_and_resources_close_last() -> None:
    probe, settings = Probe(), ExampleSettings()
    broker = make_broker(settings.kafka, service="example")
    app = kit.build(_service(probe), settings, broker=broker, real_kafka=False)
    async with TestKafkaBroker(broker), app.start_lifespan_context():
        await broker.publish(b"hello", settings.topic_in)
        await asyncio.sleep(0)
        assert probe.seen == [b"hello"]
        assert app.state.opened is True
        assert app.state.metrics.service == "example"
        assert app.state.kit.group_id == "textpulse-example"
        assert "tick" in probe.events  # background tasks start once the broker is connected
    assert probe.events[0] == "open"
    assert probe.events[-1] == "close"


async def test_ready_needs_the_service_check() -> None:
    probe, settings = Probe(), ExampleSettings()
    broker = make_broker(settings.kafka, service="example")
    app = kit.build(_service(probe), settings, broker=broker, real_kafka=False)
    async with (
        TestKafkaBroker(broker),
        app.start_lifespan_context(),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client,
    ):
        assert (await client.get("/ready")).status_code == 200
        probe.ready = False
        assert (await client.get("/ready")).status_code == 503


def test_main_exits_2_on_a_config_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    class BadConfigError(Exception):
        pass

    def create_app(_settings: Any) -> Any:
        msg = "rule 3: unknown queue 'vip'"
        raise BadConfigError(msg)

    monkeypatch.setattr(sys, "argv", ["example"])
    service = _service(Probe(), config_errors=(BadConfigError,))
    with pytest.raises(SystemExit) as exited:
        kit.main(service, create_app)
    assert exited.value.code == 2
    assert "invalid example configuration: rule 3: unknown queue 'vip'" in capsys.readouterr().err
