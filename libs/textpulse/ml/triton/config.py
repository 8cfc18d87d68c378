"""Triton ``config.pbtxt`` files built as ``ModelConfig`` protobufs, never as text templates.

Every exported model (classifier/NER in :mod:`textpulse.ml.export`, the recommend
encoder in :mod:`textpulse.recsys.train`) gets its configuration variants from
:func:`write_model_configs`:

* ``config.pbtxt``: python backend, ``KIND_CPU`` (what ``tritonserver`` reads by default);
* ``configs/gpu-python.pbtxt``: python backend, ``KIND_GPU`` (``model.py`` in bf16);
* ``configs/gpu.pbtxt``: the GPU production variant. With a ``model.onnx`` in the
  version folder it is Triton's ONNX Runtime backend with the TensorRT execution
  accelerator in FP16 (CUDA runs what TensorRT cannot); without one it is the
  python-backend GPU variant, so ``--model-config-name=gpu`` gives every model its
  best GPU configuration.

The messages come from Triton's own schema (``tritonclient.grpc.model_config_pb2``)
and are written with ``google.protobuf.text_format``, so a misspelt field fails at
export time instead of at ``tritonserver`` start. :func:`check_config` compares a
configuration with what the model really has (its own label counts and the ONNX
graph's inputs and outputs); the exporters run it on every variant they write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

# tritonclient ships its generated protobuf modules without type stubs.
ModelConfig: TypeAlias = Any

CPU_CONFIG = "config.pbtxt"
CONFIGS_DIR = "configs"  # where ``tritonserver --model-config-name=<name>`` looks: configs/<name>.pbtxt
GPU_VARIANT = "gpu"
GPU_PYTHON_VARIANT = "gpu-python"
LEGACY_GPU_CONFIG = "config.gpu.pbtxt"  # written by older exporters; no Triton mechanism reads it
ONNX_FILE = "model.onnx"
TOKEN_INPUTS = ("input_ids", "attention_mask")
TRT_WORKSPACE_BYTES = 2 << 30
TRT_CACHE_ROOT = "/tmp/triton-trt-cache"  # noqa: S108 - inside the server's container, where /tmp is writable


class ConfigMismatch(ValueError):
    """A Triton configuration does not describe the model it is written for."""


@dataclass(frozen=True)
class Tensor:
    """One input or output: ``dims`` without the batch dimension, ``-1`` for a variable axis."""

    name: str
    data_type: str  # a ``model_config_pb2.DataType`` name, e.g. ``TYPE_FP32``
    dims: tuple[int, ...]


def token_inputs() -> list[Tensor]:
    """``input_ids`` and ``attention_mask``: INT64 ``[batch, sequence]``."""
    return [Tensor(name, "TYPE_INT64", (-1,)) for name in TOKEN_INPUTS]


def classifier_outputs(kind: str, num_labels: int, extra_heads: Mapping[str, int] | None = None) -> list[Tensor]:
    """``logits`` (``[L]`` per sequence, ``[-1, L]`` per token) and ``logits_<head>`` per extra (sequence) head."""
    primary = (-1, num_labels) if kind == "token" else (num_labels,)
    extra = [Tensor(f"logits_{head}", "TYPE_FP32", (size,)) for head, size in (extra_heads or {}).items()]
    return [Tensor("logits", "TYPE_FP32", primary), *extra]


def model_config(
    name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    *,
    backend: str,
    gpu: bool,
    max_batch_size: int,
    instances: int = 1,
    max_queue_delay_us: int = 2000,
    preferred_batch_sizes: Sequence[int] = (),
    ragged_inputs: bool = False,
    parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """The one ``ModelConfig`` builder: name, tensors, dynamic batching, instances, latest version only."""
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=max_batch_size)
    for spec in inputs:
        config.input.add(
            name=spec.name,
            data_type=mc.DataType.Value(spec.data_type),
            dims=list(spec.dims),
            allow_ragged_batch=ragged_inputs,
        )
    for spec in outputs:
        config.output.add(name=spec.name, data_type=mc.DataType.Value(spec.data_type), dims=list(spec.dims))
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.dynamic_batching.preferred_batch_size.extend(preferred_batch_sizes)
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(count=instances, kind=kind)
    config.version_policy.latest.num_versions = 1
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def python_backend_config(
    name: str,
    outputs: Sequence[Tensor],
    *,
    gpu: bool = False,
    max_batch_size: int = 64,
    instances: int = 1,
    max_queue_delay_us: int = 2000,
    parameters: Mapping[str, str] | None = None,
) -> ModelConfig:
    """The python-backend variant (``model.py``).

    Inputs are ragged (``allow_ragged_batch``): requests padded to different
    lengths still share one dynamic batch, ``model.py`` re-pads them together.
    """
    return model_config(
        name,
        token_inputs(),
        outputs,
        backend="python",
        gpu=gpu,
        max_batch_size=max_batch_size,
        instances=instances,
        max_queue_delay_us=max_queue_delay_us,
        ragged_inputs=True,
        parameters=parameters,
    )


def preferred_batch_sizes(max_batch_size: int) -> list[int]:
    """A quarter, a half and all of ``max_batch_size`` (64 -> 16, 32, 64): large batches fill a GPU."""
    return sorted({size for size in (max_batch_size // 4, max_batch_size // 2, max_batch_size) if size >= 1})


def onnxruntime_gpu_config(
    name: str,
    onnx_path: Path,
    *,
    max_sequence_length: int,
    max_batch_size: int = 64,
    instances: int = 1,
    max_queue_delay_us: int = 2000,
    parameters: Mapping[str, str] | None = None,
    workspace_bytes: int = TRT_WORKSPACE_BYTES,
) -> ModelConfig:
    """ONNX Runtime backend over ``model.onnx`` on a GPU, TensorRT FP16 first and CUDA for the rest.

    Inputs and outputs are read from the ONNX graph. They are not ragged: the
    backend runs one padded ``[batch, sequence]`` tensor, so the client pads
    each request and the dynamic batcher merges requests of equal shape only.
    The TensorRT profile spans 1 x 2 to ``max_batch_size`` x
    ``max_sequence_length`` tokens so one engine serves every request the
    client may send (longer inputs must be truncated by the client).
    """
    inputs, outputs = onnx_tensors(onnx_path, batched=max_batch_size > 0)
    config = model_config(
        name,
        inputs,
        outputs,
        backend="onnxruntime",
        gpu=True,
        max_batch_size=max_batch_size,
        instances=instances,
        max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=preferred_batch_sizes(max_batch_size),
        parameters=parameters,
    )
    config.platform = "onnxruntime_onnx"
    config.default_model_filename = onnx_path.name

    def shapes(batch: int, sequence: int) -> str:
        return ",".join(f"{spec.name}:{batch}x{sequence}" for spec in inputs)

    tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    tensorrt.parameters.update(
        {
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(workspace_bytes),
            # FP16 LayerNorm overflows on long inputs; TensorRT keeps those layers in FP32.
            "trt_layer_norm_fp32_fallback": "1",
            # Building the engine takes minutes; the cache keeps it across restarts of the server.
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"{TRT_CACHE_ROOT}/{name}",
            "trt_profile_min_shapes": shapes(1, 2),
            "trt_profile_opt_shapes": shapes(max(1, max_batch_size), min(128, max_sequence_length)),
            "trt_profile_max_shapes": shapes(max(1, max_batch_size), max_sequence_length),
        }
    )
    return config


def render(config: ModelConfig) -> str:
    """``config.pbtxt`` text (protobuf text format, short lists such as ``dims: [-1, 7]``)."""
    text: str = text_format.MessageToString(config, use_short_repeated_primitives=True)
    return text


def parse(text: str) -> ModelConfig:
    """A ``ModelConfig`` from ``config.pbtxt`` text; raises ``text_format.ParseError`` on a bad file."""
    return text_format.Parse(text, mc.ModelConfig())


def parameters_of(config: ModelConfig) -> dict[str, str]:
    """The string parameters of a configuration (what ``model.py`` reads)."""
    return {key: value.string_value for key, value in config.parameters.items()}


def _tensors(messages: Any) -> dict[str, Tensor]:
    return {m.name: Tensor(m.name, mc.DataType.Name(m.data_type), tuple(m.dims)) for m in messages}


def onnx_tensors(path: Path, *, batched: bool = True) -> tuple[list[Tensor], list[Tensor]]:
    """Graph inputs and outputs of an ONNX file as Triton tensors (the batch axis dropped when ``batched``)."""
    import numpy as np
    import onnx
    from tritonclient.utils import np_to_triton_dtype

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}

    def tensor(value: Any) -> Tensor:
        tensor_type = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        return Tensor(value.name, f"TYPE_{np_to_triton_dtype(dtype)}", dims[1:] if batched else dims)

    inputs = [tensor(v) for v in graph.input if v.name not in initializers]
    return inputs, [tensor(v) for v in graph.output]


def check_config(
    config: ModelConfig,
    *,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    onnx_path: Path | None = None,
) -> list[str]:
    """Problems (empty when none) between ``config`` and the model's tensors, and its ONNX graph if given.

    ``inputs``/``outputs`` are what the model itself defines (label counts from its
    own config, token vs sequence dims); with ``onnx_path`` the names, types and
    ranks must also match the graph, and a fixed graph dimension the config's.
    """
    problems: list[str] = []
    declared = {"input": _tensors(config.input), "output": _tensors(config.output)}
    for role, expected in (("input", inputs), ("output", outputs)):
        have, want = declared[role], {t.name: t for t in expected}
        if set(have) != set(want):
            problems.append(f"{role}s {sorted(have)} differ from the model's {sorted(want)}")
        problems.extend(
            f"{role} {name!r} is {have[name]}, the model has {want[name]}"
            for name in sorted(set(have) & set(want))
            if have[name] != want[name]
        )
    if onnx_path is not None:
        batched = config.max_batch_size > 0
        graph_inputs, graph_outputs = onnx_tensors(onnx_path, batched=batched)
        for role, graph in (("input", graph_inputs), ("output", graph_outputs)):
            have, in_graph = declared[role], {t.name: t for t in graph}
            if set(have) != set(in_graph):
                problems.append(f"{role}s {sorted(have)} differ from {onnx_path.name}'s {sorted(in_graph)}")
            for name in sorted(set(have) & set(in_graph)):
                problems.extend(_graph_problems(role, have[name], in_graph[name], onnx_path.name))
    return problems


def _graph_problems(role: str, declared: Tensor, graph: Tensor, file_name: str) -> list[str]:
    if declared.data_type != graph.data_type:
        return [f"{role} {declared.name!r} is {declared.data_type} in the config, {graph.data_type} in {file_name}"]
    if len(declared.dims) != len(graph.dims):
        return [f"{role} {declared.name!r} has dims {list(declared.dims)}, {file_name} {list(graph.dims)}"]
    return [
        f"{role} {declared.name!r} axis {axis} is {mine} in the config, {theirs} in {file_name}"
        for axis, (mine, theirs) in enumerate(zip(declared.dims, graph.dims, strict=True))
        if theirs not in (-1, mine)  # -1 in the graph: a symbolic axis, any size
    ]


def verify_config(
    config: ModelConfig,
    *,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    onnx_path: Path | None = None,
) -> None:
    """:func:`check_config`, raising :class:`ConfigMismatch` with every problem."""
    problems = check_config(config, inputs=inputs, outputs=outputs, onnx_path=onnx_path)
    if problems:
        msg = f"Triton config of {config.name!r} does not match the model: " + "; ".join(problems)
        raise ConfigMismatch(msg)


def write_model_configs(
    model_root: Path,
    name: str,
    outputs: Sequence[Tensor],
    *,
    cpu_parameters: Mapping[str, str],
    gpu_parameters: Mapping[str, str],
    onnx_path: Path | None = None,
    max_sequence_length: int = 512,
    max_batch_size: int = 64,
    instances: int = 1,
    gpu_instances: int = 1,
    max_queue_delay_us: int = 2000,
) -> dict[str, Path]:
    """Write and check every variant of ``<model_root>``; return ``{variant: path}``.

    ``onnx_path`` (the new version's ``model.onnx``, or ``None``) decides what
    ``configs/gpu.pbtxt`` is: the ONNX Runtime + TensorRT FP16 configuration, or
    a copy of the python-backend GPU one. ``instances`` is the CPU config's instance
    count, ``gpu_instances`` the GPU variants' (per GPU).
    """
    batching = {"max_batch_size": max_batch_size, "max_queue_delay_us": max_queue_delay_us}
    inputs = token_inputs()

    def python(gpu: bool, parameters: Mapping[str, str]) -> ModelConfig:
        count = gpu_instances if gpu else instances
        return python_backend_config(name, outputs, gpu=gpu, parameters=parameters, instances=count, **batching)

    python_gpu = python(True, gpu_parameters)
    variants: dict[str, tuple[ModelConfig, Path | None]] = {
        "cpu": (python(False, cpu_parameters), None),
        GPU_PYTHON_VARIANT: (python_gpu, None),
        GPU_VARIANT: (python_gpu, None),
    }
    if onnx_path is not None:
        ort_parameters = {
            key: gpu_parameters[key] for key in ("max_sequence_length", "task_kind") if key in gpu_parameters
        }
        ort = onnxruntime_gpu_config(
            name,
            onnx_path,
            max_sequence_length=max_sequence_length,
            parameters=ort_parameters,
            instances=gpu_instances,
            **batching,
        )
        variants[GPU_VARIANT] = (ort, onnx_path)
    paths = {
        "cpu": model_root / CPU_CONFIG,
        GPU_PYTHON_VARIANT: model_root / CONFIGS_DIR / f"{GPU_PYTHON_VARIANT}.pbtxt",
        GPU_VARIANT: model_root / CONFIGS_DIR / f"{GPU_VARIANT}.pbtxt",
    }
    for config, graph in variants.values():
        verify_config(config, inputs=inputs, outputs=outputs, onnx_path=graph)
    (model_root / CONFIGS_DIR).mkdir(parents=True, exist_ok=True)
    for variant, (config, _) in variants.items():
        paths[variant].write_text(render(config), "utf-8")
    # An older export's copy would otherwise contradict configs/gpu.pbtxt.
    (model_root / LEGACY_GPU_CONFIG).unlink(missing_ok=True)
    return paths
