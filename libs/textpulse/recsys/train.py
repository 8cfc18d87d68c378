"""Fine-tune the bi-encoder on user behaviour and export it for Triton.

Supervision: consecutive positives of a user (rating ≥ 4, ordered by time) on
the train part of the temporal dev split; the text of one positive should be
closer to the text of the user's next positive than to the other items of the
batch (in-batch negatives, symmetric InfoNCE, scale 20) and, with
``hard_negatives`` > 0, than to items the same user rated below 4 in the train
part (:func:`mine_examples`; the dev part is never read). ``pairs`` None takes
every pair; ``epochs`` passes, each in its own seeded order. The run writes a
checkpoint every ``checkpoint_every`` steps and at each epoch end to its output
folder and continues from it when rerun with the same config (``--out-dir``), so
a long CPU run can be stopped and resumed. Item text = title,
genres, tags written no later than their author's latest train rating
(:func:`textpulse.recsys.data.tag_cutoffs`). The encoder is mean-pooled and L2-normalised, exactly what the
service and the Triton model compute.

Then the LightGBM LambdaRank ranker the service serves over this encoder's
item vectors (:func:`train_ranker_for`, the recipe of ``make bench-recommend``'s
row (g): trained on the inner temporal split of the dev-train part), saved in
``ranker/`` beside the weights (``model.txt``, ``ranker.json``, ``metrics.json``,
``README.md``).

Run: ``python -m textpulse.recsys.train`` (``make recommend-model``; ``--help``
lists the config fields). Writes
the trained folder to ``.cache/models/recommend-<time>/`` (weights, tokenizer,
``training_config.json``, ``metrics.json``, ``README.md`` model card, ``ranker/``)
and exports it as the next version of ``<model repo>/recommend/``.
``--ranker-only`` trains just the ranker for the latest export, in place.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import BaseModel, Field

from textpulse.ml.export import _update_manifest, next_version
from textpulse.ml.settings import MLSettings, default_base_model, offline_hub
from textpulse.ml.triton import config as triton_config

from .data import DATASET, LICENCE, Rating, load_movielens, positives_by_user, seen_by_user, tag_cutoffs
from .embed import TorchEncoder
from .evaluate import Rankers, cached_vectors, evaluate, make_split, weights_key
from .ranker import (
    RANKER_DIR,
    FeatureState,
    RankerConfig,
    TrainedRanker,
    inner_split,
    save_ranker,
    train_on_inner,
)

log = logging.getLogger(__name__)
MODEL_NAME = "recommend"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class TrainConfig(BaseModel):
    """Every knob of one training run (saved resolved beside the model)."""

    base_model: str | None = Field(None, description="HF folder; default the bundled all-MiniLM-L6-v2.")
    pairs: int | None = Field(
        1500, ge=32, description="(positive, next positive) pairs sampled with the seed; None: all of them."
    )
    hard_negatives: int = Field(
        0, ge=0, description="Per pair, items the same user rated below the positive threshold (train part)."
    )
    batch_size: int = Field(32, ge=4)
    max_length: int = Field(48, ge=8, le=512)
    lr: float = Field(3e-5, gt=0)
    warmup: float = Field(0.1, ge=0, lt=1)
    epochs: int = Field(1, ge=1)
    scale: float = Field(20.0, gt=0, description="Logit scale of the in-batch softmax (1 / temperature).")
    dev_fraction: float = Field(0.2, gt=0, lt=1, description="Per-user latest share held out as dev.")
    train_layers: int = Field(
        3, ge=0, description="Top transformer layers fine-tuned (embeddings and lower layers frozen: CPU budget)."
    )
    checkpoint_every: int = Field(100, ge=1, description="Steps between checkpoints (and at every epoch end).")
    seed: int = 13
    threads: int = Field(2, ge=1)


@dataclass(frozen=True, slots=True)
class Example:
    """One training example: a user's positive, their next positive and hard negatives (item ids)."""

    user: str
    anchor: str
    positive: str
    negatives: tuple[str, ...] = ()

    @property
    def items(self) -> tuple[str, ...]:
        return (self.anchor, self.positive, *self.negatives)


