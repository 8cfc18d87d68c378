"""Every Triton configuration an export writes parses as Triton's ``ModelConfig`` and describes the model.

Tiny seeded BERTs (2 layers, hidden size 32) with the bundled encoder's real
tokenizer are saved as trained folders and exported for real (weights,
``model.onnx`` through the dynamo exporter, configs): a sequence classifier, a
token tagger and a two-head classifier, plus the recommend embedding encoder.
Each written variant is parsed with ``text_format.Parse`` and compared with
the model's own config (labels per head, sequence vs token dims) and, for the
ONNX Runtime variant, with the graph read by ``onnx.load``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from textpulse.ml.triton import config as triton_config
from tritonclient.grpc import model_config_pb2 as mc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HIDDEN = 32
MAX_LENGTH = 32
# name -> (kind, labels, extra heads)
MODELS: dict[str, tuple[str, list[str], dict[str, list[str]]]] = {
    "sentiment": ("sequence", ["Bearish", "Bullish", "Neutral"], {}),
    "ner": ("token", ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"], {}),
    "finance": ("sequence", ["Bearish", "Bullish", "Neutral"], {"topic": [f"t{i}" for i in range(5)]}),
}
VARIANTS = ("config.pbtxt", "configs/gpu-python.pbtxt", "configs/gpu.pbtxt")
ONNX_TO_TRITON = {1: "TYPE_FP32", 7: "TYPE_INT64"}  # onnx.TensorProto.FLOAT, INT64


def _tiny_bert(tokenizer: Any) -> Any:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(11)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = BertModel(config, add_pooling_layer=False)
    model.eval()  # type: ignore[no-untyped-call]
    return model


@pytest.fixture(scope="module")
def tokenizer(base_model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_path)


@pytest.fixture(scope="module")
def repo(tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with the three classifiers exported with ONNX (one version each)."""
    from textpulse.ml.export import export_model
    from textpulse.ml.modeling import TextPulseModel, save_model, set_label_maps

    repo = tmp_path_factory.mktemp("model-repo")
    for name, (kind, labels, extra) in MODELS.items():
        encoder = _tiny_bert(tokenizer)
        set_label_maps(encoder.config, labels)
        sizes = {head: len(names) for head, names in extra.items()}
        model = TextPulseModel(encoder, kind, len(labels), extra_heads=sizes)  # type: ignore[arg-type]
        trained = tmp_path_factory.mktemp(f"trained-{name}")
        save_model(model.eval(), tokenizer, trained, {"task": name, "max_length": MAX_LENGTH, "extra_heads": extra})
        export_model(trained, repo, name, onnx=True, torch_threads=1, max_batch_size=64)
    return repo


def _parse(path: Path) -> Any:
    return text_format.Parse(path.read_text("utf-8"), mc.ModelConfig())


def _io(messages: Any) -> dict[str, tuple[str, list[int]]]:
    return {m.name: (mc.DataType.Name(m.data_type), list(m.dims)) for m in messages}


