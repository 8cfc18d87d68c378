"""Encoder + classification head, and the on-disk model format.

A custom head (not ``AutoModelForSequenceClassification``) because the stock
BERT head classifies the pooled first token, and with MiniLM that never
learned the minority (Bearish) class; mean pooling over real tokens did. The
model is saved as one ``model.safetensors`` (``encoder.*`` + ``head.*``) plus
the encoder's ``config.json`` carrying ``id2label`` and a ``textpulse`` block,
so any HF-compatible encoder works and loading needs no hub.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

Kind = Literal["sequence", "token"]
Pooling = Literal["mean", "first"]
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


class TextPulseModel(nn.Module):
    """Transformer encoder with one linear head returning logits.

    ``sequence``: pooled sentence vector -> ``[batch, labels]``.
    ``token``: every sub-token -> ``[batch, seq, labels]``.
    """

    encoder: Any  # an HF PreTrainedModel (or a peft wrapper of one while training)

    def __init__(
        self,
        encoder: nn.Module,
        kind: Kind,
        num_labels: int,
        pooling: Pooling = "mean",
        dropout: float = 0.1,
        extra_heads: dict[str, int] | None = None,
    ) -> None:
        """Wrap ``encoder`` (an HF ``AutoModel``) with a fresh head.

        ``extra_heads`` (name -> label count) adds more sequence heads on the
        same pooled vector: one forward pass then serves several tasks.
        """
        super().__init__()
        self.encoder = encoder
        self.kind = kind
        self.pooling = pooling
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        self.extra_heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in (extra_heads or {}).items()})

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled sentence vectors (sequence) or per-token states (token), after dropout."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.kind == "token":
            features = hidden
        elif self.pooling == "first":
            features = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            features = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        dropped: torch.Tensor = self.dropout(features)
        return dropped

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return the primary head's logits (FP32) for a padded batch."""
        logits: torch.Tensor = self.head(self.features(input_ids, attention_mask))
        return logits.float()

    def forward_heads(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every head from one encoder pass: ``""`` is the primary head."""
        features = self.features(input_ids, attention_mask)
        out = {"": self.head(features).float()}
        out.update({name: head(features).float() for name, head in self.extra_heads.items()})
        return out


def build_model(
    base_model: str,
    kind: Kind,
    labels: list[str],
    pooling: Pooling = "mean",
    dropout: float = 0.1,
    extra_heads: dict[str, list[str]] | None = None,
) -> TextPulseModel:
    """Load pretrained encoder weights and attach a new head for ``labels`` (plus extra heads)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    # The checkpoint's unused pooler weights otherwise print a load report table.
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        encoder = AutoModel.from_pretrained(base_model, add_pooling_layer=False)
    except TypeError:  # encoders without a pooler (DistilBERT, ...) take no such flag
        encoder = AutoModel.from_pretrained(base_model)
    finally:
        hf_logging.set_verbosity(previous)
    set_label_maps(encoder.config, labels)
    sizes = {name: len(names) for name, names in (extra_heads or {}).items()}
    return TextPulseModel(encoder, kind, len(labels), pooling=pooling, dropout=dropout, extra_heads=sizes)


def set_label_maps(config: Any, labels: list[str]) -> None:
    """Write ``id2label``/``label2id`` into an HF config (what HF tools expect)."""
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}


def save_model(
    model: TextPulseModel,
    tokenizer: Any,
    directory: Path,
    meta: dict[str, Any],
) -> None:
    """Write config (with id2label + ``textpulse`` meta), weights, tokenizer and ``id2label.json``."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    config = model.encoder.config
    config.textpulse = {"kind": model.kind, "pooling": model.pooling, **meta}
    config.save_pretrained(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    labels = labels_of(config)
    (directory / "id2label.json").write_text(json.dumps(dict(enumerate(labels)), indent=2) + "\n", "utf-8")


def labels_of(config: Any) -> list[str]:
    """Label names in id order from an HF config's ``id2label``."""
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    return [id2label[i] for i in range(len(id2label))]


def load_model(directory: Path, device: str = "cpu") -> tuple[TextPulseModel, Any, dict[str, Any]]:
    """Load (model in eval mode, tokenizer, textpulse meta) from a saved model directory."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    config = AutoConfig.from_pretrained(directory)
    meta = dict(getattr(config, "textpulse", None) or {})
    if "kind" not in meta:
        msg = f"{directory}/config.json has no 'textpulse' block: not a textpulse model directory"
        raise ValueError(msg)
    try:
        encoder = AutoModel.from_config(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
    except TypeError:
        encoder = AutoModel.from_config(config)  # type: ignore[no-untyped-call]
    extra = {name: len(labels) for name, labels in (meta.get("extra_heads") or {}).items()}
    model = TextPulseModel(
        encoder, meta["kind"], len(labels_of(config)), pooling=meta.get("pooling", "mean"), extra_heads=extra
    )
    state = load_file(str(directory / WEIGHTS_FILE))
    model.load_state_dict(state)
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer, meta


def quantize_int8(model: TextPulseModel) -> TextPulseModel:
    """Dynamic int8 quantisation of every ``Linear`` layer, for CPU serving.

    Weights are stored as int8, activations are quantised per batch at run time
    (``torch.ao.quantization.quantize_dynamic``); embeddings and layer norms stay
    FP32. It is a different model numerically: a few per cent of labels change,
    so measure it (``textpulse eval … --backend torch-int8``) before serving it.
    """
    import torch

    # torch ships quantize_dynamic without annotations
    quantized: TextPulseModel = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
        model, {nn.Linear}, dtype=torch.qint8
    )
    return quantized


def count_parameters(model: nn.Module) -> int:
    """Total parameters (encoder + head)."""
    return sum(p.numel() for p in model.parameters())
