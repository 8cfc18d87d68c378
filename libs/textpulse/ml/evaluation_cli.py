"""Implementations behind ``eval``, ``bench`` and ``report`` (imported lazily by the CLI)."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from textpulse.datasets import (
    TextExample,
    TokenExample,
    label_names,
    load_text_examples,
    load_token_examples,
    resolve_path,
)
from textpulse.datasets.loaders import DEFAULT_FILES
from textpulse.ml.config import TASK_ALIASES, TASKS, TaskPreset, resolve_task
from textpulse.ml.evaluate import (
    confusion_png,
    evaluate_sequence,
    evaluate_token,
    sequence_probs,
    token_confusion_inputs,
    token_predictions,
    unknown_labels,
)
from textpulse.ml.modelcard import render_model_card
from textpulse.ml.predictor import Predictor, resolve_model_dir
from textpulse.ml.settings import MLSettings
from textpulse.ml.social import model_text

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np

log = logging.getLogger(__name__)
_Example = TypeVar("_Example")

#: The issue's targets (measured there on the held-out official test splits).
TARGETS: dict[str, tuple[str, str, str]] = {
    "sentiment": ("FinBERT-tone 110M: acc 0.884", "acc >= 0.89, macro-F1 >= 0.86", "accuracy,macro_f1"),
    "phrasebank": ("FinBERT 110M: acc 0.86, F1 0.84", "acc >= 0.87", "accuracy,macro_f1"),
    "topic": ("FinBERT-tone: acc 0.911", "acc >= 0.915", "accuracy,macro_f1"),
    "banking77": ("BERT-base: acc ~0.93", "acc >= 0.935", "accuracy,macro_f1"),
    "clinc150": ("DistilBERT: 0.917", "in-scope acc >= 0.95, oos recall >= 0.6", "in_scope_accuracy,oos_recall"),
    "finer_ord": ("BERT-base 0.693, RoBERTa-large 0.765", "weighted F1 >= 0.77", "weighted_f1,micro_f1"),
    "wnut17": ("BERT-base ~0.47", "entity F1 >= 0.50", "micro_f1,weighted_f1"),
}


class EvalError(ValueError):
    """A request ``eval`` refuses; the CLI prints it as one line and exits with code 2."""


@dataclass(frozen=True, slots=True)
class Head:
    """One output head of a model, named by the task it was trained for."""

    name: str
    labels: list[str]
    output: str  # Triton/ONNX output name: ``logits`` or ``logits_<name>``
    primary: bool


BACKENDS = ("torch", "torch-int8", "onnx")
#: Staged CSVs whose ``label`` column holds ids into the data set's label list.
_ID_LABELLED = frozenset({"twitter_fin_sentiment", "twitter_fin_topic"})
_JSON_LINES = frozenset({".jsonl", ".ndjson"})
_SHOWN = 20  # labels listed in one error line before "... and N more"


@dataclass(slots=True)
class _Gold:
    """The labelled examples of one file: text rows (sequence tasks) or sentences (token tasks)."""

    texts: list[TextExample]
    sentences: list[TokenExample]
    labels: list[str]  # every gold label (token tasks: every word's tag)
    unlabelled: int
    split: str | None


def run_eval(
    task: str,
    model: Path,
    data: str,
    *,
    head: str | None = None,
    split: str | None = None,
    out: Path | None = None,
    backend: str = "torch",
    batch_size: int = 64,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score one head of a model on a labelled file; write the PNG, card and metrics to ``out``.

    Refuses (:class:`EvalError`) a model or head trained for another task, gold labels
    outside the head's label set and an ``out`` inside the model or its repository;
    without ``out`` the results go to a fresh temporary directory.
    """
    if backend not in BACKENDS:
        msg = f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        raise EvalError(msg)
    try:
        canonical, preset = resolve_task(task)
    except KeyError as exc:
        raise EvalError(str(exc.args[0])) from None
    path = _data_file(data, preset)
    _check_format(path, canonical, preset, split)
    predictor = _load_predictor(model, out, backend=backend, threads=threads, batch_size=batch_size)
    chosen = select_head(canonical, model_heads(predictor), head, predictor.directory)
    _refuse_trained_file(path, predictor.meta)
    gold = _load_gold(path, canonical, preset, split)
    unknown = unknown_labels(gold.labels, chosen.labels)
    if unknown:
        msg = (
            f"{path}: {len(unknown)} gold label(s) outside the label set of head {chosen.name!r}: "
            f"{_listing([f'{label!r} ({count}x)' for label, count in unknown.items()])}; "
            f"the head knows {len(chosen.labels)}: {_listing(chosen.labels)}"
        )
        raise EvalError(msg)

    started = time.perf_counter()
    metrics, y_true, y_pred = _score(predictor, chosen, preset, gold, batch_size)
    seconds = time.perf_counter() - started

    target = out if out is not None else Path(tempfile.mkdtemp(prefix=f"textpulse-eval-{chosen.name}-"))
    target.mkdir(parents=True, exist_ok=True)
    confusion_png(y_true, y_pred, chosen.labels, target / "confusion_matrix.png")
    card = render_model_card(
        chosen.name,
        _head_meta(predictor.meta, chosen),
        metrics,
        evaluation_data=f"`{path}`" + (f" split `{gold.split}`" if gold.split else ""),
    )
    (target / "README.md").write_text(card, "utf-8")
    (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    log.info("wrote the confusion matrix, model card and metrics to %s", target)
    return {
        "task": canonical,
        "head": chosen.name,
        "model": str(predictor.directory),
        "backend": backend,
        "data": str(path),
        "split": gold.split,
        "examples": len(gold.sentences) if preset.kind == "token" else len(gold.texts),
        "unlabelled_skipped": gold.unlabelled,
        "seconds": round(seconds, 2),
        "metrics": metrics,
        "out": str(target),
        "confusion_matrix": str(target / "confusion_matrix.png"),
        "model_card": str(target / "README.md"),
        "metrics_file": str(target / "metrics.json"),
    }


def _load_predictor(model: Path, out: Path | None, *, backend: str, threads: int | None, batch_size: int) -> Predictor:
    """Load the model after the cheap checks (folder layout, ``out``, ONNX file present)."""
    try:
        directory = resolve_model_dir(model)
    except FileNotFoundError as exc:
        raise EvalError(str(exc)) from None
    if out is not None:
        _check_out(out, model, directory)
    if backend == "onnx" and not (directory / "model.onnx").is_file():
        msg = f"{directory} has no model.onnx (export it with `textpulse export`, or use --backend torch)"
        raise EvalError(msg)
    try:
        return Predictor(directory, backend=backend, threads=threads, batch_size=batch_size)  # type: ignore[arg-type]
    except (OSError, ValueError) as exc:
        msg = f"cannot load {directory} as a textpulse model: {exc}"
        raise EvalError(_one_line(msg)) from None


def _load_gold(path: Path, task: str, preset: TaskPreset, split: str | None) -> _Gold:
    if preset.kind == "token":
        tag_format = _token_spec(path, preset)
        if tag_format == "finer_ord":
            _check_label_ids(path, "gold_label", tag_format)
        sentences = _read(path, lambda: load_token_examples(path, dataset=tag_format))
        gold = _Gold([], sentences, [t for e in sentences for t in e.tags], 0, None)
    else:
        if preset.dataset == "clinc150" and path.suffix.lower() == ".json":
            split = split or _default_clinc_split(path)
        spec = _text_spec(path, preset, split)
        if spec in _ID_LABELLED:
            _check_label_ids(path, "label", spec)
        loaded = _read(path, lambda: load_text_examples(path, dataset=spec))
        texts = [e for e in loaded if e.label is not None]
        gold = _Gold(texts, [], [e.label or "" for e in texts], len(loaded) - len(texts), split)
    if not gold.labels:
        msg = f"{path} holds no labelled {task} examples"
        raise EvalError(msg)
    return gold


def _score(
    predictor: Predictor, head: Head, preset: TaskPreset, gold: _Gold, batch_size: int
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Metrics and the flat (true, predicted) labels of the confusion matrix."""
    logits_fn = predictor.logits if head.primary else _head_logits(predictor, head.output)
    if preset.kind == "token":
        predictions = token_predictions(
            logits_fn, predictor.tokenizer, gold.sentences, head.labels, predictor.max_length, batch_size
        )
        y_true, y_pred = token_confusion_inputs(predictions, gold.sentences)
        return evaluate_token(predictions, gold.sentences), y_true, y_pred
    # the text the model was trained on (its own normalisation), labels untouched
    shown = [dataclasses.replace(e, text=model_text(e.text, predictor.normalisation)) for e in gold.texts]
    probs = sequence_probs(logits_fn, predictor.tokenizer, shown, head.labels, predictor.max_length, batch_size)
    # the dev-calibrated out-of-scope threshold is saved for the primary head only
    threshold = predictor.oos_threshold if head.primary else None
    floor = predictor.meta.get("oos_min_recall") if head.primary else None  # oos_score as training selected on
    metrics, y_pred = evaluate_sequence(probs, gold.texts, head.labels, preset.oos_label, threshold, floor)
    return metrics, gold.labels, y_pred


def model_task(predictor: Predictor) -> str:
    """The task the model's primary head was trained for (config.json, else training_config.json)."""
    task = predictor.meta.get("task")
    if not task:
        saved = predictor.directory / "training_config.json"
        if saved.is_file():
            task = json.loads(saved.read_text("utf-8")).get("task")
    if not task:
        dataset = predictor.meta.get("dataset")
        task = next((name for name, preset in TASKS.items() if preset.dataset == dataset), None)
    if not task:
        msg = (
            f"cannot tell which task {predictor.directory} was trained for"
            " (no task in config.json or training_config.json)"
        )
        raise EvalError(msg)
    return str(task)


def model_heads(predictor: Predictor) -> dict[str, Head]:
    """Every head of the model by task name: the primary head, then the extra heads by name."""
    primary = model_task(predictor)
    heads = {primary: Head(primary, predictor.labels, "logits", primary=True)}
    for name, labels in sorted(predictor.extra_heads.items()):
        heads.setdefault(name, Head(name, list(labels), f"logits_{name}", primary=False))
    return heads


def select_head(task: str, heads: dict[str, Head], head: str | None, directory: Path) -> Head:
    """The head to score for ``task``: ``head`` when given, else the one trained for ``task``.

    Either way the head must have been trained for ``task``: scoring it on another task's
    data yields figures that mean nothing.
    """
    names = ", ".join(heads)
    if head is None:
        if task in heads:
            return heads[task]
        msg = f"{directory} was trained for {_trained_for(heads)}, not {task}; score it with its own task's data"
        raise EvalError(msg)
    wanted = TASK_ALIASES.get(head, head)
    if wanted not in heads:
        msg = f"{directory} has no head {head!r}; its heads: {names}"
        raise EvalError(msg)
    if wanted != task:
        msg = f"head {wanted!r} of {directory} was trained for {wanted}, not {task}; pass task {wanted} to score it"
        raise EvalError(msg)
    return heads[wanted]


def _trained_for(heads: dict[str, Head]) -> str:
    names = list(heads)
    return names[0] if len(names) == 1 else f"{names[0]} (heads: {', '.join(names)})"


def _head_logits(predictor: Predictor, output: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Logits of one extra head (one encoder pass serves every head; the others are dropped)."""

    def run(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return predictor.all_logits(input_ids, attention_mask)[output]

    return run


def _head_meta(meta: dict[str, Any], head: Head) -> dict[str, Any]:
    """Model-card metadata of one head: an extra head has its own task, labels and data."""
    if head.primary:
        return meta | {"labels": head.labels}
    extra: dict[str, Any] = dict((meta.get("extra_heads_meta") or {}).get(head.name) or {})
    return meta | extra | {"task": head.name, "labels": head.labels, "oos_threshold": None, "n_dev": "?"}


def _refuse_trained_file(path: Path, meta: dict[str, Any]) -> None:
    """Refuse a file the model was trained on as a mixed data set: its figures would flatter it.

    A token task's official dev file can be training data (``mix`` with ``dev_fraction: 0``), while
    the task preset still names it as the dev file, so ``--data wnut17/emerging.dev.conll`` looks
    like an honest evaluation.
    """
    for name, entry in (meta.get("mix") or {}).items():
        try:
            trained = resolve_path(entry.get("file") or "")
        except FileNotFoundError:
            continue
        if trained.is_file() and trained.resolve() == path.resolve():
            msg = (
                f"{path} is training data of this model (mix {name!r}: {entry.get('train_data')}); "
                "score it on a file it did not see"
            )
            raise EvalError(msg)


def _data_file(data: str, preset: TaskPreset) -> Path:
    """The labelled file to score; a data set folder means its default (staged) file."""
    try:
        path = resolve_path(data)
    except FileNotFoundError as exc:
        raise EvalError(str(exc)) from None
    if path.is_dir():
        default = path / DEFAULT_FILES.get(preset.dataset, "")
        if not default.is_file():
            msg = f"{path} is a folder; point --data at a labelled file"
            raise EvalError(msg)
        path = default
    return path


def _check_format(path: Path, task: str, preset: TaskPreset, split: str | None) -> None:
    """Refuse files this task cannot be read from, before any model is loaded."""
    suffix = path.suffix.lower()
    if split is not None and not (preset.dataset == "clinc150" and suffix == ".json"):
        msg = "--split selects a split of CLINC150's data_full.json (a .json file) only"
        raise EvalError(msg)
    if preset.kind == "token":
        if suffix == ".json" or suffix in _JSON_LINES:
            msg = f"{task} data must be CoNLL (token<TAB>tag lines){' or FiNER-ORD CSV' if task == 'finer_ord' else ''}"
            raise EvalError(msg)
        if suffix == ".csv" and preset.dataset != "finer_ord":
            msg = f"a .csv token file is read as FiNER-ORD (tag ids); give {task} data as CoNLL (token<TAB>tag lines)"
            raise EvalError(msg)
    elif suffix == ".json" and preset.dataset != "clinc150":
        msg = f".json data is CLINC150's data_full.json layout; give {task} data as .csv or .jsonl"
        raise EvalError(msg)
    elif suffix not in {".csv", ".json", *_JSON_LINES} and preset.dataset != "fin_phrasebank":
        msg = f"cannot read {path.name} as {task} data: use .csv (text,label) or .jsonl"
        raise EvalError(msg)


def _text_spec(path: Path, preset: TaskPreset, split: str | None) -> str:
    """The loader's data set spec for a sequence file, from its format (not only the task)."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return f"clinc150:{split}" if split else "clinc150"
    if suffix in _JSON_LINES:
        return "jsonl"
    if suffix == ".csv":
        # staged sentiment/topic CSVs hold label ids; a CSV of label names is read as generic text,label
        return preset.dataset if preset.dataset in _ID_LABELLED and _label_ids(path) else "csv"
    return preset.dataset  # Financial PhraseBank's sentence@label lines


def _token_spec(path: Path, preset: TaskPreset) -> str:
    """FiNER-ORD CSV for ``.csv``; CoNLL text for anything else (whatever the task)."""
    if path.suffix.lower() == ".csv":
        return "finer_ord"
    return "wnut17" if preset.dataset == "wnut17" else "conll"


def _label_ids(path: Path) -> bool:
    """Whether the CSV's ``label`` column holds integer ids (the staged tweet files)."""
    with path.open(encoding="utf-8", newline="") as handle:
        values = [(row.get("label") or "").strip() for row in csv.DictReader(handle)]
    present = [v for v in values if v]
    return bool(present) and all(v.isdigit() for v in present)


def _check_label_ids(path: Path, column: str, dataset: str) -> None:
    """Staged CSVs hold label ids: list those past the data set's label list (the loader would only crash)."""
    size = len(label_names(dataset))
    with path.open(encoding="utf-8", newline="") as handle:
        values = {(row.get(column) or "").strip() for row in csv.DictReader(handle)}
    outside = sorted(
        (v for v in values if v and not (v.isdigit() and int(v) < size)), key=lambda v: (not v.isdigit(), len(v), v)
    )
    if outside:
        msg = f"{path}: label ids outside {dataset}'s {size} labels: {_listing(outside)}"
        raise EvalError(msg)


def _read(path: Path, load: Callable[[], list[_Example]]) -> list[_Example]:
    """Run a loader, turning a malformed file into one line naming the file."""
    try:
        return load()
    except (KeyError, ValueError, IndexError) as exc:
        reason: object = exc
        if isinstance(exc, KeyError):
            key = exc.args[0] if exc.args else ""
            # the loaders raise KeyError with a sentence (missing split) or a bare missing column name
            reason = key if isinstance(key, str) and " " in key else f"missing column or key {key!r}"
        msg = f"cannot read {path} as labelled data: {reason}"
        raise EvalError(_one_line(msg)) from None


def _check_out(out: Path, model: Path, directory: Path) -> None:
    """Refuse an output folder inside the model or the repository it is served from."""
    target = out.resolve()
    for root in _served_roots(model, directory):
        if target == root or target.is_relative_to(root):
            msg = f"--out {out} is inside {root}; eval never writes into a model or model repository"
            raise EvalError(msg)


def _served_roots(model: Path, directory: Path) -> set[Path]:
    """The model folders and, for an exported model, its Triton repository (and the configured one)."""
    folders = (model.resolve(), directory.resolve())
    roots = set(folders)
    for folder in folders:
        # Triton layout: <repository>/<name>/config.pbtxt beside the numbered version folders
        for model_root in (folder, folder.parent):
            if (model_root / "config.pbtxt").is_file():
                roots.add(model_root.parent)
    roots.add(MLSettings().model_repo.resolve())
    return roots


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _default_clinc_split(path: Path) -> str:
    """Score ``test`` when the file has it (held-out copy), else ``val`` - never train by accident."""
    try:
        keys = json.loads(path.read_text("utf-8")).keys()
    except (ValueError, AttributeError) as exc:
        msg = f"cannot read {path} as CLINC150's data_full.json: {exc}"
        raise EvalError(_one_line(msg)) from None
    return "test" if "test" in keys else "val"


_SPEED_TEXTS = [
    "$TSLA shares slide 4% as deliveries miss analyst estimates https://t.co/xyz",
    "Fed's Powell says further rate hikes may be appropriate if inflation stays high",
    "How long does it take for a transfer to arrive from the US?",
    "Goldman Sachs appointed Jane Smith as head of its London trading desk on Monday",
]


def measure_speed(
    model: Path,
    *,
    batch_size: int = 32,
    batches: int = 8,
    backend: str = "torch",
    threads: int | None = None,
) -> dict[str, Any]:
    """Sentences per second at ``batch_size`` (tweet-length inputs) and parameter count."""
    predictor = Predictor(model, backend=backend, threads=threads, batch_size=batch_size)  # type: ignore[arg-type]
    texts = [_SPEED_TEXTS[i % len(_SPEED_TEXTS)] for i in range(batch_size)]
    encoded = predictor.encode(texts)
    predictor.logits(encoded.input_ids, encoded.attention_mask)  # warm-up
    started = time.perf_counter()
    for _ in range(batches):
        encoded = predictor.encode(texts)
        predictor.logits(encoded.input_ids, encoded.attention_mask)
    seconds = time.perf_counter() - started
    return {
        "model": str(predictor.directory),
        "backend": backend,
        "batch_size": batch_size,
        "sentences_per_second": round(batch_size * batches / seconds, 1),
        "parameters": predictor.meta.get("parameters"),
    }


def targets_report(models_dir: Path, *, speed: bool = True) -> str:
    """Markdown table: dev figures of each trained task beside the issue's targets."""
    rows = [
        "| task | dev metrics (dev split, not official test) | target (official test) | anchor | params"
        " | CPU sent/s @32 |",
        "|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        anchor, target, keys = TARGETS[task]
        metrics_path = models_dir / task / "metrics.json"
        if not metrics_path.is_file():
            rows.append(f"| {task} | (not trained) | {target} | {anchor} | | |")
            continue
        summary = json.loads(metrics_path.read_text("utf-8"))
        dev = summary.get("dev", {})
        figures = ", ".join(f"{k} {dev[k]:.3f}" for k in keys.split(",") if isinstance(dev.get(k), float))
        rate = measure_speed(models_dir / task)["sentences_per_second"] if speed else ""
        rows.append(f"| {task} | {figures} | {target} | {anchor} | {summary.get('parameters', '')} | {rate} |")
    return "\n".join(rows)
