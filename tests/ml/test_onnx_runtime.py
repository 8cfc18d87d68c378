"""ONNX Runtime serving path: fused and int8 graphs agree with torch, and load without torch.

On the tiny test models (``make test-models``), re-exported here with ONNX so the
version folders hold ``model.onnx``, ``model.opt.onnx`` and ``model.int8.onnx``.
int8 label agreement on real dev data is a bench check (``make bench-int8`` refuses to record int8
below 97 %): the tiny sequence models are too little trained for their labels to mean anything;
the tiny NER model is the exception, so its int8 word tags are checked here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.ci import missing

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
TEXTS = [
    "$AAPL falls 3% after Goldman Sachs downgrade",
    "Fed holds rates steady",
    "I want to transfer money to my savings account, what is my balance at Bank of America?",
    "ok",
]
#: RSS ceilings of the brief: an ORT service process (two models) and one Triton python-backend instance
SERVICE_RSS_MB = 600
TRITON_INSTANCE_RSS_MB = 400


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny sentiment and ner models exported with ONNX (plain, fused, int8) into a fresh repository."""
    from tests.support.inference import build_tiny_repo, tiny_repo_from_env

    try:
        tiny = build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("the tiny model repository", f"cannot be built (make test-models): {exc}")
    from textpulse.ml.export import export_model
    from textpulse.ml.predictor import resolve_model_dir

    repo = tmp_path_factory.mktemp("ort-repo")
    for name in ("sentiment", "ner"):
        entry = export_model(resolve_model_dir(tiny / name), repo, name, torch_threads=1)
        assert entry["onnx_opt"] == "model.opt.onnx"
        assert entry["onnx_fused_ops"].get("Attention", 0) > 0, entry["onnx_fused_ops"]
        assert entry["onnx_opt_max_abs_diff"] < 1e-3
    return repo


@pytest.mark.parametrize("name", ["sentiment", "ner"])
def test_light_tokenizer_matches_autotokenizer(exported: Path, name: str) -> None:
    from textpulse.ml.predictor import load_tokenizer, resolve_model_dir
    from transformers import AutoTokenizer

    directory = resolve_model_dir(exported / name)
    ours, theirs = load_tokenizer(directory), AutoTokenizer.from_pretrained(directory)
    assert ours.pad_token_id == theirs.pad_token_id
    words = [t.split() for t in TEXTS]
    for kwargs, inputs in (({}, TEXTS), ({"is_split_into_words": True}, words)):
        a = ours(inputs, truncation=True, max_length=12, padding=True, return_tensors="np", **kwargs)
        b = theirs(inputs, truncation=True, max_length=12, padding=True, return_tensors="np", **kwargs)
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])
        if kwargs:
            assert [a.word_ids(i) for i in range(len(TEXTS))] == [b.word_ids(i) for i in range(len(TEXTS))]


@pytest.mark.parametrize("name", ["sentiment", "ner"])
def test_ort_fused_and_int8_agree_with_torch(exported: Path, name: str) -> None:
    from textpulse.ml.predictor import Predictor

    torch_fp32 = Predictor(exported / name, backend="torch")
    batch = torch_fp32.encode(TEXTS)
    mask = batch.attention_mask.astype(bool)
    reference = torch_fp32.logits(batch.input_ids, batch.attention_mask)
    ort_fp32 = Predictor(exported / name, backend="onnx")
    assert ort_fp32.graph is not None
    assert ort_fp32.graph.name == "model.opt.onnx"
    ort_int8 = Predictor(exported / name, backend="onnx", precision="int8")
    assert ort_int8.graph is not None
    assert ort_int8.graph.name == "model.int8.onnx"
    fp32 = ort_fp32.logits(batch.input_ids, batch.attention_mask)
    int8 = ort_int8.logits(batch.input_ids, batch.attention_mask)
    assert fp32.dtype == int8.dtype == np.float32
    assert fp32.shape == int8.shape == reference.shape
    keep = mask if reference.ndim == 3 else slice(None)
    np.testing.assert_allclose(fp32[keep], reference[keep], atol=1e-4)
    assert np.abs(int8[keep] - reference[keep]).max() < 1.0  # logit units: a sanity bound, labels are benched
    bf16 = Predictor(exported / name, backend="torch", precision="bf16").logits(batch.input_ids, batch.attention_mask)
    assert bf16.dtype == np.float32
    assert np.abs(bf16[keep] - reference[keep]).max() < 1.0
    with pytest.raises(ValueError, match="bf16"):
        Predictor(exported / name, backend="onnx", precision="bf16")


