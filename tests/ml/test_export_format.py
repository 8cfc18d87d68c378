"""Triton configuration rendering and version numbering (no model needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textpulse.ml.export import CPU_INSTANCES, CPU_THREADS, latest_version_dir, next_version, render_config_pbtxt
from textpulse.ml.triton.config import parameters_of, parse

if TYPE_CHECKING:
    from pathlib import Path


def test_config_pbtxt_sequence_cpu() -> None:
    text = render_config_pbtxt("sentiment", "sequence", 3, max_batch_size=32, torch_threads=2)
    assert 'backend: "python"' in text
    assert "max_batch_size: 32" in text
    assert "dynamic_batching" in text
    assert text.count("allow_ragged_batch: true") == 2
    assert "dims: [3]" in text
    assert "kind: KIND_CPU" in text
    assert 'string_value: "2"' in text
    config = parse(text)  # Triton's own schema (model_config_pb2.ModelConfig)
    assert [list(o.dims) for o in config.output] == [[3]]
    assert parameters_of(config) == {
        "torch_threads": "2",
        "precision": "auto",  # model.py serves the version's measured default (serving.json), else fp32
        "max_sequence_length": "512",
        "task_kind": "sequence",
    }


def test_config_pbtxt_default_cpu_layout_is_single_thread_instances() -> None:
    """Like the in-process streams: CPU_INSTANCES instances of CPU_THREADS thread(s) each, not one wide instance."""
    config = parse(render_config_pbtxt("finance", "sequence", 3))
    assert [(g.count, g.kind) for g in config.instance_group] == [(CPU_INSTANCES, config.instance_group[0].KIND_CPU)]
    assert (CPU_INSTANCES, CPU_THREADS) == (2, 1)
    assert parameters_of(config)["torch_threads"] == str(CPU_THREADS)


def test_config_pbtxt_token_gpu() -> None:
    text = render_config_pbtxt("ner", "token", 7, gpu=True)
    assert "dims: [-1, 7]" in text
    assert "kind: KIND_GPU" in text
    assert parameters_of(parse(text))["precision"] == "bf16"


def test_config_pbtxt_extra_parameters_and_heads() -> None:
    text = render_config_pbtxt(
        "finance", "sequence", 3, extra_heads={"topic": 20}, parameters={"runtime": "onnx", "torch_threads": "1"}
    )
    config = parse(text)
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [3]), ("logits_topic", [20])]
    assert parameters_of(config)["runtime"] == "onnx"
    assert parameters_of(config)["torch_threads"] == "1"  # a given key overrides the default


def test_versions(tmp_path: Path) -> None:
    assert next_version(tmp_path / "missing") == 1
    (tmp_path / "1").mkdir()
    (tmp_path / "3").mkdir()
    (tmp_path / ".4.partial").mkdir()
    (tmp_path / "configs").mkdir()
    assert next_version(tmp_path) == 4
    assert latest_version_dir(tmp_path).name == "3"