def mine_examples(train_ratings: list[Rating], hard_negatives: int, seed: int) -> list[Example]:
    """Every (positive, next positive) pair of ``train_ratings``, each with up to ``hard_negatives`` negatives.

    A hard negative is one of the same user's own unengaged candidates: an item they rated below the
    positive threshold (they chose it, so it is close to their taste, and did not like it). Users with
    fewer such items get the most popular items (by positives) they never rated, the popularity
    retriever's candidates for them. Only ``train_ratings`` are read: pass the train part of a temporal
    split and no held-out rating (of this user or any other) shapes a negative. Deterministic for a seed.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    seen = seen_by_user(train_ratings)
    unliked: dict[str, list[str]] = {}
    for r in train_ratings:
        if not r.positive:
            unliked.setdefault(r.user, []).append(r.item)
    popular = [item for item, _ in Counter(r.item for r in train_ratings if r.positive).most_common()]
    examples: list[Example] = []
    for user, rows in positives_by_user(train_ratings).items():
        own = sorted(set(unliked.get(user, ())), key=str)
        fallback = [i for i in popular[: 4 * hard_negatives + len(seen[user])] if i not in seen[user]]
        for a, b in itertools.pairwise(rows):
            if a.item == b.item:
                continue
            negatives: list[str] = []
            if hard_negatives:
                negatives = rng.sample(own, min(hard_negatives, len(own)))
                negatives += fallback[: hard_negatives - len(negatives)]
            examples.append(Example(user, a.item, b.item, tuple(negatives)))
    return examples


def make_examples(config: TrainConfig) -> tuple[list[Example], dict[str, str], dict[str, Any]]:
    """Examples from the dev-train part (``config.pairs`` of them, sampled with the seed), the item texts, info."""
    ml = load_movielens()
    split = make_split(ml, config.dev_fraction)
    examples = mine_examples(split.train, config.hard_negatives, config.seed)
    rng = random.Random(config.seed)  # noqa: S311 - reproducible sampling, not security
    rng.shuffle(examples)
    chosen = examples if config.pairs is None else examples[: config.pairs]
    texts = dict(zip(split.item_ids, split.texts, strict=True))  # tags of the train period only
    info = {
        "available_pairs": len(examples),
        "used_pairs": len(chosen),
        "users": len(positives_by_user(split.train)),
        "hard_negatives": sum(len(e.negatives) for e in chosen),
    }
    return chosen, texts, info


def _freeze_lower(model: Any, train_layers: int) -> None:
    """Freeze the embeddings and all but the top ``train_layers`` layers (backward pass only through those)."""
    layers = list(model.encoder.layer)
    for param in model.embeddings.parameters():
        param.requires_grad = False
    for layer in layers[: max(0, len(layers) - train_layers)]:
        for param in layer.parameters():
            param.requires_grad = False


#: Batches kept open at once while packing: a conflicting example waits for the next open batch
#: instead of being dropped (popular films recur across users).
OPEN_BATCHES = 8


def batch_examples(examples: list[Example], texts: dict[str, str], size: int) -> tuple[list[list[Example]], int]:
    """Batches without a repeated text; the number of examples left out.

    A text twice in a batch (an item that is one example's positive and another's anchor or hard
    negative) would be its own negative: such an example goes to another open batch.
    """
    out: list[list[Example]] = []
    open_: list[tuple[list[Example], set[str]]] = []
    dropped = 0
    for example in examples:
        keys = {texts[i] for i in example.items}
        if len(keys) < len(example.items):  # an item's text equal to another's: no clean target
            dropped += 1
            continue
        slot = next((b for b in open_ if not keys & b[1]), None)
        if slot is None:
            if len(open_) == OPEN_BATCHES:
                dropped += 1
                continue
            slot = ([], set())
            open_.append(slot)
        slot[0].append(example)
        slot[1].update(keys)
        if len(slot[0]) == size:
            out.append(slot[0])
            open_.remove(slot)
    for batch, _ in open_:
        if len(batch) >= 4:  # noqa: PLR2004 - a tiny last batch gives a weak contrastive signal
            out.append(batch)
        else:
            dropped += len(batch)
    return out, dropped


def contrastive_loss(anchors: Any, positives: Any, negatives: Any | None, scale: float) -> Any:
    """Symmetric in-batch InfoNCE (MultipleNegativesRanking-style) with extra hard negatives.

    Anchor i's target is positive i among every positive of the batch plus every hard negative of the
    batch; the reverse direction (positive → anchors) keeps the loss symmetric as before. Without hard
    negatives it is exactly the earlier loss. Unit vectors in, a scalar tensor out.
    """
    import torch

    candidates = positives if negatives is None or len(negatives) == 0 else torch.cat([positives, negatives])
    target = torch.arange(len(anchors))
    forward = torch.nn.functional.cross_entropy(scale * anchors @ candidates.T, target)
    backward = torch.nn.functional.cross_entropy(scale * positives @ anchors.T, target)
    return (forward + backward) / 2


CHECKPOINT = "checkpoint.pt"


def fit(  # noqa: PLR0915 - one linear training loop
    config: TrainConfig,
    base: str,
    examples: list[Example],
    texts: dict[str, str],
    out_dir: Path,
    *,
    stop_after: int | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune on ``examples``; (model, tokenizer, info). Resumable: rerun with the same arguments.

    Every ``checkpoint_every`` steps and at each epoch end the trainable weights, optimizer, schedule,
    losses and RNG state go to ``out_dir/checkpoint.pt`` (written whole, then renamed); a rerun with the
    same config continues from it (the batches of every epoch are a function of the seed).
    ``stop_after`` ends the run after that many steps of this call (tests; an interrupted run).
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    from .embed import mean_pool

    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base)
    _freeze_lower(model, config.train_layers)
    model.train()
    batches: list[list[Example]] = []
    epoch_ends: set[int] = set()
    dropped = 0
    for epoch in range(config.epochs):
        order = list(examples)
        random.Random(config.seed + epoch).shuffle(order)  # noqa: S311 - reproducible order
        epoch_batches, epoch_dropped = batch_examples(order, texts, config.batch_size)
        batches += epoch_batches
        epoch_ends.add(len(batches))
        dropped += epoch_dropped
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=config.lr, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(config.warmup * len(batches)), len(batches)
    )
    losses: list[float] = []
    step, seconds = 0, 0.0
    checkpoint = out_dir / CHECKPOINT
    # What decides the weights; threads and checkpoint spacing may change between a run and its resume.
    recipe = config.model_dump(exclude={"threads", "checkpoint_every"})
    fingerprint = {**recipe, "base_model": base, "examples": len(examples), "steps": len(batches)}
    if checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=False)
        if state["fingerprint"] != fingerprint:
            msg = f"{checkpoint} was written by another config: {state['fingerprint']} (now {fingerprint})"
            raise ValueError(msg)
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        step, losses, seconds = state["step"], state["losses"], state["seconds"]
        log.info("resumed from %s at step %d of %d", checkpoint, step, len(batches))
    out_dir.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        tmp = checkpoint.with_suffix(".tmp")
        torch.save(
            {
                "fingerprint": fingerprint,
                "trainable": {n: p.detach().clone() for n, p in trainable.items()},
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "losses": losses,
                "seconds": seconds,
            },
            tmp,
        )
        tmp.replace(checkpoint)

    def encode(items: list[str]) -> Any:
        enc = tokenizer(
            [texts[i] for i in items],
            padding=True,
            truncation=True,
            max_length=config.max_length,
            return_tensors="pt",
        )
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return mean_pool(hidden, enc["attention_mask"])

    steps_per_epoch = len(batches) // config.epochs
    bar = tqdm(total=len(batches), initial=step, desc="recommend bi-encoder", unit="batch", dynamic_ncols=True)
    done_here = 0
    while step < len(batches) and (stop_after is None or done_here < stop_after):
        started = time.perf_counter()
        batch = batches[step]
        negatives = [n for e in batch for n in e.negatives]
        loss = contrastive_loss(
            encode([e.anchor for e in batch]),
            encode([e.positive for e in batch]),
            encode(negatives) if negatives else None,
            config.scale,
        )
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(list(trainable.values()), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        step += 1
        done_here += 1
        seconds += time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(
            epoch=f"{min(config.epochs, step // max(1, steps_per_epoch) + 1)}/{config.epochs}",
            loss=f"{np.mean(losses[-20:]):.3f}",
        )
        if step % config.checkpoint_every == 0 or step in epoch_ends or step == len(batches):
            save()
    bar.close()
    model.eval()
    per_epoch = [
        float(np.mean(losses[a:b])) for a, b in itertools.pairwise([0, *sorted(epoch_ends)]) if b <= len(losses)
    ]
    info = {
        "steps": len(batches),
        "steps_done": step,
        "complete": step == len(batches),
        "loss_first_20": float(np.mean(losses[:20])) if losses else None,
        "loss_last_20": float(np.mean(losses[-20:])) if losses else None,
        "loss_per_epoch": per_epoch,
        "seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, len(losses)), 2),
        "examples_left_out_per_run": dropped,
    }
    return model, tokenizer, info


def train(config: TrainConfig, out_dir: Path, *, stop_after: int | None = None) -> dict[str, Any]:
    """Fine-tune and save to ``out_dir``; returns the metrics (resumes from ``out_dir``'s checkpoint)."""
    offline_hub()
    base = config.base_model or default_base_model()
    examples, texts, data_info = make_examples(config)
    model, tokenizer, fit_info = fit(config, base, examples, texts, out_dir, stop_after=stop_after)
    if not fit_info["complete"]:
        return {"train": {**fit_info, **data_info}}
    meta = {
        "kind": "embedding",
        "pooling": "mean",
        "normalize": True,
        "task": "recommend",
        "dataset": DATASET,
        "max_length": config.max_length,
        "base_model": base,
        "train_data": f"{DATASET}/ratings.csv: per-user earliest {1 - config.dev_fraction:.0%} (temporal dev split); "
        "item text with the tags each author wrote by their latest train rating",
        "dev_data": f"{DATASET}/ratings.csv: per-user latest {config.dev_fraction:.0%}",
        "data_licence": LICENCE,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    model.config.textpulse = meta
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    encoder = TorchEncoder(out_dir, max_length=config.max_length, threads=config.threads)
    split = make_split(load_movielens(), config.dev_fraction)
    vectors = cached_vectors(
        encoder.encode, split.texts, weights_key(out_dir, config.max_length), MLSettings().models_dir.parent / "recsys"
    )
    dev = evaluate(split, Rankers(split).text(vectors))
    metrics = {
        "dev": {"text_only_recall@10": dev["recall@10"], "text_only_ndcg@10": dev["ndcg@10"], "users": dev["users"]},
        "train": {**fit_info, **data_info},
    }
    (out_dir / "training_config.json").write_text(
        json.dumps({**config.model_dump(), "base_model": base}, indent=2) + "\n", "utf-8"
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    (out_dir / "README.md").write_text(model_card(meta, metrics, config), "utf-8")
    (out_dir / CHECKPOINT).unlink(missing_ok=True)  # the weights are saved: the optimizer state is not shipped
    return metrics


def model_card(meta: dict[str, Any], metrics: dict[str, Any], config: TrainConfig) -> str:
    dev, tr = metrics["dev"], metrics["train"]
    return "\n".join(
        [
            "# recommend (item/user bi-encoder)",
            "",
            f"- **Task:** text embedding for recommendation (mean-pooled, L2-normalised, {meta['max_length']} tokens)",
            f"- **Base model:** `{meta['base_model']}` ({meta['parameters']} parameters)",
            f"- **Supervision:** {tr['used_pairs']} of {tr['available_pairs']} (positive, next positive) pairs "
            f"of {tr['users']} users, in-batch negatives (batch {config.batch_size})"
            + (
                f" + {config.hard_negatives} hard negative(s) per pair (the user's own items rated below 4 in the "
                "train part; else the most popular items they never rated)"
                if config.hard_negatives
                else ""
            )
            + f", symmetric InfoNCE, scale {config.scale}, {config.epochs} epoch(s) = {tr['steps']} steps, "
            f"lr {config.lr} (warm-up {config.warmup:.0%}, linear decay), top {config.train_layers} layers trained, "
            f"seed {config.seed}",
            f"- **Training data:** {meta['train_data']}",
            f"- **Dev data:** {meta['dev_data']}",
            f"- **Data licence:** {meta['data_licence']} Not for commercial use.",
            "",
            "## Metrics (temporal dev split, text-only ranking)",
            "",
            "| metric | value |",
            "|---|---|",
            f"| Recall@10 | {dev['text_only_recall@10']:.4f} |",
            f"| nDCG@10 | {dev['text_only_ndcg@10']:.4f} |",
            f"| users | {int(dev['users'])} |",
            f"| loss (first → last 20 steps) | {tr['loss_first_20']:.3f} → {tr['loss_last_20']:.3f} |",
            f"| loss per epoch | {' → '.join(f'{v:.3f}' for v in tr.get('loss_per_epoch', []))} |",
            f"| training time | {tr['seconds']} s ({tr.get('seconds_per_step', '?')} s/step) |",
            "",
            "Full comparison (popular, item-kNN, pretrained, hybrid): `make bench-recommend`.",
            "",
            "## Limits",
            "",
            "- Trained on movie titles, genres and user tags: other domains need their own fine-tuning.",
            "- Item text longer than the max length is truncated.",
            "",
        ]
    )


class EmbedOnce:
    """Embeds each distinct text once across calls (vectors read from elsewhere can be :meth:`remember`-ed).

    The dev, inner and earlier-cut catalogues differ only in a few tagged items (~70 of 9.7k texts on
    MovieLens): one encoder pass over the first catalogue, then only the changed texts of the others.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray]) -> None:
        self._encode = encode
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.known]
        if todo:
            self.known.update(zip(todo, self._encode(todo), strict=True))
        return np.stack([self.known[t] for t in texts])

    def remember(self, texts: list[str], vectors: np.ndarray) -> np.ndarray:
        self.known.update(zip(texts, vectors, strict=True))
        return vectors


def train_ranker_for(
    model_dir: Path, *, dev_fraction: float = 0.2, max_length: int = 48, threads: int = 2, ease_lambda: float = 100.0
) -> dict[str, Any]:
    """Train the LambdaRank ranker over ``model_dir``'s item vectors; save it to ``model_dir/ranker``; metrics.

    Trained on the inner temporal split of the dev-train part (:func:`textpulse.recsys.ranker.train_on_inner`);
    scored on the dev split beside popularity and EASE (same users and candidates).
    """
    started = time.perf_counter()
    ml = load_movielens()
    split = make_split(ml, dev_fraction)
    inner = inner_split(ml, split)
    encoder: TorchEncoder | None = None

    def run(texts: list[str]) -> np.ndarray:
        nonlocal encoder
        encoder = encoder or TorchEncoder(model_dir, max_length=max_length, threads=threads)
        return encoder.encode(texts)

    key, cache = weights_key(model_dir, max_length), MLSettings().models_dir.parent / "recsys"
    once = EmbedOnce(run)

    def encode(texts: list[str]) -> np.ndarray:
        return once.remember(texts, cached_vectors(once, texts, key, cache))

    # One of the ten slots for the best new item by text: without it the ranker never shows an item
    # nobody has rated yet (cold-item Recall@10 0 on the dev split; 0.008 with it, at ~4% nDCG).
    config = RankerConfig(ease_lambda=ease_lambda, new_item_slots=1)
    vectors = encode(split.texts)  # first: usually on disk already (the encoder's own dev scoring)
    trained = train_on_inner(ml, inner, encode(inner.texts), config, encode=encode)  # encode: the earlier cuts
    state = FeatureState(ml.items_as_of(tag_cutoffs(split.train)), split.item_ids, vectors, split.train, config)
    rankers = Rankers(split)
    dev = {
        "ranker": evaluate(split, lambda user: trained.rank(state, user, 10)),
        "popular": evaluate(split, rankers.popular),
        f"ease_lambda_{ease_lambda:g}": evaluate(split, rankers.ease(rankers.fit_ease(ease_lambda))),
    }
    metrics = {
        "dev": dev,
        "training": trained.info,
        "importances_gain": trained.importances(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = model_dir / RANKER_DIR
    save_ranker(trained, out, embedding_dim=int(vectors.shape[1]), metrics=metrics)
    (out / "README.md").write_text(ranker_card(trained, metrics, dev_fraction), "utf-8")
    return metrics


def ranker_card(trained: TrainedRanker, metrics: dict[str, Any], dev_fraction: float) -> str:
    cfg, info = trained.config, trained.info
    rows = [f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} |" for name, m in metrics["dev"].items()]
    importances = ", ".join(
        f"{k} {v:.3f}" for k, v in sorted(metrics["importances_gain"].items(), key=lambda kv: -kv[1])
    )
    return "\n".join(
        [
            "# recommend ranker (LightGBM LambdaRank)",
            "",
            "- **Task:** re-rank the union of text, EASE, item-kNN and popularity candidates "
            f"(top {cfg.per_source} unseen each, plus the {cfg.new_per_source} best text matches among items "
            "without a positive) for one user; features in `ranker.json` "
            "(`textpulse.recsys.ranker.FEATURES`, computed by `FeatureState.user_features` in training and serving)",
            f"- **Training data:** {DATASET}/ratings.csv, inner temporal split of the per-user earliest "
            f"{1 - dev_fraction:.0%} (state = its train part, labels = its held-out positives); "
            f"{info.get('rows')} rows of {info.get('users_with_hit')} users"
            + "".join(
                f"; cut {key.removeprefix('set_')} (an earlier temporal split): {c.get('rows')} rows of "
                f"{c.get('users_with_hit')} users"
                for key, c in info.items()
                if key.startswith("set_") and isinstance(c, dict)
            )
            + (
                f"; trees by early stopping on nDCG@10 of held-out training users (best iteration "
                f"{info['best_iteration']})"
                if "best_iteration" in info
                else f"; {cfg.n_estimators} trees"
            ),
            f"- **Config:** objective {cfg.objective}, {cfg.num_leaves} leaves, learning rate {cfg.learning_rate}, "
            f"min {cfg.min_child_samples} rows per leaf, EASE λ {cfg.ease_lambda:g}, {cfg.new_per_source} new-item "
            f"candidates, {cfg.new_item_slots} of the top k reserved for new items by text, order features over "
            f"the last {cfg.recent_items} positives (transition window {cfg.transition_window}, decay "
            f"{cfg.transition_decay:g}), seed {cfg.seed}",
            f"- **Data licence:** {LICENCE} Not for commercial use.",
            "",
            f"## Dev split (per-user latest {dev_fraction:.0%}; the ranker over the full dev-train state)",
            "",
            "| method | Recall@10 | nDCG@10 |",
            "|---|---|---|",
            *rows,
            "",
            f"Feature importances (gain share): {importances}.",
            "",
            "## Limits",
            "",
            "- Needs the encoder it was trained with (same item vector space): it lives in that export's folder.",
            "- Users without a positive in the catalogue get the service's fallback (hybrid / popular).",
            "",
        ]
    )


def embedding_parameters(max_length: int, runtime: str) -> dict[str, str]:
    """The string parameters the recommend ``model.py`` reads (fp32 in either runtime).

    ``runtime``: ``onnx`` (ONNX Runtime over ``model.onnx``: CPU instances of a version exported with
    its graph) or ``torch`` (GPU instances, versions without a graph).
    """
    return {"runtime": runtime, "torch_threads": "2", "max_sequence_length": str(max_length), "task_kind": "embedding"}


def write_embedding_configs(root: Path, name: str, dim: int, max_length: int, cpu_runtime: str) -> None:
    """``config.pbtxt`` and ``configs/gpu*.pbtxt`` of the recommend encoder under ``root``.

    Triton serves it with the python backend (model.py; configs/gpu.pbtxt is its GPU variant):
    ``cpu_runtime`` on CPU instances (``onnx``: ONNX Runtime over model.onnx, no torch in the stub),
    torch on GPU instances. The same model.onnx is the in-process encoder's (OnnxEncoder).
    """
    triton_config.write_model_configs(
        root,
        name,
        [triton_config.Tensor("embedding", "TYPE_FP32", (dim,))],
        cpu_parameters=embedding_parameters(max_length, cpu_runtime),
        gpu_parameters=embedding_parameters(max_length, "torch"),
        max_sequence_length=max_length,
    )


def export_embedding(model_dir: Path, repo: Path, name: str = MODEL_NAME, *, onnx: bool = True) -> dict[str, Any]:
    """Write ``<repo>/<name>/<next version>/`` (weights, tokenizer, model.py, card) and update the manifest.

    ``onnx``: also ``model.onnx`` (:mod:`textpulse.recsys.export`, checked against torch), what the
    service serves in-process without torch; ``False`` only for folders without weights (tests).
    """
    config = json.loads((model_dir / "config.json").read_text("utf-8"))
    meta = config.get("textpulse") or {}
    root = repo / name
    version = next_version(root)
    staging = root / f".{version}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for path in model_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, staging / path.name)
        elif path.name == RANKER_DIR and path.is_dir():
            shutil.copytree(path, staging / RANKER_DIR)
    template = resources.files("textpulse.recsys.triton").joinpath("model.py")
    (staging / "model.py").write_text(template.read_text("utf-8"), "utf-8")
    onnx_diff = None
    if onnx:
        from textpulse.recsys.embed import ONNX_FILE
        from textpulse.recsys.export import export_onnx

        onnx_diff = export_onnx(model_dir, staging / ONNX_FILE)
    for path in staging.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    staging.rename(root / str(version))
    dim, max_length = int(config["hidden_size"]), int(meta.get("max_length", 64))
    write_embedding_configs(root, name, dim, max_length, "onnx" if onnx_diff is not None else "torch")
    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    ranker_path = model_dir / RANKER_DIR / "metrics.json"
    ranker = json.loads(ranker_path.read_text("utf-8")) if ranker_path.is_file() else None
    entry = {
        "version": version,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(model_dir.resolve()),
        "task": "recommend",
        "kind": "embedding",
        "labels": [],
        "extra_heads": {},
        "outputs": ["embedding"],
        "embedding_dim": dim,
        "base_model": meta.get("base_model"),
        "parameters": meta.get("parameters"),
        "training_data": meta.get("train_data"),
        "dev_data": meta.get("dev_data"),
        "data_licence": meta.get("data_licence"),
        "metrics": metrics.get("dev", {}),
        "oos_threshold": None,
        "onnx": "model.onnx" if onnx_diff is not None else None,
        "onnx_max_abs_diff": onnx_diff,
        "ranker": {"files": f"{version}/{RANKER_DIR}", "dev": ranker["dev"]} if ranker else None,
    }
    _update_manifest(repo, name, entry)
    return entry


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def main(
    pairs: Annotated[int, typer.Option(help="Contrastive pairs (0: all of the train part).")] = 1500,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs.")] = 1,
    hard_negatives: Annotated[int, typer.Option(help="Hard negatives per pair (the user's own unliked items).")] = 0,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option()] = 3e-5,
    max_length: Annotated[int, typer.Option()] = 48,
    train_layers: Annotated[int, typer.Option(help="Top layers fine-tuned.")] = 3,
    seed: Annotated[int, typer.Option()] = 13,
    threads: Annotated[int, typer.Option(help="Torch threads.")] = 2,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    out_dir: Annotated[
        Path | None,
        typer.Option(help="Training folder (default .cache/models/recommend-<time>); rerun with it to resume."),
    ] = None,
    export: Annotated[bool, typer.Option(help="Export to the model repository after training.")] = True,
    repo: Annotated[Path | None, typer.Option(help="Model repository (default TEXTPULSE_MODEL_REPO).")] = None,
    ranker: Annotated[bool, typer.Option(help="Train the LambdaRank ranker after the encoder.")] = True,
    ranker_only: Annotated[
        bool, typer.Option(help="Only (re)train the ranker of the latest export, in its folder.")
    ] = False,
    ease_lambda: Annotated[float, typer.Option(help="EASE λ of the ranker's EASE feature.")] = 100.0,
) -> None:
    """Train the recommend bi-encoder (and its ranker) on the MovieLens temporal dev-train split and export it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = MLSettings()
    if ranker_only:
        from textpulse.inference.codec import resolve_version

        version_dir = resolve_version(repo or settings.model_repo, MODEL_NAME)
        metrics = train_ranker_for(version_dir, max_length=max_length, ease_lambda=ease_lambda)
        typer.echo(json.dumps({"ranker_dir": str(version_dir / RANKER_DIR), **metrics}, indent=2))
        return
    config = TrainConfig(
        pairs=pairs or None,
        epochs=epochs,
        hard_negatives=hard_negatives,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        train_layers=train_layers,
        seed=seed,
        threads=threads,
        checkpoint_every=checkpoint_every,
    )
    out = out_dir or settings.models_dir / f"recommend-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train(config, out)
    typer.echo(json.dumps({"model_dir": str(out), **metrics}, indent=2))
    if ranker:
        ranker_metrics = train_ranker_for(
            out, dev_fraction=config.dev_fraction, max_length=max_length, ease_lambda=ease_lambda, threads=threads
        )
        typer.echo(json.dumps({"ranker": ranker_metrics}, indent=2))
    if export:
        entry = export_embedding(out, repo or settings.model_repo)
        typer.echo(f"exported recommend version {entry['version']} to {repo or settings.model_repo}")


if __name__ == "__main__":
    cli()
