"""Deterministic, leak-free dev splits carved from the training files.

The official test splits are held out, so model selection needs a dev set
taken from train. Near-duplicates always land on the same side: tweets are
reposted with another t.co link, another @handle or another number
("$AAPL up 3%" / "$aapl up 5%"), and Financial PhraseBank repeats
sentences. A dev row with a twin in train measures memory, not
generalisation, and flatters both the dev figure and early stopping, so
texts are grouped by :func:`near_duplicate_key` before the split.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from typing import TYPE_CHECKING, TypeVar

from textpulse.datasets.records import TextExample, TokenExample

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

Example = TypeVar("Example", bound=TextExample | TokenExample)

# Order matters: URLs first (they contain digits and slashes), then handles,
# then numbers. Truncated URLs ("https://t.c…", "http://" cut by the
# tweet limit) count as URLs too.
_URL = re.compile(r"(?:https?://|https?:/?/?(?=\s|$)|www\.)\S*|\bt\.co/\S*", re.IGNORECASE)
_HANDLE = re.compile(r"@\w+")
# 3, 3.5, 1,200, -4%, .5: one placeholder whatever the value and sign.
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_SPACE = re.compile(r"\s+")
# Truncated tweets end in an ellipsis or a lone URL stub; trailing punctuation
# differences ("..." vs "…") should not separate twins.
_TRAILING = re.compile(r"[\s.…!?,;:]+$")


def near_duplicate_key(text: str) -> str:
    """The text as a twin-detector sees it.

    URLs are dropped (a repost with or without its link is the same
    text), user handles become ``@user``, numbers ``0``; case (so
    cashtag case too) and whitespace are folded; trailing punctuation and
    ellipses are dropped.
    """
    key = _URL.sub(" ", text)
    key = _HANDLE.sub("@user", key)
    key = _NUMBER.sub("0", key)
    key = _SPACE.sub(" ", key.casefold()).strip()
    return _TRAILING.sub("", key)


def example_key(example: TextExample | TokenExample) -> str:
    """The near-duplicate key of a text or token example (its words joined by spaces)."""
    text = example.text if isinstance(example, TextExample) else " ".join(example.tokens)
    return near_duplicate_key(text)


def _stratum(example: TextExample | TokenExample) -> str:
    if isinstance(example, TextExample):
        return example.label or ""
    return ""


def cross_split_twins(
    train: Iterable[TextExample | TokenExample], dev: Iterable[TextExample | TokenExample]
) -> list[str]:
    """Near-duplicate keys present on both sides (empty for a leak-free split)."""
    train_keys = {example_key(e) for e in train}
    return sorted({k for k in (example_key(e) for e in dev) if k in train_keys})


def dev_split(
    examples: Sequence[Example],
    fraction: float = 0.1,
    seed: int = 13,
    *,
    stratify: bool = True,
) -> tuple[list[Example], list[Example]]:
    """Split ``examples`` into (train, dev), preserving the input order in each.

    Near-duplicates (:func:`near_duplicate_key`) form one group and go to the
    same side. Stratified by label for text examples (each label contributes
    ``round(fraction * n_groups_with_that_label)`` groups to dev, a group's
    label being its first example's); token examples are split uniformly.
    The same inputs, fraction and seed always give the same split.
    """
    if not 0.0 < fraction < 1.0:
        msg = f"fraction must be in (0, 1), got {fraction}"
        raise ValueError(msg)
    groups: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        groups[example_key(example)].append(index)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, indices in groups.items():
        stratum = _stratum(examples[indices[0]]) if stratify else ""
        strata[stratum].append(key)
    rng = random.Random(seed)  # noqa: S311 - reproducible shuffling, not security
    dev_indices: set[int] = set()
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng.shuffle(keys)
        take = round(fraction * len(keys))
        for key in keys[:take]:
            dev_indices.update(groups[key])
    train = [e for i, e in enumerate(examples) if i not in dev_indices]
    dev = [e for i, e in enumerate(examples) if i in dev_indices]
    return train, dev
