"""Train -> save -> export -> reload: the exported model must reproduce the in-memory logits.

Small on purpose (a few hundred examples, a few steps, short sequences): it
checks the pipeline, not accuracy.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from textpulse.ml.config import TrainConfig
from textpulse.ml.drift import load_reference
from textpulse.ml.predictor import Predictor
from textpulse.ml.triton.config import parameters_of, parse

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("datasets_available", "base_model_path")]

TEXTS = [
    "$AAPL falls 3% after Goldman Sachs downgrade",
    "Fed holds rates steady",
    "Bullish on $NVDA into earnings, guidance looks strong and demand is accelerating",
]


class _FakeTensor:
    """Stand-in for pb_utils.Tensor / InputTensor: DLPack in and out, like the real stub."""

    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name = name
        self._array = array

    def as_numpy(self) -> np.ndarray:
        return self._array

    def to_dlpack(self) -> object:
        import torch

        return torch.utils.dlpack.to_dlpack(torch.from_numpy(np.ascontiguousarray(self._array)))  # type: ignore[attr-defined]

    @classmethod
    def from_dlpack(cls, name: str, capsule: object) -> _FakeTensor:
        import torch

        return cls(name, torch.utils.dlpack.from_dlpack(capsule).numpy().copy())


def _load_triton_model(
    version_dir: Path, monkeypatch: pytest.MonkeyPatch, precision: str | None = None, kind: str = "CPU"
) -> Any:
    """Import the exported model.py with a stand-in for Triton's pb_utils module."""
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _FakeTensor  # type: ignore[attr-defined]
    fake.InferenceResponse = lambda output_tensors: types.SimpleNamespace(output_tensors=output_tensors)  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("exported_model", version_dir / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    params = {"torch_threads": {"string_value": "1"}, "max_sequence_length": {"string_value": "64"}}
    if precision:
        params["precision"] = {"string_value": precision}
    instance.initialize(
        {
            "model_config": json.dumps({"parameters": params}),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_instance_kind": kind,
        },
    )
    return instance


def _triton_logits(instance: Any, predictor: Predictor, texts: list[str]) -> list[np.ndarray]:
    """One request per text (ragged lengths, unpadded) in a single execute() call."""
    requests = []
    for text in texts:
        encoded = predictor.encode([text])
        requests.append(
            {"input_ids": encoded.input_ids.astype(np.int64), "attention_mask": encoded.attention_mask.astype(np.int64)}
        )
    responses = instance.execute(requests)
    return [r.output_tensors[0].as_numpy() for r in responses]


@pytest.mark.timeout(300)
def test_sequence_train_export_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textpulse.ml.export import export_model
    from textpulse.ml.inference import torch_logits_fn
    from textpulse.ml.train import fit

    model_dir = tmp_path / "sentiment-model"
    config = TrainConfig(
        task="sentiment",
        output_dir=model_dir,
        limit_train=240,
        limit_dev=60,
        max_steps=4,
        batch_size=16,
        max_length=32,
        threads=2,
        progress=False,
    )
    result = fit(config)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "id2label.json",
        "training_config.json",
        "metrics.json",
        "README.md",
        "confusion_matrix.png",
    ):
        assert (model_dir / name).is_file(), name
    saved_config = json.loads((model_dir / "config.json").read_text())
    assert saved_config["id2label"] == {"0": "Bearish", "1": "Bullish", "2": "Neutral"}
    assert result.summary["steps"] == 4
    assert 0.0 <= result.summary["dev"]["accuracy"] <= 1.0

    reloaded = Predictor(model_dir)
    batch = reloaded.encode(TEXTS)
    in_memory = torch_logits_fn(result.model)(batch.input_ids, batch.attention_mask)
    np.testing.assert_allclose(reloaded.logits(batch.input_ids, batch.attention_mask), in_memory, atol=1e-5)

    repo = tmp_path / "repo"
    entry = export_model(model_dir, repo, "sentiment", torch_threads=1)
    assert entry["version"] == 1
    assert entry["onnx_max_abs_diff"] < 1e-3
    version_dir = repo / "sentiment" / "1"
    for name in ("model.py", "model.onnx", "model.safetensors", "config.json", "tokenizer.json", "id2label.json"):
        assert (version_dir / name).is_file(), name
    assert (repo / "sentiment" / "config.pbtxt").is_file()
    assert (repo / "sentiment" / "configs" / "gpu-python.pbtxt").is_file()
    # ONNX Runtime + TensorRT variant, checked in tests/ml/test_triton_config.py
    assert (repo / "sentiment" / "configs" / "gpu.pbtxt").is_file()

    exported_torch = Predictor(repo / "sentiment")
    exported_onnx = Predictor(repo / "sentiment", backend="onnx")
    assert exported_torch.directory == version_dir
    np.testing.assert_allclose(exported_torch.logits(batch.input_ids, batch.attention_mask), in_memory, atol=1e-5)
    np.testing.assert_allclose(exported_onnx.logits(batch.input_ids, batch.attention_mask), in_memory, atol=1e-4)

    predictions = exported_torch.predict(TEXTS)
    assert [p["label"] for p in predictions] == [
        result.model.encoder.config.id2label[int(i)] for i in in_memory.argmax(1)
    ]
    assert all(abs(sum(p["scores"].values()) - 1.0) < 1e-5 for p in predictions)

    triton = _load_triton_model(version_dir, monkeypatch)
    for text, logits in zip(TEXTS, _triton_logits(triton, exported_torch, TEXTS), strict=True):
        single = exported_torch.encode([text])
        np.testing.assert_allclose(logits, exported_torch.logits(single.input_ids, single.attention_mask), atol=1e-4)

    _check_int8(version_dir, exported_torch, in_memory, monkeypatch)
    cpu_config = parse((repo / "sentiment" / "config.pbtxt").read_text())
    assert parameters_of(cpu_config)["precision"] == "auto"  # serving.json's measured default, else fp32
    gpu_python = parse((repo / "sentiment" / "configs" / "gpu-python.pbtxt").read_text())
    assert parameters_of(gpu_python)["precision"] == "bf16"

    again = export_model(model_dir, repo, "sentiment", onnx=False, precision="int8")
    assert parameters_of(parse((repo / "sentiment" / "config.pbtxt").read_text()))["precision"] == "int8"
    assert again["version"] == 2
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["models"]["sentiment"]["latest"] == 2
    assert [v["version"] for v in manifest["models"]["sentiment"]["versions"]] == [1, 2]
    assert "accuracy" in manifest["models"]["sentiment"]["versions"][0]["metrics"]


