"""Triton python-backend model: a textpulse classifier run with torch.

Copied verbatim into every exported version folder, so it depends only on
torch, transformers and safetensors (not on the textpulse package) and the
Triton stub can run it from the project's virtualenv.

Inputs (per request, INT64): ``input_ids`` and ``attention_mask``, shape
``[batch, seq]``, right-padded. Requests in one dynamic batch may have
different ``seq`` (``allow_ragged_batch``): they are padded to the longest
and run as one forward pass, then split back. Tensors cross the stub via
DLPack only, so the model is immune to the stub's numpy ABI. Output
``logits`` FP32: ``[batch, labels]`` (sequence) or ``[batch, seq, labels]``
(token; ``seq`` of that request); a multi-head model adds ``logits_<head>``
per extra head.

Parameter ``precision``: ``fp32`` (default), ``bf16`` / ``fp16`` (GPU instances:
the weights are cast, logits still return as FP32), ``int8`` (CPU instances:
dynamic int8 ``Linear`` layers; a few per cent of labels differ from FP32).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend
from safetensors.torch import load_file
from torch.utils.dlpack import from_dlpack, to_dlpack  # type: ignore[attr-defined]
from transformers import AutoConfig, AutoModel


class _Classifier(torch.nn.Module):
    """Same layout as ``textpulse.ml.modeling.TextPulseModel`` (``encoder.*``, ``head.*``)."""

    encoder: Any

    def __init__(
        self, encoder: torch.nn.Module, kind: str, pooling: str, num_labels: int, extra: dict[str, int]
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.kind = kind
        self.pooling = pooling
        hidden = int(self.encoder.config.hidden_size)
        self.head = torch.nn.Linear(hidden, num_labels)
        self.extra_heads = torch.nn.ModuleDict({name: torch.nn.Linear(hidden, n) for name, n in extra.items()})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """Logits of the primary head, then of each extra head (config.pbtxt output order)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.kind == "token":
            features = hidden
        elif self.pooling == "first":
            features = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            features = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return [self.head(features).float(), *(head(features).float() for head in self.extra_heads.values())]


def _parameters(model_config: dict[str, Any]) -> dict[str, str]:
    return {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}


def _with_precision(model: torch.nn.Module, precision: str, gpu: bool) -> torch.nn.Module:
    """Cast (GPU: bf16/fp16) or quantise (CPU: int8) the loaded FP32 model; errors name the bad pairing."""
    precision = precision.lower()
    if precision == "fp32":
        return model
    if precision in {"bf16", "fp16"}:
        if not gpu:
            msg = f"precision {precision!r} needs a KIND_GPU instance with CUDA (use fp32 or int8 on the CPU)"
            raise ValueError(msg)
        return model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if precision == "int8":
        if gpu:
            msg = "precision 'int8' (dynamic quantisation) runs on KIND_CPU instances only (use bf16 on a GPU)"
            raise ValueError(msg)
        # Same call as textpulse.ml.modeling.quantize_int8: this file runs in Triton's stub, which
        # may not have textpulse installed (the official container), so it imports torch only.
        # torch ships quantize_dynamic without annotations.
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            model, {torch.nn.Linear}, dtype=torch.qint8
        )
        return quantized
    msg = f"unknown precision {precision!r}: fp32, bf16, fp16 or int8"
    raise ValueError(msg)


class TritonPythonModel:
    """Entry point Triton's python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        """Load weights from this version folder onto the instance's device."""
        model_config = json.loads(args["model_config"])
        params = _parameters(model_config)
        threads = int(params.get("torch_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        use_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if use_gpu else "cpu"
        config = AutoConfig.from_pretrained(version_dir)
        meta = dict(getattr(config, "textpulse", None) or {})
        try:
            encoder = AutoModel.from_config(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
        except TypeError:
            encoder = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
        extra = {name: len(labels) for name, labels in (meta.get("extra_heads") or {}).items()}
        self.output_names = ["logits", *(f"logits_{name}" for name in extra)]
        model = _Classifier(
            encoder, meta.get("kind", "sequence"), meta.get("pooling", "mean"), len(config.id2label), extra
        )
        state = load_file(str(version_dir / "model.safetensors"))
        model.load_state_dict(state)
        self.model = _with_precision(model.to(self.device).eval(), params.get("precision") or "fp32", use_gpu)
        self.kind = meta.get("kind", "sequence")
        self.pad_id = int(getattr(config, "pad_token_id", 0) or 0)
        self.max_length = int(params.get("max_sequence_length") or 512)

    def _pad(self, tensors: list[torch.Tensor], value: int) -> torch.Tensor:
        length = max(t.shape[1] for t in tensors)
        out = torch.full((sum(t.shape[0] for t in tensors), length), value, dtype=torch.int64)
        row = 0
        for tensor in tensors:
            out[row : row + tensor.shape[0], : tensor.shape[1]] = tensor
            row += tensor.shape[0]
        return out

    def _input(self, request: Any, name: str) -> torch.Tensor:
        """Read an input through DLPack: correct whatever numpy the stub was built against."""
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        value = from_dlpack(tensor.to_dlpack()).to(torch.int64)
        value = value if value.ndim == 2 else value.reshape(1, -1)  # noqa: PLR2004
        return value[:, : self.max_length]

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run every request of the dynamic batch in one padded forward pass."""
        ids = [self._input(r, "input_ids") for r in requests]
        masks = [self._input(r, "attention_mask") for r in requests]
        with torch.inference_mode():
            # .float(): bf16/fp16 instances still answer the config's TYPE_FP32
            outputs = [
                o.float().cpu()
                for o in self.model(self._pad(ids, self.pad_id).to(self.device), self._pad(masks, 0).to(self.device))
            ]
        responses, row = [], 0
        for input_ids in ids:
            batch, length = input_ids.shape
            tensors = []
            for name, logits in zip(self.output_names, outputs, strict=True):
                out = logits[row : row + batch]
                if self.kind == "token":
                    out = out[:, :length]
                tensors.append(pb_utils.Tensor.from_dlpack(name, to_dlpack(out.contiguous())))
            row += batch
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        """Release the model."""
        del self.model
