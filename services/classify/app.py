"""Wiring of the classify service on the service kit (:mod:`textpulse.kit`).

Run: ``python -m services.classify.app`` (uvicorn on ``TEXTPULSE_CLASSIFY_HTTP_PORT``,
default 8081: ``/health``, ``/ready``, ``/metrics``). The inference backend is
Triton when ``TEXTPULSE_TRITON_URL`` is set, else in-process; it is opened in
``resources`` (models checked before the consumer joins its group). Tests pass
their own broker and backend to :func:`create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeAlias

from faststream.kafka import KafkaBroker
from textpulse import kit
from textpulse.inference import InferenceBackend
from textpulse.inference.metrics import InferenceMetrics
from textpulse.inference.settings import backend_ready, serving_backend

from . import handlers
from .core import Classifier
from .settings import ClassifySettings

Kit: TypeAlias = kit.Kit[ClassifySettings, InferenceMetrics]


def resources(backend: InferenceBackend | None) -> Callable[[Kit], AbstractAsyncContextManager[handlers.Deps]]:
    """The backend (``backend``, else from the settings) checked against the configured heads."""

    @asynccontextmanager
    async def opened(k: Kit) -> AsyncIterator[handlers.Deps]:
        s, m = k.settings, k.metrics
        async with serving_backend(s.inference, m, backend) as inference:
            classifier = Classifier(inference, s.routes(), s.top_k_scores)
            # ModelMismatch (one line) when a configured head is missing or its labels differ
            await inference.start(classifier.needed_models(), classifier.head_specs())
            classifier.check_labels()
            k.state.backend = inference
            yield handlers.Deps(classifier, k.writer(s.topic_out), k.dead_letters, m, s, k.recent_ids())

    return opened


def started(k: Kit) -> Mapping[str, Any]:
    classifier: Classifier = k.deps.classifier
    inference = classifier.backend
    heads = {
        f"{channel}.{task}": f"{spec}@{inference.info(spec.model).version}"
        for channel, tasks in classifier.routes.items()
        for task, spec in tasks.items()
    }
    return {"backend": inference.name, "heads": heads}


def service(backend: InferenceBackend | None = None) -> kit.Service[ClassifySettings, InferenceMetrics]:
    return kit.Service(
        name=handlers.SERVICE,
        settings=ClassifySettings,
        metrics=lambda: InferenceMetrics(handlers.SERVICE),
        subscribe=handlers.subscribe,
        resources=resources(backend),
        ready=backend_ready,
        started=started,
    )


def create_app(
    settings: ClassifySettings | None = None,
    *,
    broker: KafkaBroker | None = None,
    backend: InferenceBackend | None = None,
    real_kafka: bool = True,
) -> Any:
    """The classify app; ``real_kafka=False`` skips the DLQ limit read and the lag probe (in-memory tests)."""
    return kit.build(service(backend), settings, broker=broker, real_kafka=real_kafka)


def main() -> None:
    kit.main(service(), create_app)


if __name__ == "__main__":
    main()
