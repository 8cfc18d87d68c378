"""classify and ner serve with ONNX Runtime where neither torch nor transformers can be imported (issue #23).

Their images install ``deploy/docker/requirements-serve.lock`` (the ``serve`` and ``serving``
extras: ONNX Runtime, tokenizers, numpy, the Triton client), not torch. Here each service runs its
real app (``create_app`` → ``serving_backend`` → the in-process ONNX backend, the default) on
FastStream's in-memory broker, in a fresh interpreter where ``import torch`` and ``import
transformers`` fail as in that image, on the tiny test models exported with ONNX (``model.onnx``
only, and without the safetensors weights, as a serving repository may be). The parent process
checks the logits against torch on the same model. Selecting the torch runtime there, or serving a
version exported without ONNX, fails at start-up with one line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ci import missing
from tests.support.serving_probe import run_probe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The ONNX exports of the tiny models, kept between runs (re-made when a tiny model changes).
ONNX_REPO = REPO_ROOT / ".cache" / "test-onnx-repo"
#: What classify (finance, support: its default heads) and ner (ner) load.
MODELS = ("finance", "support", "ner")
#: What a version folder must hold to be served in-process with ONNX Runtime.
SERVED_FILES = ("config.json", "id2label.json", "tokenizer.json", "tokenizer_config.json")
TEXTS = {
    "n1": ("news", "$AAPL falls 3% after Goldman Sachs downgrade"),
    "s1": ("support", "I want to transfer money to my savings account, what is my balance?"),
    "r1": ("review", "Works fine, but the app is slow"),
    "n2": ("social", "Jane Smith says Fed holds rates steady in London"),
}

# sys.modules[name] = None is what the import system reads as "not installed": import raises
# ModuleNotFoundError (submodules too), importlib.util.find_spec answers None.
PROBE = """
import sys
for name in ("torch", "transformers"):
    sys.modules[name] = None

import asyncio, json, os
from datetime import UTC, datetime

from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts import ClassifiedEvent, EnrichedEvent, TextEvent, encode
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder

texts = json.loads(sys.argv[1])
now = datetime(2026, 1, 2, tzinfo=UTC)


async def run(module, settings_cls, records, topic_in, logits_of):
    settings = settings_cls(unavailable_backoff_s=0.01)
    broker = make_broker(settings.kafka, service=module.__name__.split(".")[1])
    app = module.create_app(settings, broker=broker, real_kafka=False)
    out, dead = [], []

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def _out(msg: KafkaMessage) -> None:
        out.append(msg.raw_message.value.decode())

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def _dead(msg: KafkaMessage) -> None:
        dead.append(msg.raw_message.value.decode())

    async with TestKafkaBroker(broker), app.lifespan_context():
        backend = app.state.backend
        for record in records:
            await broker.publish(record, topic_in)
        logits, batch = backend.logits(logits_of, [text for _, text in texts.values()])
        return {
            "backend": backend.name,
            "runtime": sorted({p.runtime for p in backend._predictors.values()}),
            "graphs": sorted({p.graph.name for p in backend._predictors.values()}),
            "out": out,
            "dead": dead,
            "input_ids": batch.input_ids.tolist(),
            "logits": logits.tolist(),
        }


async def main():
    import services.classify.app as classify
    import services.ner.app as ner
    from services.classify.settings import ClassifySettings
    from services.ner.settings import NerSettings

    events = [
        TextEvent(id=i, source="test", channel=channel, text=text, event_time=now, ingest_time=now)
        for i, (channel, text) in texts.items()
    ]
    result = {"classify": await run(classify, ClassifySettings, [encode(e) for e in events], "text.raw", "finance")}
    classified = [ClassifiedEvent.model_validate_json(v) for v in result["classify"]["out"]]
    result["ner"] = await run(ner, NerSettings, [encode(c) for c in classified], "text.classified", "ner")
    for value in result["ner"]["out"]:
        EnrichedEvent.model_validate_json(value)
    result["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") and sys.modules[m])
    print(json.dumps(result))


asyncio.run(main())
"""

TORCH_RUNTIME = """
import sys
for name in ("torch", "transformers"):
    sys.modules[name] = None
import asyncio
import services.classify.app as classify
from faststream.kafka import TestKafkaBroker
from services.classify.settings import ClassifySettings
from textpulse.inference.errors import ModelMismatch
from textpulse.kafka import make_broker

async def main():
    settings = ClassifySettings()
    broker = make_broker(settings.kafka, service="classify")
    app = classify.create_app(settings, broker=broker, real_kafka=False)
    try:
        async with TestKafkaBroker(broker), app.lifespan_context():
            pass
    except ModelMismatch as exc:
        print(exc)
        return
    raise SystemExit("torch served without torch")

