"""Wiring of the NER service on the service kit (:mod:`textpulse.kit`).

Run: ``python -m services.ner.app`` (uvicorn on ``TEXTPULSE_NER_HTTP_PORT``,
default 8082: ``/health``, ``/ready``, ``/metrics``). The inference backend is
Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process; tests pass their
own broker and backend to :func:`create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.inference import InferenceBackend
from textpulse.inference.metrics import InferenceMetrics
from textpulse.inference.settings import backend_ready, serving_backend
from textpulse.observability.http import OpsAsgiFastStream

from . import handlers
from .core import Enricher
from .settings import NerSettings

Kit: TypeAlias = kit.Kit[NerSettings, InferenceMetrics]

#: The app's type: the kit's worker app (``app.state`` holds ``metrics``, ``broker`` and, once started, ``backend``).
NerApp: TypeAlias = OpsAsgiFastStream


def service(backend: InferenceBackend | None = None) -> kit.Service[NerSettings, InferenceMetrics]:
    """The NER service; ``backend`` replaces the one built from the settings (tests)."""

    @asynccontextmanager
    async def resources(k: Kit) -> AsyncIterator[handlers.Deps]:
        s, m = k.settings, k.metrics
        async with serving_backend(s.inference, m, backend) as inference:
            await inference.start([s.ner_model])
            k.state.backend = inference
            yield handlers.Deps(
                enricher=Enricher(inference, s.ner_model, use_cashtags=s.cashtags),
                enriched_writer=k.writer(s.topic_out),
                mentions_writer=k.writer(s.topic_mentions),
                dead_letters=k.dead_letters,
                metrics=m,
                settings=s,
                seen=k.recent_ids(),
            )

    def started(k: Kit) -> Mapping[str, Any]:
        inference, model = k.state.backend, k.settings.ner_model
        return {"backend": inference.name, "model": model, "version": inference.info(model).version}

    return kit.Service(
        name=handlers.SERVICE,
        settings=NerSettings,
        metrics=lambda: InferenceMetrics(handlers.SERVICE),
        subscribe=handlers.subscribe,
        resources=resources,
        ready=backend_ready,
        started=started,
    )


SERVICE = service()


def create_app(
    settings: NerSettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    backend: InferenceBackend | None = None,
    real_kafka: bool = True,
) -> NerApp:
    """Build the NER app. ``real_kafka=False`` skips the DLQ limit and the lag probe (in-memory tests)."""
    app: NerApp = kit.build(service(backend) if backend else SERVICE, settings, broker=broker, real_kafka=real_kafka)
    return app


def main() -> None:
    kit.main(SERVICE, create_app)


if __name__ == "__main__":
    main()
