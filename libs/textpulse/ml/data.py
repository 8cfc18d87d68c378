"""Turn examples into token ids and padded batches (dynamic padding).

Examples are tokenised once, unpadded; each batch is padded only to its own
longest row, which on short tweets is several times cheaper than padding
everything to ``max_length``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from textpulse.ml.tokenization import IGNORE_INDEX, align_labels, normalise_words

if TYPE_CHECKING:
    from collections.abc import Sequence

    from textpulse.datasets import TextExample, TokenExample


@dataclass(slots=True)
class Encoded:
    """One tokenised example; ``labels`` is an int (sequence) or a list (token)."""

    input_ids: list[int]
    labels: int | list[int] | None
    word_ids: list[int | None] | None = None


def encode_text_examples(
    tokenizer: Any,
    examples: Sequence[TextExample],
    label2id: dict[str, int],
    max_length: int,
) -> list[Encoded]:
    """Tokenise texts (truncated); unknown or missing labels become ``None``."""
    batch = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
    return [
        Encoded(ids, label2id.get(e.label) if e.label is not None else None)
        for ids, e in zip(batch["input_ids"], examples, strict=True)
    ]


def encode_token_examples(
    tokenizer: Any,
    examples: Sequence[TokenExample],
    label2id: dict[str, int],
    max_length: int,
) -> list[Encoded]:
    """Tokenise pre-split words; align word tags to sub-tokens (first sub-token only).

    Links and handles become the placeholder words serving shows the model (tag ``O``):
    :func:`~textpulse.ml.tokenization.normalise_words`, so train and serve see the same text.
    """
    normalised = [normalise_words(e.tokens, e.tags or None) for e in examples]
    batch = tokenizer(
        [words for words, _ in normalised], is_split_into_words=True, truncation=True, max_length=max_length
    )
    encoded = []
    for index, example in enumerate(examples):
        word_ids = batch.word_ids(index)
        word_tags = normalised[index][1]
        tags = [label2id[t] for t in word_tags] if word_tags else [0] * len(example.tokens)
        encoded.append(Encoded(batch["input_ids"][index], align_labels(word_ids, tags), word_ids))
    return encoded


def collate(rows: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest row; token labels are padded with -100."""
    length = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row.input_ids)] = torch.tensor(row.input_ids, dtype=torch.long)
        attention_mask[i, : len(row.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    first = rows[0].labels
    if isinstance(first, list):
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            row_labels = row.labels if isinstance(row.labels, list) else []
            labels[i, : len(row_labels)] = torch.tensor(row_labels, dtype=torch.long)
        batch["labels"] = labels
    elif first is not None:
        batch["labels"] = torch.tensor([r.labels if isinstance(r.labels, int) else IGNORE_INDEX for r in rows])
    return batch


def batches(rows: Sequence[Encoded], size: int) -> list[list[Encoded]]:
    """Consecutive chunks of ``size`` rows."""
    return [list(rows[i : i + size]) for i in range(0, len(rows), size)]
