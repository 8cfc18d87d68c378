"""Wiring of the route service on the service kit (:mod:`textpulse.kit`).

Run: ``python -m services.route.app`` (or ``textpulse serve route``), port 8084.
The rules file is validated before anything connects: a bad file stops the
service (exit 2) with the offending rule named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from textpulse import kit

from . import handlers
from .metrics import RouteMetrics
from .rules import Rules, RulesError, load_rules
from .settings import RouteSettings

Kit: TypeAlias = kit.Kit[RouteSettings, RouteMetrics]

#: What ``main`` reads (name, settings, config errors); :func:`service` adds the parts that need the rules.
SERVICE: kit.Service[RouteSettings, RouteMetrics] = kit.Service(
    name=handlers.SERVICE,
    settings=RouteSettings,
    metrics=RouteMetrics,
    subscribe=lambda _kit: None,
    config_errors=(RulesError,),
    config_what="routing rules",
)


def service(rules: Rules) -> kit.Service[RouteSettings, RouteMetrics]:
    """The route service with its validated ``rules`` (their queues are its output topics)."""

    @asynccontextmanager
    async def resources(k: Kit) -> AsyncIterator[handlers.RouteDeps]:
        s = k.settings
        yield handlers.RouteDeps(
            rules=rules,
            routed=k.writer(s.topic_out),
            queues={q: k.writer(f"{s.queue_topic_prefix}{q}") for q in rules.queues},
            dead_letters=k.dead_letters,
            metrics=k.metrics,
            topic=s.topic_in,
            seen=k.recent_ids(),
        )

    def started(k: Kit) -> Mapping[str, Any]:
        return {"rules": str(k.settings.rules_path), "rules_version": rules.version}

    return dataclasses.replace(
        SERVICE, subscribe=lambda k: handlers.subscribe(k, rules), resources=resources, started=started
    )


def create_app(
    settings: RouteSettings | None = None, *, broker: KafkaBroker | None = None, real_kafka: bool = True
) -> AsgiFastStream:
    """Build the app; raises :class:`RulesError` when the rules file is invalid."""
    settings = settings or RouteSettings()
    # Validated before anything connects: main exits 2 with the file and rule named.
    app: AsgiFastStream = kit.build(
        service(load_rules(settings.rules_path)), settings, broker=broker, real_kafka=real_kafka
    )
    return app


def main() -> None:
    kit.main(SERVICE, create_app)


if __name__ == "__main__":
    main()
