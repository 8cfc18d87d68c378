"""Triton python-backend model: a textpulse classifier run with ONNX Runtime (CPU) or torch.

Copied verbatim into every exported version folder, so it depends only on
numpy, onnxruntime and (torch runtime only) torch, transformers and safetensors,
not on the textpulse package, and the Triton stub can run it from the project's
virtualenv.

Inputs (per request, INT64): ``input_ids`` and ``attention_mask``, shape
``[batch, seq]``, right-padded. Requests in one dynamic batch may have
different ``seq`` (``allow_ragged_batch``): they are padded to the longest
and run as one forward pass, then split back. Tensors cross the stub via
DLPack only, so the model is immune to the stub's numpy ABI. Output
``logits`` FP32: ``[batch, labels]`` (sequence) or ``[batch, seq, labels]``
(token; ``seq`` of that request); a multi-head model adds ``logits_<head>``
per extra head.

Parameter ``runtime``: ``onnx`` (ONNX Runtime, CPU provider; default for KIND_CPU
instances when the version folder has an ONNX graph: no torch import, ~1 GB less
per instance) or ``torch`` (default for KIND_GPU instances and for versions exported
without ONNX).

Parameter ``precision``: ``auto`` (default: the version's measured default in
``serving.json`` — the fastest precision within 1 dev point, recorded by ``make
bench-int8`` — else fp32; the in-process backend follows the same rule), ``fp32``
(onnx: ``model.opt.onnx``, the fused graph), ``int8`` (CPU instances; onnx: ``model.int8.onnx``, torch: dynamic int8
``Linear`` layers; a few per cent of labels may differ from FP32), ``bf16`` /
``fp16`` (GPU instances, torch: the weights are cast, logits still return as FP32).

Parameter ``torch_threads``: intra-op threads of either runtime (the name predates ONNX).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

OPT_FILE, PLAIN_FILE, INT8_FILE = "model.opt.onnx", "model.onnx", "model.int8.onnx"


class _Capsule:
    """Hands a stub DLPack capsule to ``np.from_dlpack`` (which wants ``__dlpack__``)."""

    def __init__(self, capsule: Any) -> None:
        self.capsule = capsule

    def __dlpack__(self, **_: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU: the python backend hands CPU inputs (FORCE_CPU_ONLY_INPUT_TENSORS)


def _to_dlpack(array: np.ndarray) -> Any:
    """A DLPack capsule over an ONNX Runtime-owned copy of ``array``.

    Not numpy's own ``__dlpack__``: the stub renames consumed capsules to ``used_dlpack``
    (the spec says ``used_dltensor``), and numpy's capsule destructor then raises on every
    collection, which wedged the stub (seen on tritonserver 2.51). ONNX Runtime's destructor
    tolerates the rename, and the OrtValue's buffer lives as long as the capsule needs it.
    """
    import onnxruntime as ort

    value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), array.dtype)
    value.update_inplace(np.ascontiguousarray(array))
    return value.__dlpack__()


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}


def _gpu_precision_error(precision: str) -> ValueError:
    return ValueError(f"precision {precision!r} needs a KIND_GPU instance with CUDA (use fp32 or int8 on the CPU)")


def _runtime(params: dict[str, str], gpu: bool, version_dir: Path) -> str:
    """Explicit ``runtime`` parameter, else onnx on CPU instances that have a graph, else torch."""
    runtime = (params.get("runtime") or "").lower()
    if not runtime:
        has_graph = any((version_dir / name).is_file() for name in (OPT_FILE, PLAIN_FILE))
        runtime = "onnx" if has_graph and not gpu else "torch"
    if runtime not in {"onnx", "torch"}:
        msg = f"unknown runtime {runtime!r}: onnx or torch"
        raise ValueError(msg)
    if runtime == "onnx" and gpu:
        msg = "runtime 'onnx' serves KIND_CPU instances (CPU provider); use runtime 'torch' on a GPU"
        raise ValueError(msg)
    return runtime


def _measured_precision(version_dir: Path) -> str:
    """The ONNX precision recorded in ``serving.json`` (same file and rule as textpulse.ml.onnx_runtime), else fp32."""
    path = version_dir / "serving.json"
    if path.is_file():
        value = json.loads(path.read_text("utf-8")).get("defaults", {}).get("onnx")
        if value in {"fp32", "int8"}:
            return str(value)
    return "fp32"


class _OnnxRunner:
    """ONNX Runtime over the version folder's graph for ``precision`` (numpy in, numpy out)."""

    def __init__(self, version_dir: Path, precision: str, threads: int, output_names: list[str]) -> None:
        import onnxruntime as ort

        if precision in {"bf16", "fp16"}:
            raise _gpu_precision_error(precision)
        if precision == "fp32":
            path = version_dir / OPT_FILE if (version_dir / OPT_FILE).is_file() else version_dir / PLAIN_FILE
        elif precision == "int8":
            path = version_dir / INT8_FILE
        else:
            msg = f"unknown precision {precision!r}: fp32, bf16, fp16 or int8"
            raise ValueError(msg)
        if not path.is_file():
            msg = f"{path} is missing: re-export the model, or set parameter runtime 'torch'"
            raise FileNotFoundError(msg)
        # Same choices as textpulse.ml.onnx_runtime.session_options (this file cannot import textpulse):
        # no spinning, so idle pool threads do not burn the cores other instances need.
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output_names = output_names

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, {"input_ids": input_ids, "attention_mask": attention_mask})
        return [np.asarray(o, dtype=np.float32) for o in outputs]