class _FakeTensor:
    """pb_utils.Tensor stand-in: DLPack in and out, like the real stub (numpy only: no torch)."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name = name
        self._array = array

    def as_numpy(self) -> np.ndarray:
        return self._array

    def to_dlpack(self) -> object:
        return np.ascontiguousarray(self._array).__dlpack__()

    @classmethod
    def from_dlpack(cls, name: str, capsule: object) -> _FakeTensor:
        class _Holder:
            def __dlpack__(self, **_: Any) -> object:
                return capsule

            def __dlpack_device__(self) -> tuple[int, int]:
                return (1, 0)

        return cls(name, np.from_dlpack(_Holder()).copy())


def _triton_instance(version_dir: Path, params: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _FakeTensor  # type: ignore[attr-defined]
    fake.InferenceResponse = lambda output_tensors: types.SimpleNamespace(output_tensors=output_tensors)  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("exported_ort_model", version_dir / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    parameters = {"torch_threads": "1", "max_sequence_length": "64", **params}
    instance.initialize(
        {
            "model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in parameters.items()}}),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_instance_kind": "CPU",
        }
    )
    return instance


@pytest.mark.parametrize("name", ["sentiment", "ner"])
def test_triton_model_serves_ort_by_default(exported: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from textpulse.ml.predictor import Predictor, resolve_model_dir

    version_dir = resolve_model_dir(exported / name)
    assert 'key: "runtime"' in (exported / name / "config.pbtxt").read_text()
    reference = Predictor(version_dir, backend="torch")
    for params, runtime, atol in (
        ({}, "onnx", 1e-4),
        ({"runtime": "onnx", "precision": "int8"}, "onnx", 1.0),
        ({"runtime": "torch"}, "torch", 1e-4),
    ):
        instance = _triton_instance(version_dir, params, monkeypatch)
        assert instance.runtime == runtime
        requests = []
        for text in TEXTS:
            encoded = reference.encode([text])
            requests.append({"input_ids": encoded.input_ids, "attention_mask": encoded.attention_mask})
        for request, response in zip(requests, instance.execute(requests), strict=True):
            got = response.output_tensors[0].as_numpy()
            expected = reference.logits(request["input_ids"], request["attention_mask"])
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, atol=atol)
    with pytest.raises(ValueError, match="needs a KIND_GPU instance"):
        _triton_instance(version_dir, {"precision": "bf16"}, monkeypatch)


# VmHWM, not getrusage's ru_maxrss: a child forked from pytest (torch loaded, ~2 GB) inherits the
# parent's high-water mark in ru_maxrss across exec; VmHWM belongs to the new address space.
_PEAK_RSS = """
def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_SERVICE_PROBE = """
import asyncio, json, sys
{peak}from pathlib import Path
from textpulse.inference.local import LocalBackend

async def main():
    precision = None if sys.argv[2] == "default" else sys.argv[2]
    backend = LocalBackend(Path(sys.argv[1]), runtime="onnx", precision=precision, threads=1)
    await backend.start(["sentiment", "ner"])
    graphs = sorted({p.graph.name for p in backend._predictors.values()})
    labels = [p.label for p in await backend.classify("sentiment", ["Fed holds rates steady"] * 40)]
    spans = await backend.tag("ner", ["Goldman Sachs hired Jane Smith in London"] * 40)
    await backend.close()
    rss_mb = peak_rss_mb()
    n = len(labels) + len(spans)
    print(json.dumps({"torch": "torch" in sys.modules, "rss_mb": rss_mb, "n": n, "graphs": graphs}))

asyncio.run(main())
""".replace("{peak}", _PEAK_RSS)

_TRITON_PROBE = """
import json, sys, types
{peak}import numpy as np
fake = types.ModuleType("triton_python_backend_utils")
sys.modules["triton_python_backend_utils"] = fake
fake.InferenceResponse = lambda output_tensors: output_tensors
class T:
    def __init__(self, a): self.a = a
    def to_dlpack(self): return self.a.__dlpack__()
    @staticmethod
    def from_dlpack(name, capsule): return name
fake.Tensor = T
fake.get_input_tensor_by_name = lambda request, name: T(request[name])
import importlib.util
from pathlib import Path
version_dir = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("m", version_dir / "model.py")
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
instance = module.TritonPythonModel()
params = {"precision": {"string_value": sys.argv[2]}, "torch_threads": {"string_value": "1"}}
instance.initialize({"model_config": json.dumps({"parameters": params}), "model_repository": str(version_dir.parent),
                     "model_version": version_dir.name, "model_instance_kind": "CPU"})
ids = np.full((32, 48), 1000, dtype=np.int64)
instance.execute([{"input_ids": ids, "attention_mask": np.ones_like(ids)}])
rss_mb = peak_rss_mb()
print(json.dumps({"torch": "torch" in sys.modules, "rss_mb": rss_mb}))
""".replace("{peak}", _PEAK_RSS)


