"""Implementations behind ``eval``, ``bench`` and ``report`` (imported lazily by the CLI)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from textpulse.datasets import load_text_examples, load_token_examples, resolve_path
from textpulse.ml.config import TASKS, resolve_task
from textpulse.ml.evaluate import (
    confusion_png,
    evaluate_sequence,
    evaluate_token,
    sequence_probs,
    token_confusion_inputs,
    token_predictions,
)
from textpulse.ml.modelcard import render_model_card
from textpulse.ml.predictor import Predictor

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


def run_eval(
    task: str,
    model: Path,
    data: str,
    *,
    split: str | None = None,
    out: Path | None = None,
    backend: str = "torch",
    batch_size: int = 64,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score a model on a labelled file; write ``confusion_matrix.png`` and ``README.md`` to ``out``."""
    canonical, preset = resolve_task(task)
    predictor = Predictor(model, backend=backend, threads=threads, batch_size=batch_size)  # type: ignore[arg-type]
    path = resolve_path(data)
    generic = path.suffix in {".jsonl", ".ndjson"}
    labels = predictor.labels
    started = time.perf_counter()
    if preset.kind == "token":
        token_examples = load_token_examples(path, dataset=preset.dataset)
        predictions = token_predictions(
            predictor.logits,
            predictor.tokenizer,
            token_examples,
            labels,
            predictor.max_length,
            batch_size,
        )
        metrics = evaluate_token(predictions, token_examples)
        y_true, y_pred = token_confusion_inputs(predictions, token_examples)
        count = len(token_examples)
    else:
        if split is None and preset.dataset == "clinc150" and path.suffix == ".json":
            split = _default_clinc_split(path)
        spec = None if generic else (f"{preset.dataset}:{split}" if split else preset.dataset)
        text_examples = [e for e in load_text_examples(path, dataset=spec) if e.label is not None]
        probs = sequence_probs(
            predictor.logits, predictor.tokenizer, text_examples, labels, predictor.max_length, batch_size
        )
        metrics, y_pred = evaluate_sequence(probs, text_examples, labels, preset.oos_label, predictor.oos_threshold)
        y_true = [e.label or "" for e in text_examples]
        count = len(text_examples)
    seconds = time.perf_counter() - started
    target = out or predictor.directory / f"eval-{path.stem}{'-' + split if split else ''}"
    target.mkdir(parents=True, exist_ok=True)
    confusion_png(y_true, y_pred, labels, target / "confusion_matrix.png")
    meta = predictor.meta | {"labels": labels}
    card = render_model_card(
        canonical, meta, metrics, evaluation_data=f"`{path}`" + (f" split `{split}`" if split else "")
    )
    (target / "README.md").write_text(card, "utf-8")
    (target / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
    return {
        "task": canonical,
        "model": str(predictor.directory),
        "data": str(path),
        "split": split,
        "examples": count,
        "seconds": round(seconds, 2),
        "metrics": metrics,
        "confusion_matrix": str(target / "confusion_matrix.png"),
        "model_card": str(target / "README.md"),
    }


def _default_clinc_split(path: Path) -> str:
    """Score ``test`` when the file has it (held-out copy), else ``val`` - never train by accident."""
    keys = json.loads(path.read_text("utf-8")).keys()
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