class _TorchRunner:
    """The safetensors weights in torch (GPU, or CPU when asked); torch is imported only here."""

    def __init__(self, version_dir: Path, precision: str, threads: int, device: str) -> None:
        import torch
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        if threads > 0:
            torch.set_num_threads(threads)
        config = AutoConfig.from_pretrained(version_dir)
        meta = dict(getattr(config, "textpulse", None) or {})
        try:
            encoder = AutoModel.from_config(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
        except TypeError:
            encoder = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
        extra = {name: len(labels) for name, labels in (meta.get("extra_heads") or {}).items()}
        model = _classifier(
            encoder, meta.get("kind", "sequence"), meta.get("pooling", "mean"), len(config.id2label), extra
        )
        model.load_state_dict(load_file(str(version_dir / "model.safetensors")))
        self.device = device
        self.model = _with_precision(model.to(device).eval(), precision, device != "cpu")

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(input_ids).to(self.device)
            mask = torch.from_numpy(attention_mask).to(self.device)
            # .float(): bf16/fp16 instances still answer the config's TYPE_FP32
            return [o.float().cpu().numpy() for o in self.model(ids, mask)]


def _classifier(encoder: Any, kind: str, pooling: str, num_labels: int, extra: dict[str, int]) -> Any:
    """Same layout as ``textpulse.ml.modeling.TextPulseModel`` (``encoder.*``, ``head.*``)."""
    import torch

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            hidden = int(encoder.config.hidden_size)
            self.head = torch.nn.Linear(hidden, num_labels)
            self.extra_heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, n) for name, n in extra.items()})

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
            """Logits of the primary head, then of each extra head (config.pbtxt output order)."""
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if kind == "token":
                features = hidden
            elif pooling == "first":
                features = hidden[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                features = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return [self.head(features).float(), *(head(features).float() for head in self.extra_heads.values())]

    return Classifier()


def _with_precision(model: Any, precision: str, gpu: bool) -> Any:
    """Cast (GPU: bf16/fp16) or quantise (CPU: int8) the loaded FP32 model; errors name the bad pairing."""
    import torch

    if precision == "fp32":
        return model
    if precision in {"bf16", "fp16"}:
        if not gpu:
            raise _gpu_precision_error(precision)
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision == "int8":
        if gpu:
            msg = "precision 'int8' (dynamic quantisation) runs on KIND_CPU instances only (use bf16 on a GPU)"
            raise ValueError(msg)
        # Same call as textpulse.ml.modeling.quantize_int8: this file runs in Triton's stub, which
        # may not have textpulse installed (the official container), so it imports torch only.
        return torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
    msg = f"unknown precision {precision!r}: fp32, bf16, fp16 or int8"
    raise ValueError(msg)


def _pad(arrays: list[np.ndarray], value: int) -> np.ndarray:
    length = max(a.shape[1] for a in arrays)
    out = np.full((sum(a.shape[0] for a in arrays), length), value, dtype=np.int64)
    row = 0
    for array in arrays:
        out[row : row + array.shape[0], : array.shape[1]] = array
        row += array.shape[0]
    return out


class TritonPythonModel:
    """Entry point Triton's python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the graph (onnx) or the weights (torch) of this version folder."""
        model_config = json.loads(args["model_config"])
        params = _parameters(model_config)
        threads = int(params.get("torch_threads") or 0)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        gpu = args.get("model_instance_kind") == "GPU"
        config = json.loads((version_dir / "config.json").read_text("utf-8"))
        meta = dict(config.get("textpulse") or {})
        self.kind = meta.get("kind", "sequence")
        self.output_names = ["logits", *(f"logits_{name}" for name in meta.get("extra_heads") or {})]
        self.pad_id = int(config.get("pad_token_id") or 0)
        self.max_length = int(params.get("max_sequence_length") or 512)
        precision = (params.get("precision") or "auto").lower()
        self.runtime = _runtime(params, gpu, version_dir)
        if precision == "auto":
            precision = _measured_precision(version_dir) if self.runtime == "onnx" else "fp32"
        if self.runtime == "onnx":
            self.model: Any = _OnnxRunner(version_dir, precision, threads, self.output_names)
            return
        import torch

        use_gpu = gpu and torch.cuda.is_available()
        device = f"cuda:{args.get('model_instance_device_id', '0')}" if use_gpu else "cpu"
        self.model = _TorchRunner(version_dir, precision, threads, device)

    def _input(self, request: Any, name: str) -> np.ndarray:
        """Read an input through DLPack: correct whatever numpy the stub was built against."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        value = np.from_dlpack(_Capsule(tensor.to_dlpack())).astype(np.int64, copy=False)
        value = value if value.ndim == 2 else value.reshape(1, -1)  # noqa: PLR2004
        return value[:, : self.max_length]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run every request of the dynamic batch in one padded forward pass."""
        ids = [self._input(r, "input_ids") for r in requests]
        masks = [self._input(r, "attention_mask") for r in requests]
        outputs = self.model(_pad(ids, self.pad_id), _pad(masks, 0))
        responses, row = [], 0
        for input_ids in ids:
            batch, length = input_ids.shape
            tensors = []
            for name, logits in zip(self.output_names, outputs, strict=True):
                out = logits[row : row + batch]
                if self.kind == "token":
                    out = out[:, :length]
                tensors.append(pb_utils.Tensor.from_dlpack(name, _to_dlpack(out)))
            row += batch
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Release the model."""
        del self.model
