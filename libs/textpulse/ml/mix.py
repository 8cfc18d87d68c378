"""Mixing a second token-classification data set into a token task (``TrainConfig.mix``).

FiNER-ORD is news wire; the NER service reads tweets. WNUT-17 (social text, CC BY 4.0) has other
entity types, so its tags are mapped onto the served label set first (``person`` → ``PER``,
``location`` → ``LOC``, ``corporation``/``group`` → ``ORG`` in the ``social`` profile; ``product``
and ``creative-work`` have no served type and become ``O``). Pure except :func:`load_mix`, which
reads the file, so the mapping, the carve and the sampling are unit-tested on tiny data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textpulse.datasets import TextExample, TokenExample, dev_split, label_names, load_token_examples
from textpulse.datasets.splits import example_key
from textpulse.ml.config import resolve_task

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from textpulse.ml.config import TokenMix

_BIO = frozenset({"B", "I"})


def map_tags(tags: Sequence[str], label_map: Mapping[str, str]) -> list[str]:
    """BIO tags with each entity type renamed by ``label_map``; a type it does not list becomes ``O``."""
    out = []
    for tag in tags:
        prefix, _, kind = tag.partition("-")
        target = label_map.get(kind) if prefix in _BIO else None
        out.append(f"{prefix}-{target}" if target else "O")
    return out


def map_examples(examples: Sequence[TokenExample], label_map: Mapping[str, str]) -> list[TokenExample]:
    """The examples with :func:`map_tags` applied (tokens untouched: normalised at encoding like any row)."""
    return [TokenExample(e.id, list(e.tokens), map_tags(e.tags, label_map)) for e in examples]


def check_label_map(label_map: Mapping[str, str], source_labels: Sequence[str], target_labels: Sequence[str]) -> None:
    """Refuse a map naming a type the mixed set does not have (a typo drops it silently) or one the model lacks."""
    source_types = {label.partition("-")[2] for label in source_labels if label != "O"}
    target_types = {label.partition("-")[2] for label in target_labels if label != "O"}
    unknown = sorted(set(label_map) - source_types)
    if unknown:
        msg = f"label_map names types the mixed data set does not have: {unknown} (it has {sorted(source_types)})"
        raise ValueError(msg)
    missing = sorted(set(label_map.values()) - target_types)
    if missing:
        msg = f"label_map maps onto types outside the model's labels: {missing} (it has {sorted(target_types)})"
        raise ValueError(msg)


def weighted(examples: Sequence[TokenExample], weight: float, rng: random.Random) -> list[TokenExample]:
    """Each example ``int(weight)`` times, plus a seeded sample of the fractional part."""
    whole = int(weight)
    extra = round((weight - whole) * len(examples))
    picked = sorted(rng.sample(range(len(examples)), extra)) if extra else []
    return [*(list(examples) * whole), *(examples[i] for i in picked)]


@dataclass(frozen=True, slots=True)
class MixSplits:
    """One mixed data set: training rows (mapped, capped, weighted) and its carved, mapped dev rows."""

    name: str
    train: list[TokenExample]
    dev: list[TokenExample]
    train_desc: str
    dev_desc: str
    licence: str
    #: distinct sentences behind ``train`` (before the weight repeats them)
    n_sentences: int
    #: the mixed file as the config names it (``textpulse eval`` refuses to score it)
    path: str = ""


def split_mix(
    examples: Sequence[TokenExample],
    mix: TokenMix,
    *,
    data_seed: int,
    seed: int,
) -> tuple[list[TokenExample], list[TokenExample], int]:
    """(train rows, dev rows, distinct train sentences) of already-loaded, unmapped examples.

    Dev is carved first (near-duplicate aware, ``data_seed``: the same rows for every training
    seed and every weight, 0 included), then the cap and the weight apply to what is left.
    """
    if mix.dev_fraction:
        train, dev = dev_split(examples, mix.dev_fraction, data_seed, stratify=False)
    else:  # nothing carved: every sentence is a training candidate, nothing is scored
        train, dev = list(examples), []
    rng = random.Random(seed)  # noqa: S311 - reproducible subsampling
    if mix.limit is not None and len(train) > mix.limit:
        train = [train[i] for i in sorted(rng.sample(range(len(train)), mix.limit))]
    if mix.limit_dev is not None and len(dev) > mix.limit_dev:
        dev = [dev[i] for i in sorted(random.Random(data_seed).sample(range(len(dev)), mix.limit_dev))]  # noqa: S311
    kept = train if mix.weight > 0 else []
    rows = weighted(map_examples(kept, mix.label_map), mix.weight, rng)
    return rows, map_examples(dev, mix.label_map), len(kept)


def drop_twins(rows: Sequence[TokenExample], held_out: Iterable[TextExample | TokenExample]) -> list[TokenExample]:
    """``rows`` without any sentence that is a near-duplicate of a held-out one.

    The mixed file and the primary dev split are different files, so the carve that keeps a
    file's own twins on one side does not protect the primary dev set from a mixed twin.
    """
    keys = {example_key(e) for e in held_out}
    return [e for e in rows if example_key(e) not in keys]


def load_mix(mix: TokenMix, target_labels: Sequence[str], *, data_seed: int, seed: int) -> MixSplits:
    """Read, check, carve, map and sample one :class:`~textpulse.ml.config.TokenMix`."""
    name, preset = resolve_task(mix.task)
    if preset.kind != "token":
        msg = f"mix: {name} is not a token-classification task"
        raise ValueError(msg)
    path = mix.file or preset.train
    if "test" in path.rsplit("/", 1)[-1].lower():
        msg = f"mix: {path} looks like a test split; mix training files only (dev is carved from them)"
        raise ValueError(msg)
    check_label_map(mix.label_map, label_names(preset.dataset), target_labels)
    examples = load_token_examples(path, dataset=preset.dataset)
    train, dev, sentences = split_mix(examples, mix, data_seed=data_seed, seed=seed)
    mapping = ", ".join(f"{k}→{v}" for k, v in sorted(mix.label_map.items()))
    train_desc = f"{sentences} sentences of {path} × {mix.weight:g} ({mapping}; other types O)"
    dev_desc = (
        f"{mix.dev_fraction:.0%} of `{path}` (seed {data_seed}, dedup-aware), {len(dev)} sentences"
        if dev
        else "none (dev_fraction 0)"
    )
    return MixSplits(name, train, dev, train_desc, dev_desc, preset.licence, sentences, path)