def _check_int8(version_dir: Path, fp32: Predictor, fp32_logits: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """int8 (in-process and Triton ``precision``) runs, returns FP32 logits of the same shape, near FP32's.

    Not equal: dynamic quantisation is a different model numerically (the label effect
    is measured on dev data with ``textpulse eval --backend torch-int8``, not here).
    """
    batch = fp32.encode(TEXTS)
    int8 = Predictor(version_dir, backend="torch-int8").logits(batch.input_ids, batch.attention_mask)
    assert int8.dtype == np.float32
    assert int8.shape == fp32_logits.shape
    assert np.abs(int8 - fp32_logits).max() < 0.5  # logit units: a loose sanity bound
    triton = _load_triton_model(version_dir, monkeypatch, precision="int8")
    for text, logits in zip(TEXTS, _triton_logits(triton, fp32, TEXTS), strict=True):
        single = fp32.encode([text])
        np.testing.assert_allclose(logits, fp32.logits(single.input_ids, single.attention_mask), atol=0.5)
    with pytest.raises(ValueError, match="needs a KIND_GPU instance"):
        _load_triton_model(version_dir, monkeypatch, precision="bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        _load_triton_model(version_dir, monkeypatch, precision="int4")


@pytest.mark.timeout(300)
def test_token_train_export_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textpulse.ml.export import export_model
    from textpulse.ml.inference import torch_logits_fn
    from textpulse.ml.train import fit

    model_dir = tmp_path / "ner-model"
    config = TrainConfig(
        task="finer_ord",
        output_dir=model_dir,
        limit_train=96,
        limit_dev=32,
        max_steps=3,
        batch_size=16,
        max_length=48,
        threads=2,
        progress=False,
        lora=True,
        lora_r=4,
    )
    result = fit(config)
    assert set(result.summary["dev"]) >= {"micro_f1", "weighted_f1", "per_type"}
    entry = export_model(model_dir, tmp_path / "repo", "ner", torch_threads=1)
    version_dir = tmp_path / "repo" / "ner" / str(entry["version"])

    predictor = Predictor(version_dir)
    texts = ["Goldman Sachs hired Jane Smith in London.", "nothing here"]
    batch = predictor.encode(texts)
    in_memory = torch_logits_fn(result.model)(batch.input_ids, batch.attention_mask)
    assert in_memory.shape == (2, batch.input_ids.shape[1], 7)
    mask = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(
        predictor.logits(batch.input_ids, batch.attention_mask)[mask], in_memory[mask], atol=1e-5
    )
    onnx = Predictor(version_dir, backend="onnx")
    np.testing.assert_allclose(onnx.logits(batch.input_ids, batch.attention_mask)[mask], in_memory[mask], atol=1e-4)

    # the drift reference: predicted entity-type mix and span confidence on the dev split
    reference = load_reference(version_dir)
    assert reference is not None
    assert entry["reference"] == "reference.json"
    assert reference["finer_ord"].labels == ("LOC", "ORG", "PER")
    assert reference["finer_ord"].samples == int(reference["finer_ord"].label_counts.sum())

    entities = predictor.predict_entities(texts)
    assert len(entities) == 2
    for text, spans in zip(texts, entities, strict=True):
        for span in spans:
            assert text[span["start"] : span["end"]] == span["text"]
            assert span["entity"] in {"PER", "LOC", "ORG"}

    triton = _load_triton_model(version_dir, monkeypatch)
    outputs = _triton_logits(triton, predictor, texts)
    for text, logits in zip(texts, outputs, strict=True):
        single = predictor.encode([text])
        assert logits.shape == (1, single.input_ids.shape[1], 7)
        np.testing.assert_allclose(logits, predictor.logits(single.input_ids, single.attention_mask), atol=1e-4)


@pytest.mark.timeout(300)
def test_auxiliary_task_trains_a_head_but_selects_on_the_primary(tmp_path: Path) -> None:
    from textpulse.ml.train import fit

    config = TrainConfig(
        task="sentiment", extra_tasks=["phrasebank"], select_on="primary", output_dir=tmp_path / "aux",
        limit_train=64, limit_dev=32, max_steps=4, eval_every=2, batch_size=16, max_length=32, threads=2,
        progress=False,
    )  # fmt: skip
    summary = fit(config).summary
    assert summary["select_metric"] == "macro_f1"
    assert [h["step"] for h in summary["history"]] == [2, 4]
    # the auxiliary head is trained and saved, and scored once at the end
    assert set(summary["dev_by_task"]) == {"sentiment", "phrasebank"}
    assert summary["dev"] == summary["dev_by_task"]["sentiment"]


@pytest.mark.timeout(300)
def test_multi_head_one_pass_serves_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textpulse.ml.export import export_model
    from textpulse.ml.train import fit

    model_dir = tmp_path / "multi"
    config = TrainConfig(
        task="sentiment", extra_tasks=["topic"], output_dir=model_dir, limit_train=96, limit_dev=48,
        max_steps=4, batch_size=16, max_length=32, threads=2, progress=False,
    )  # fmt: skip
    result = fit(config)
    assert set(result.summary["dev_by_task"]) == {"sentiment", "topic"}
    assert (model_dir / "confusion_matrix_topic.png").is_file()
    entry = export_model(model_dir, tmp_path / "repo", "finance", torch_threads=1)
    assert entry["outputs"] == ["logits", "logits_topic"]
    pbtxt = parse((tmp_path / "repo" / "finance" / "config.pbtxt").read_text())
    assert [(o.name, list(o.dims)) for o in pbtxt.output] == [("logits", [3]), ("logits_topic", [20])]
    version_dir = tmp_path / "repo" / "finance" / "1"
    # one drift reference per head, from each head's own dev split (48 examples each)
    reference = load_reference(version_dir)
    assert reference is not None
    assert set(reference) == {"sentiment", "topic"}
    assert reference["sentiment"].labels == ("Bearish", "Bullish", "Neutral")
    assert len(reference["topic"].labels) == 20
    for head in reference.values():
        assert head.samples == 48
        assert head.confidence_counts is not None
        assert int(head.confidence_counts.sum()) == int(head.label_counts.sum()) == 48

    predictor = Predictor(version_dir)
    batch = predictor.encode(TEXTS)
    import torch

    with torch.inference_mode():
        in_memory = result.model.forward_heads(
            torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
        )
    for backend, atol in (("torch", 1e-5), ("onnx", 1e-4)):
        outputs = Predictor(version_dir, backend=backend).all_logits(batch.input_ids, batch.attention_mask)  # type: ignore[arg-type]
        np.testing.assert_allclose(outputs["logits"], in_memory[""].numpy(), atol=atol)
        np.testing.assert_allclose(outputs["logits_topic"], in_memory["topic"].numpy(), atol=atol)

    predictions = predictor.predict(TEXTS)
    assert predictions[0]["label"] in {"Bearish", "Bullish", "Neutral"}
    assert len(predictions[0]["heads"]["topic"]["scores"]) == 20

    triton = _load_triton_model(version_dir, monkeypatch)
    single = predictor.encode([TEXTS[0]])
    response = triton.execute([{"input_ids": single.input_ids, "attention_mask": single.attention_mask}])[0]
    names = [t.name for t in response.output_tensors]
    assert names == ["logits", "logits_topic"]
    expected = predictor.all_logits(single.input_ids, single.attention_mask)
    for tensor in response.output_tensors:
        np.testing.assert_allclose(tensor.as_numpy(), expected[tensor.name], atol=1e-4)