def _expected_outputs(version_dir: Path) -> dict[str, tuple[str, list[int]]]:
    """Outputs as the model's own files define them: labels per head, token vs sequence dims."""
    config = json.loads((version_dir / "config.json").read_text("utf-8"))
    meta = config["textpulse"]
    labels = json.loads((version_dir / "id2label.json").read_text("utf-8"))
    primary = [-1, len(labels)] if meta["kind"] == "token" else [len(labels)]
    expected = {"logits": ("TYPE_FP32", primary)}
    expected.update({f"logits_{h}": ("TYPE_FP32", [len(n)]) for h, n in (meta.get("extra_heads") or {}).items()})
    return expected


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_parses_and_matches_the_model(repo: Path, name: str, variant: str) -> None:
    config = _parse(repo / name / variant)
    version_dir = repo / name / "1"
    assert config.name == name
    assert config.max_batch_size == 64
    assert config.version_policy.latest.num_versions == 1
    assert _io(config.input) == {n: ("TYPE_INT64", [-1]) for n in ("input_ids", "attention_mask")}
    assert _io(config.output) == _expected_outputs(version_dir)
    assert config.output[0].name == "logits"  # model.py answers the primary head first
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert len(config.instance_group) == 1
    gpu = variant != "config.pbtxt"
    assert config.instance_group[0].kind == (mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU)
    assert not (repo / name / "config.gpu.pbtxt").exists()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_python_variants_keep_ragged_batching_and_parameters(repo: Path, name: str) -> None:
    kind = MODELS[name][0]
    for variant, precision in (("config.pbtxt", "auto"), ("configs/gpu-python.pbtxt", "bf16")):
        config = _parse(repo / name / variant)
        assert config.backend == "python"
        assert config.platform == ""
        assert all(i.allow_ragged_batch for i in config.input)
        expected = {"torch_threads": "1", "precision": precision, "max_sequence_length": str(MAX_LENGTH)}
        assert triton_config.parameters_of(config).items() >= {**expected, "task_kind": kind}.items()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnxruntime_variant_matches_the_onnx_graph(repo: Path, name: str) -> None:
    import onnx

    config = _parse(repo / name / "configs" / "gpu.pbtxt")
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert config.default_model_filename == "model.onnx"
    assert not any(i.allow_ragged_batch for i in config.input)  # the client pads; ORT runs one dense tensor
    assert list(config.dynamic_batching.preferred_batch_size) == [16, 32, 64]
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    trt = dict(accelerators[0].parameters)
    assert trt["precision_mode"] == "FP16"
    assert int(trt["max_workspace_size_bytes"]) > 0
    assert trt["trt_profile_max_shapes"] == f"input_ids:64x{MAX_LENGTH},attention_mask:64x{MAX_LENGTH}"
    assert triton_config.parameters_of(config)["max_sequence_length"] == str(MAX_LENGTH)

    graph = onnx.load(str(repo / name / "1" / "model.onnx")).graph
    for declared, values in ((config.input, graph.input), (config.output, graph.output)):
        in_graph = {v.name: v.type.tensor_type for v in values}
        assert [d.name for d in declared] == list(in_graph)
        for tensor in declared:
            graph_type = in_graph[tensor.name]
            assert mc.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[graph_type.elem_type]
            graph_dims = graph_type.shape.dim
            assert len(tensor.dims) + 1 == len(graph_dims)  # + the batch axis
            for dim, graph_dim in zip(tensor.dims, graph_dims[1:], strict=True):
                assert dim == (graph_dim.dim_value if graph_dim.HasField("dim_value") else -1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_services_start_up_check_accepts_every_variant(repo: Path, name: str) -> None:
    """What ``TritonBackend.start`` checks in the server's JSON form of the config, for each variant."""
    from google.protobuf import json_format
    from textpulse.inference.codec import Codec
    from textpulse.inference.triton import check_model_config

    codec = Codec(repo / name / "1", name)
    for variant in VARIANTS:
        as_json = json_format.MessageToDict(_parse(repo / name / variant), preserving_proto_field_name=True)
        assert check_model_config(name, as_json, codec) == 64


def test_check_config_finds_a_wrong_output_name(repo: Path) -> None:
    model_root = repo / "finance"
    onnx_path = model_root / "1" / "model.onnx"
    inputs = triton_config.token_inputs()
    outputs = triton_config.classifier_outputs("sequence", 3, {"topic": 5})
    good = _parse(model_root / "configs" / "gpu.pbtxt")
    assert triton_config.check_config(good, inputs=inputs, outputs=outputs, onnx_path=onnx_path) == []

    renamed = _parse(model_root / "configs" / "gpu.pbtxt")
    renamed.output[1].name = "logits_topics"
    problems = triton_config.check_config(renamed, inputs=inputs, outputs=outputs, onnx_path=onnx_path)
    assert any("logits_topics" in p and "model's" in p for p in problems)
    assert any("logits_topics" in p and "model.onnx" in p for p in problems)
    with pytest.raises(triton_config.ConfigMismatch, match="logits_topics"):
        triton_config.verify_config(renamed, inputs=inputs, outputs=outputs, onnx_path=onnx_path)

    # a label count the model does not have, and a dtype the graph does not have
    wrong = _parse(model_root / "configs" / "gpu.pbtxt")
    wrong.output[0].dims[:] = [4]
    wrong.input[0].data_type = mc.TYPE_INT32
    problems = triton_config.check_config(wrong, inputs=inputs, outputs=outputs, onnx_path=onnx_path)
    assert any("'logits' axis 0 is 4 in the config, 3 in model.onnx" in p for p in problems)
    assert any("'input_ids' is TYPE_INT32 in the config, TYPE_INT64 in model.onnx" in p for p in problems)

    # a token model's [-1, L] against a sequence model's [L]: a rank the graph does not have
    token = _parse(model_root / "config.pbtxt")
    token.output[0].dims[:] = [-1, 3]
    problems = triton_config.check_config(token, inputs=inputs, outputs=outputs, onnx_path=onnx_path)
    assert any("'logits' has dims [-1, 3], model.onnx [3]" in p for p in problems)


def test_without_onnx_gpu_is_the_python_variant(tokenizer: Any, tmp_path: Path) -> None:
    from textpulse.ml.export import export_model
    from textpulse.ml.modeling import TextPulseModel, save_model, set_label_maps

    encoder = _tiny_bert(tokenizer)
    set_label_maps(encoder.config, ["a", "b"])
    save_model(TextPulseModel(encoder, "sequence", 2).eval(), tokenizer, tmp_path / "trained", {"max_length": 16})
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.gpu.pbtxt").write_text('name: "m"\n')  # an older export's copy
    export_model(tmp_path / "trained", tmp_path / "repo", "m", onnx=False)
    root = tmp_path / "repo" / "m"
    assert (root / "configs" / "gpu.pbtxt").read_text() == (root / "configs" / "gpu-python.pbtxt").read_text()
    assert _parse(root / "configs" / "gpu.pbtxt").backend == "python"
    assert not (root / "config.gpu.pbtxt").exists()


def test_recommend_export_writes_checked_configs(tokenizer: Any, tmp_path: Path) -> None:
    """Triton serves the recommend encoder with the python backend: ONNX Runtime over model.onnx on CPU
    instances (parameter runtime onnx), torch on GPU instances; CPU and GPU python-backend variants only."""
    from textpulse.recsys.train import MODEL_NAME, export_embedding

    encoder = _tiny_bert(tokenizer)
    encoder.config.textpulse = {"max_length": MAX_LENGTH, "base_model": "tiny-random-bert"}
    encoder.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    export_embedding(tmp_path / "trained", tmp_path / "repo")
    root = tmp_path / "repo" / MODEL_NAME
    for variant in VARIANTS:
        config = _parse(root / variant)
        assert config.backend == "python"
        assert _io(config.output) == {"embedding": ("TYPE_FP32", [HIDDEN])}
        assert all(i.allow_ragged_batch for i in config.input)
        assert triton_config.parameters_of(config) == {
            "runtime": "onnx" if variant == "config.pbtxt" else "torch",
            "torch_threads": "2",
            "max_sequence_length": str(MAX_LENGTH),
            "task_kind": "embedding",
        }
    assert _parse(root / "configs" / "gpu.pbtxt") == _parse(root / "configs" / "gpu-python.pbtxt")