def _probe(script: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "libs"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("precision", "recorded", "graph"),
    [("default", None, "model.opt.onnx"), ("default", "int8", "model.int8.onnx"), ("fp32", "int8", "model.opt.onnx")],
)
def test_ort_service_process_has_no_torch(exported: Path, precision: str, recorded: str | None, graph: str) -> None:
    """Unset precision serves the model's recorded default (serving.json), else fp32; a setting wins."""
    from textpulse.ml.onnx_runtime import SERVING_FILE
    from textpulse.ml.predictor import resolve_model_dir

    files = [resolve_model_dir(exported / name) / SERVING_FILE for name in ("sentiment", "ner")]
    for path in files:
        if recorded:
            path.write_text(json.dumps({"defaults": {"onnx": recorded}}), "utf-8")
    try:
        result = _probe(_SERVICE_PROBE, str(exported), precision)
    finally:
        for path in files:
            path.unlink(missing_ok=True)
    assert result["graphs"] == [graph]
    assert result["torch"] is False
    assert result["n"] == 80
    assert result["rss_mb"] < SERVICE_RSS_MB, result


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_triton_ort_instance_has_no_torch(exported: Path, precision: str) -> None:
    from textpulse.ml.predictor import resolve_model_dir

    result = _probe(_TRITON_PROBE, str(resolve_model_dir(exported / "sentiment")), precision)
    assert result["torch"] is False
    assert result["rss_mb"] < TRITON_INSTANCE_RSS_MB, result


def test_int8_ner_word_tags_agree_with_fp32(exported: Path) -> None:
    """int8 gives ONNX fp32's word tag on >= 97 % of the words of 300 tweets (the parity rule of issue #20).

    Only the tiny NER model makes this meaningful: it tags ~20 % of words as entities with wide
    logit margins (measured 98.7 % agreement). The tiny sequence models predict one class almost
    everywhere (sentiment) or sit on near-ties (finance, median top-two margin 0.08 logits), so for
    them, and for every trained model, ``make bench-int8 --record`` refuses int8 below 97 % on the dev
    split (``bench.bench_int8.MIN_INT8_AGREEMENT``).
    """
    from textpulse.ml.predictor import Predictor
    from textpulse.ml.tokenization import first_subtoken_positions
    from textpulse.replay import build_events

    try:
        texts = [e["text"] for e in build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=300)]
    except FileNotFoundError as exc:
        missing("the twitter_fin_sentiment data set", str(exc))
    fp32 = Predictor(exported / "ner", backend="onnx", precision="fp32", threads=1)
    int8 = Predictor(exported / "ner", backend="onnx", precision="int8", threads=1)
    same = words = entities = 0
    for start in range(0, len(texts), 32):
        batch = fp32.encode(texts[start : start + 32])
        a = fp32.logits(batch.input_ids, batch.attention_mask).argmax(-1)
        b = int8.logits(batch.input_ids, batch.attention_mask).argmax(-1)
        for row, word_ids in enumerate(batch.word_ids or []):
            for position in first_subtoken_positions(word_ids).values():
                words += 1
                same += int(a[row, position] == b[row, position])
                entities += int(fp32.labels[a[row, position]] != "O")
    assert words > 3000
    assert entities / words > 0.1, "the tiny NER model tags too few entities for agreement to mean anything"
    assert same / words >= 0.97, f"int8 word-tag agreement {same / words:.1%} over {words} words"


async def test_streams_layout_matches_intra_op(exported: Path) -> None:
    """The default ``streams`` layout (chunks at once, one ORT thread each) answers exactly as ``intra-op``.

    Results stay in input order however the chunks finish, and a batch smaller than ``streams`` full chunks
    is cut so every stream gets one (two streams, 5 texts, batch size 8 → chunks of 3 and 2).
    """
    from textpulse.inference.local import LocalBackend

    texts = [TEXTS[i % len(TEXTS)] + f" #{i}" for i in range(23)]
    answers = {}
    for layout in ("streams", "intra-op"):
        passes: list[int] = []
        backend = LocalBackend(
            exported,
            runtime="onnx",
            threads=2,
            layout=layout,
            batch_size=8,
            observe=lambda _m, _s, n, passes=passes: passes.append(n),
        )
        await backend.start(["sentiment", "ner"])
        try:
            assert backend.streams == (2 if layout == "streams" else 1)
            threads = {p._session.get_session_options().intra_op_num_threads for p in backend._predictors.values()}
            assert threads == ({1} if layout == "streams" else {2})
            labels = [(p.label, round(p.score, 4)) for p in await backend.classify("sentiment", texts)]
            spans = [[(s.type, s.start, s.end) for s in row] for row in await backend.tag("ner", texts)]
            passes.clear()
            await backend.classify("sentiment", texts[:5])
            answers[layout] = (labels, spans, sorted(passes))
        finally:
            await backend.close()
    assert answers["streams"][:2] == answers["intra-op"][:2]
    assert answers["streams"][2] == [2, 3]
    assert answers["intra-op"][2] == [5]


async def test_torch_runtime_keeps_one_chunk_at_a_time(exported: Path) -> None:
    """torch's intra-op pool is process-wide: the torch runtime ignores ``streams`` (no concurrent calls)."""
    from textpulse.inference.local import LocalBackend

    backend = LocalBackend(exported, runtime="torch", threads=2, layout="streams")
    try:
        assert (backend.layout, backend.streams) == ("intra-op", 1)
    finally:
        await backend.close()
