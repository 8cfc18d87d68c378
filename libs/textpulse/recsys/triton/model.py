"""Triton python-backend model: a textpulse item/user embedding encoder run with ONNX Runtime (CPU) or torch.

Copied verbatim into every exported version folder, so it depends only on numpy and onnxruntime
(and, ``runtime`` torch only, torch and transformers), not on the textpulse package.
Inputs ``input_ids`` / ``attention_mask`` (INT64 ``[batch, seq]``, requests of different ``seq``
re-padded together), output ``embedding`` (FP32 ``[batch, dim]``): mean over the attention mask,
L2-normalised.

Parameter ``runtime``: ``onnx`` (ONNX Runtime, CPU provider, over the version's ``model.onnx``,
which holds pooling and normalisation: default for KIND_CPU instances when the graph is there;
no torch import, so the stub holds ~0.3 GB instead of ~1 GB) or ``torch`` (default for KIND_GPU
instances and for versions exported without ONNX). Parameter ``torch_threads``: intra-op threads
of either runtime (the name predates ONNX), 0 = the runtime's default. ``max_sequence_length``:
longer inputs are cut (the client truncates already; this guards the graph's position table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend

ONNX_FILE, OUTPUT = "model.onnx", "embedding"


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

    Same reason as the text models' ``model.py``: the stub renames consumed capsules to
    ``used_dlpack``, and numpy's own capsule destructor then raises on every collection, which
    wedged the stub (tritonserver 2.51); ONNX Runtime's destructor tolerates the rename.
    """
    import onnxruntime as ort

    value = ort.OrtValue.ortvalue_from_shape_and_type(list(array.shape), array.dtype)
    value.update_inplace(np.ascontiguousarray(array))
    return value.__dlpack__()


def _runtime(params: dict[str, str], gpu: bool, version_dir: Path) -> str:
    """Explicit ``runtime`` parameter, else onnx on CPU instances that have the graph, else torch."""
    runtime = (params.get("runtime") or "").lower()
    if not runtime:
        runtime = "onnx" if (version_dir / ONNX_FILE).is_file() and not gpu else "torch"
    if runtime not in {"onnx", "torch"}:
        msg = f"unknown runtime {runtime!r}: onnx or torch"
        raise ValueError(msg)
    if runtime == "onnx" and gpu:
        msg = "runtime 'onnx' serves KIND_CPU instances (CPU provider); use runtime 'torch' on a GPU"
        raise ValueError(msg)
    if runtime == "onnx" and not (version_dir / ONNX_FILE).is_file():
        msg = f"{version_dir / ONNX_FILE} is missing: add it (python -m textpulse.recsys.export) or set runtime 'torch'"
        raise FileNotFoundError(msg)
    return runtime


class _OnnxEmbedder:
    """ONNX Runtime over ``model.onnx`` (pooling and normalisation are in the graph): numpy in, numpy out."""

    def __init__(self, version_dir: Path, threads: int) -> None:
        import onnxruntime as ort

        # Same choices as textpulse.ml.onnx_runtime.session_options (this file cannot import textpulse):
        # no spinning, so idle pool threads do not burn the cores other instances need.
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        path = version_dir / ONNX_FILE
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        outputs = [o.name for o in self.session.get_outputs()]
        if OUTPUT not in outputs:
            msg = f"{path} has no {OUTPUT!r} output (has {outputs})"
            raise ValueError(msg)

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        (vectors,) = self.session.run([OUTPUT], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(vectors, dtype=np.float32)


class _TorchEmbedder:
    """The weights in torch with mean pooling and L2 normalisation; torch is imported only here."""

    def __init__(self, version_dir: Path, threads: int, device: str) -> None:
        import torch
        from transformers import AutoModel

        if threads > 0:
            torch.set_num_threads(threads)
        self.device = device
        self.model = AutoModel.from_pretrained(str(version_dir)).to(device).eval()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            mask = torch.from_numpy(attention_mask).to(self.device)
            hidden = self.model(input_ids=torch.from_numpy(input_ids).to(self.device), attention_mask=mask)
            m = mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            pooled = (hidden.last_hidden_state * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()


class TritonPythonModel:
    """Entry point Triton's python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        params = {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}
        threads = int(params.get("torch_threads") or 0)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        gpu = args.get("model_instance_kind") == "GPU"
        self.runtime = _runtime(params, gpu, version_dir)
        config = json.loads((version_dir / "config.json").read_text("utf-8"))
        self.pad_id = int(config.get("pad_token_id") or 0)
        self.max_length = int(params.get("max_sequence_length") or 512)
        if self.runtime == "onnx":
            self.embed: Any = _OnnxEmbedder(version_dir, threads)
        else:
            import torch

            device = f"cuda:{args.get('model_instance_device_id', '0')}" if gpu and torch.cuda.is_available() else "cpu"
            self.embed = _TorchEmbedder(version_dir, threads, device)
        pb_utils.Logger.log_info(f"recommend embedding model: runtime {self.runtime}, {version_dir}")

    def _input(self, request: Any, name: str) -> np.ndarray:
        capsule = pb_utils.get_input_tensor_by_name(request, name).to_dlpack()
        value = np.from_dlpack(_Capsule(capsule)).astype(np.int64, copy=False)
        value = value if value.ndim == 2 else value.reshape(1, -1)  # noqa: PLR2004
        return value[:, : self.max_length]

    @staticmethod
    def _pad(arrays: list[np.ndarray], value: int) -> np.ndarray:
        length = max(a.shape[1] for a in arrays)
        out = np.full((sum(a.shape[0] for a in arrays), length), value, dtype=np.int64)
        row = 0
        for array in arrays:
            out[row : row + array.shape[0], : array.shape[1]] = array
            row += array.shape[0]
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        ids = [self._input(r, "input_ids") for r in requests]
        masks = [self._input(r, "attention_mask") for r in requests]
        vectors = self.embed(self._pad(ids, self.pad_id), self._pad(masks, 0))
        responses, row = [], 0
        for input_ids in ids:
            out = vectors[row : row + input_ids.shape[0]]
            row += input_ids.shape[0]
            tensor = pb_utils.Tensor.from_dlpack(OUTPUT, _to_dlpack(out))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        del self.embed
