"""Wiring of the example service: ``python -m services._example.app``, port 8099 (see textpulse.kit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.observability.metrics import ServiceMetrics

from . import handlers
from .settings import ExampleSettings


@asynccontextmanager
async def resources(k: kit.Kit[ExampleSettings, ServiceMetrics]) -> AsyncIterator[handlers.Deps]:
    """The handlers' dependencies (clients and models would be opened here and closed after the yield)."""
    yield handlers.Deps(k.settings, k.writer(k.settings.topic_out), k.dead_letters)


SERVICE = kit.Service(
    name=handlers.SERVICE,
    settings=ExampleSettings,
    metrics=lambda: ServiceMetrics(handlers.SERVICE),
    subscribe=handlers.subscribe,
    resources=resources,
)


def create_app(settings: ExampleSettings | None = None, *, broker: KafkaBroker | None = None) -> Any:
    return kit.build(SERVICE, settings, broker=broker)


def main() -> None:
    kit.main(SERVICE, create_app)


if __name__ == "__main__":
    main()