asyncio.run(main())
"""


def _stamp(source: Path) -> dict[str, Any]:
    """What an export was made from: the tiny model's recipe and its weights file."""
    weights = source / "model.safetensors"
    params = source.parent / ".tiny-params.json"
    return {
        "params": params.read_text("utf-8") if params.is_file() else None,
        "weights": [weights.stat().st_size, weights.stat().st_mtime_ns],
    }


def _export(tiny: Path) -> Path:
    """``ONNX_REPO/<name>/1``: the served files of each tiny model plus ``model.onnx`` (the production exporter)."""
    from textpulse.ml.predictor import resolve_model_dir

    for name in MODELS:
        source = resolve_model_dir(tiny / name)
        target = ONNX_REPO / name / "1"
        stamp_file = ONNX_REPO / name / ".source.json"
        if stamp_file.is_file() and json.loads(stamp_file.read_text("utf-8")) == _stamp(source):
            continue
        from textpulse.ml.export import _SAMPLES, ONNX_FILE, export_onnx
        from textpulse.ml.modeling import load_model

        shutil.rmtree(ONNX_REPO / name, ignore_errors=True)
        target.mkdir(parents=True)
        for file_name in SERVED_FILES:
            shutil.copy2(source / file_name, target / file_name)
        model, tokenizer, _ = load_model(source)
        export_onnx(model, tokenizer, target / ONNX_FILE, _SAMPLES)  # raises beyond 1e-3 from torch
        stamp_file.write_text(json.dumps(_stamp(source)), "utf-8")
    return ONNX_REPO


@pytest.fixture(scope="module")
def repos() -> tuple[Path, Path]:
    """(the tiny repository, its ONNX export)."""
    from tests.support.inference import build_tiny_repo, tiny_repo_from_env

    try:
        tiny = build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("the tiny model repository", f"cannot be built (make test-models): {exc}")
    return tiny, _export(tiny)


def test_classify_and_ner_serve_onnx_without_torch_or_transformers(repos: tuple[Path, Path]) -> None:
    from textpulse.contracts import ClassifiedEvent, EnrichedEvent
    from textpulse.ml.predictor import Predictor

    tiny, onnx_repo = repos
    done = run_probe(PROBE, onnx_repo, json.dumps(TEXTS))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    for service in ("classify", "ner"):
        got = result[service]
        assert (got["backend"], got["runtime"], got["graphs"]) == ("local", ["onnx"], ["model.onnx"]), got
        assert got["dead"] == []
    classified = {c.event.id: c for c in map(ClassifiedEvent.model_validate_json, result["classify"]["out"])}
    assert set(classified) == set(TEXTS)
    assert classified["s1"].intent is not None
    assert classified["s1"].intent.model.name == "support"
    assert classified["n1"].topic is not None
    assert classified["n1"].topic.model.name == "finance"
    assert all(c.sentiment is not None for c in classified.values())
    enriched = {e.event.id: e for e in map(EnrichedEvent.model_validate_json, result["ner"]["out"])}
    assert set(enriched) == set(TEXTS)
    assert {e.ner_model.name for e in enriched.values()} == {"ner"}
    assert classified["n1"].sentiment == enriched["n1"].sentiment  # carried through
    # The same numbers as torch on the same weights (the exporter's own bound).
    texts = [text for _, text in TEXTS.values()]
    for service, model in (("classify", "finance"), ("ner", "ner")):
        reference = Predictor(tiny / model, backend="torch")
        batch = reference.encode(texts)
        np.testing.assert_array_equal(np.asarray(result[service]["input_ids"]), batch.input_ids)
        want = reference.logits(batch.input_ids, batch.attention_mask)
        got = np.asarray(result[service]["logits"], dtype=np.float32)
        keep = batch.attention_mask.astype(bool) if want.ndim == 3 else slice(None)
        np.testing.assert_allclose(got[keep], want[keep], atol=1e-3)


@pytest.mark.parametrize(
    ("runtime", "repo", "says"),
    [
        ("torch", "onnx", "local runtime 'torch' (TEXTPULSE_LOCAL_RUNTIME) needs torch and transformers"),
        ("onnx", "tiny", "which has no ONNX graph (re-export it with ONNX), needs torch and transformers"),
    ],
    ids=["torch-runtime", "version-without-onnx"],
)
def test_torch_without_torch_fails_at_start_up_in_one_line(
    repos: tuple[Path, Path], runtime: str, repo: str, says: str
) -> None:
    tiny, onnx_repo = repos
    done = run_probe(TORCH_RUNTIME, onnx_repo if repo == "onnx" else tiny, runtime=runtime)
    assert done.returncode == 0, done.stderr[-4000:]
    line = done.stdout.strip()
    assert "\n" not in line
    assert says in line
    assert "set TEXTPULSE_LOCAL_RUNTIME=onnx or install textpulse[ml]" in line
