"""Deterministic dev splits carved from the training files.

The official test splits are held out, so model selection needs a dev set
taken from train. Examples with identical text always land on the same side
(Financial PhraseBank repeats sentences) so dev figures are not inflated by
leakage.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import TYPE_CHECKING, TypeVar

from textpulse.datasets.records import TextExample, TokenExample

if TYPE_CHECKING:
    from collections.abc import Sequence

Example = TypeVar("Example", bound=TextExample | TokenExample)


def _key(example: TextExample | TokenExample) -> str:
    return example.text if isinstance(example, TextExample) else " ".join(example.tokens)


def _stratum(example: TextExample | TokenExample) -> str:
    if isinstance(example, TextExample):
        return example.label or ""
    return ""


def dev_split(
    examples: Sequence[Example],
    fraction: float = 0.1,
    seed: int = 13,
    *,
    stratify: bool = True,
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (train, dev), preserving the input order in each.

    Stratified by label for text examples (each label contributes
    ``round(fraction * n_label)`` distinct texts to dev); token examples are
    split uniformly. The same inputs, fraction and seed always give the same
    split.
    """
    if not 0.0 < fraction < 1.0:
        msg = f"fraction must be in (0, 1), got {fraction}"
        raise ValueError(msg)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        groups[_key(example)].append(index)
    strata: dict[str, list[str]] = defaultdict(list)
    for text, indices in groups.items():
        stratum = _stratum(examples[indices[0]]) if stratify else ""
        strata[stratum].append(text)
    rng = random.Random(seed)  # noqa: S311 - reproducible shuffling, not security
    dev_indices: set[int] = set()
    for stratum in sorted(strata):
        texts = sorted(strata[stratum])
        rng.shuffle(texts)
        take = round(fraction * len(texts))
        for text in texts[:take]:
            dev_indices.update(groups[text])
    train = [e for i, e in enumerate(examples) if i not in dev_indices]
    dev = [e for i, e in enumerate(examples) if i in dev_indices]
    return train, dev
