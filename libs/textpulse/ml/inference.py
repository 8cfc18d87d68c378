"""Batched forward passes over encoded rows, shared by evaluation and the Predictor."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# torch is imported inside the functions that need it: the ONNX Runtime serving path imports
# ``softmax`` from here and must not pay torch's ~500 MB.
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from textpulse.ml.data import Encoded
    from textpulse.ml.modeling import TextPulseModel


def torch_logits_fn(
    model: TextPulseModel, device: str = "cpu", head: str = ""
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Wrap a torch model as a numpy-in/numpy-out logits function (``head``: an extra head's name)."""
    import torch

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        ids = torch.as_tensor(input_ids, device=device)
        mask = torch.as_tensor(attention_mask, device=device)
        with torch.inference_mode():
            logits = model.forward_heads(ids, mask)[head] if head else model(ids, mask)
        result: np.ndarray = logits.float().cpu().numpy()
        return result

    return run


def run_batches(
    logits_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    rows: Sequence[Encoded],
    pad_id: int,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Logits per row, in input order; token logits are cut to each row's length.

    Rows are sorted by length first so each padded batch wastes little compute.
    """
    from textpulse.ml.data import collate

    order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
    results: list[np.ndarray | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = collate([rows[i] for i in chunk], pad_id)
        logits = logits_fn(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
        for position, index in enumerate(chunk):
            value = logits[position]
            if value.ndim == 2:  # noqa: PLR2004 - token logits [seq, labels]
                value = value[: len(rows[index].input_ids)]
            results[index] = value
    return [r for r in results if r is not None]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=-1, keepdims=True)
    return result
