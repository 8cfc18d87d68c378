"""Triton python-backend model: a textpulse item/user embedding encoder run with torch.

Copied verbatim into every exported version folder; depends only on torch and
transformers. Inputs ``input_ids`` / ``attention_mask`` (INT64 ``[batch, seq]``,
requests of different ``seq`` re-padded together), output ``embedding`` (FP32
``[batch, dim]``): mean over the attention mask, L2-normalised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend
from torch.utils.dlpack import from_dlpack, to_dlpack  # type: ignore[attr-defined]
from transformers import AutoModel


class TritonPythonModel:
    """Entry point Triton's python backend instantiates once per model instance."""

    def initialize(self, args: dict[str, str]) -> None:
        model_config = json.loads(args["model_config"])
        params = {k: str(v.get("string_value", "")) for k, v in (model_config.get("parameters") or {}).items()}
        threads = int(params.get("torch_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        use_gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if use_gpu else "cpu"
        self.model = AutoModel.from_pretrained(str(version_dir)).to(self.device).eval()
        self.pad_id = int(getattr(self.model.config, "pad_token_id", 0) or 0)
        self.max_length = int(params.get("max_sequence_length") or 512)

    def _input(self, request: Any, name: str) -> torch.Tensor:
        value = from_dlpack(pb_utils.get_input_tensor_by_name(request, name).to_dlpack()).to(torch.int64)
        value = value if value.ndim == 2 else value.reshape(1, -1)  # noqa: PLR2004
        return value[:, : self.max_length]

    def _pad(self, tensors: list[torch.Tensor], value: int) -> torch.Tensor:
        length = max(t.shape[1] for t in tensors)
        out = torch.full((sum(t.shape[0] for t in tensors), length), value, dtype=torch.int64)
        row = 0
        for tensor in tensors:
            out[row : row + tensor.shape[0], : tensor.shape[1]] = tensor
            row += tensor.shape[0]
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        ids = [self._input(r, "input_ids") for r in requests]
        masks = [self._input(r, "attention_mask") for r in requests]
        mask = self._pad(masks, 0).to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=self._pad(ids, self.pad_id).to(self.device), attention_mask=mask)
            m = mask.unsqueeze(-1).to(hidden.last_hidden_state.dtype)
            pooled = (hidden.last_hidden_state * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            vectors = torch.nn.functional.normalize(pooled, dim=-1).float().cpu()
        responses, row = [], 0
        for input_ids in ids:
            out = vectors[row : row + input_ids.shape[0]].contiguous()
            row += input_ids.shape[0]
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor.from_dlpack("embedding", to_dlpack(out))])
            )
        return responses

    def finalize(self) -> None:
        del self.model
