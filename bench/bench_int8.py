"""FP32 vs dynamic int8 serving of the pipeline's models (``make bench-int8``), on their dev splits.

For each served model (sentiment, topic, NER by default) in the model repository,
in one run and one process:

* the dev split the model was trained against (rebuilt from its own
  ``training_config.json``: same file, fraction, seed and limit), scored with
  ``torch`` (FP32) and ``torch-int8`` (``quantize_dynamic`` of every Linear layer,
  :func:`textpulse.ml.modeling.quantize_int8`): accuracy and macro-F1, or
  entity-level micro/weighted F1 for NER;
* the share of dev predictions whose label (word tag for NER) the two runtimes agree on;
* batched throughput (sentences/s, batches of 64 sorted by length, the in-process
  backend's way) of each runtime on the same dev texts, alternating runtimes
  over ``--rounds`` rounds and taking each one's median.

Dev figures are dev figures (the official test splits are held out). Results go
to ``.run/bench/int8.json``. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from textpulse.inference.codec import length_sorted_chunks
from textpulse.ml.config import TrainConfig
from textpulse.ml.evaluate import evaluate_sequence, evaluate_token, sequence_probs, token_predictions
from textpulse.ml.predictor import Predictor, resolve_model_dir
from textpulse.ml.train import dev_examples_for

from bench.common import REPO, console, table

RUNTIMES = ("torch", "torch-int8")


def dev_set(version_dir: Path) -> tuple[str, list[Any]]:
    """(kind, dev examples) of the config the model was trained with."""
    raw = json.loads((version_dir / "training_config.json").read_text("utf-8"))
    fields = set(TrainConfig.model_fields)
    config = TrainConfig(**{k: v for k, v in raw.items() if k in fields})
    examples = list(dev_examples_for(config))
    kind = "token" if examples and hasattr(examples[0], "tags") else "sequence"
    return kind, examples


def score(predictor: Predictor, kind: str, examples: list[Any]) -> tuple[dict[str, float], list[str]]:
    """Headline dev metrics and the flat list of predicted labels (word tags for NER)."""
    if kind == "token":
        tags = token_predictions(
            predictor.logits, predictor.tokenizer, examples, predictor.labels, predictor.max_length
        )
        metrics = evaluate_token(tags, examples)
        return {k: float(metrics[k]) for k in ("micro_f1", "weighted_f1")}, [t for row in tags for t in row]
    probs = sequence_probs(predictor.logits, predictor.tokenizer, examples, predictor.labels, predictor.max_length)
    metrics, predicted = evaluate_sequence(probs, examples, predictor.labels)
    return {k: float(metrics[k]) for k in ("accuracy", "macro_f1")}, predicted


def throughput(predictor: Predictor, texts: list[str]) -> float:
    """Sentences/s: tokenise + forward, batches of 64 sorted by length."""
    started = time.perf_counter()
    for chunk in length_sorted_chunks(texts, 64):
        batch = predictor.encode([texts[i] for i in chunk])
        predictor.logits(batch.input_ids, batch.attention_mask)
    return len(texts) / (time.perf_counter() - started)


def text_of(example: Any) -> str:
    """A sequence example's text, or a token example's tokens joined as the model sees them."""
    return example.text() if callable(example.text) else str(example.text)


def run(repo: Path, models: list[str], threads: int, rounds: int) -> list[dict[str, Any]]:
    results = []
    for name in models:
        version_dir = resolve_model_dir(repo / name)
        kind, examples = dev_set(version_dir)
        console.print(f"{name}: {len(examples)} dev examples ({kind}) from {version_dir}")
        predictors = {rt: Predictor(version_dir, backend=rt, threads=threads) for rt in RUNTIMES}  # type: ignore[arg-type]
        scored = {rt: score(p, kind, examples) for rt, p in predictors.items()}
        texts = [text_of(e) for e in examples]
        for p in predictors.values():
            throughput(p, texts[:64])  # warm-up
        rates: dict[str, list[float]] = {rt: [] for rt in RUNTIMES}
        for _ in range(rounds):
            for rt, p in predictors.items():
                rates[rt].append(throughput(p, texts))
        fp32, int8 = (scored[rt][1] for rt in RUNTIMES)
        results.append(
            {
                "model": name,
                "kind": kind,
                "dev_examples": len(examples),
                "metrics": {rt: scored[rt][0] for rt in RUNTIMES},
                "agreement": sum(a == b for a, b in zip(fp32, int8, strict=True)) / max(1, len(fp32)),
                "sentences_per_s": {rt: statistics.median(v) for rt, v in rates.items()},
            }
        )
    return results


def report(results: list[dict[str, Any]], threads: int) -> None:
    rows = []
    for r in results:
        m, speed = r["metrics"], r["sentences_per_s"]
        for key in m["torch"]:
            a, b = m["torch"][key], m["torch-int8"][key]
            rows.append((f"{r['model']} dev {key}", f"{a:.4f}", f"{b:.4f}", f"{b - a:+.4f}"))
        rows.append((f"{r['model']} label agreement", "", "", f"{r['agreement']:.1%}"))
        a, b = speed["torch"], speed["torch-int8"]
        rows.append((f"{r['model']} sentences/s (batch 64)", f"{a:,.1f}", f"{b:,.1f}", f"{b / a:.2f}x"))
    console.print(
        table(
            f"FP32 vs dynamic int8 ({threads} torch threads, dev splits)",
            rows,
            ("measure", "fp32", "int8", "int8 vs fp32"),
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-repo",
        type=Path,
        default=Path(os.environ.get("TEXTPULSE_MODEL_REPO", REPO / ".cache" / "model-repo")),
        help="model repository (default TEXTPULSE_MODEL_REPO, else .cache/model-repo)",
    )
    parser.add_argument("--models", default="sentiment,topic,ner", help="comma-separated model names")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per runtime (alternating)")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    missing = [m for m in models if not (args.model_repo / m).is_dir()]
    if missing:
        parser.error(f"{args.model_repo} lacks models {missing}: run `make models` or pass --model-repo")
    results = run(args.model_repo, models, args.threads, args.rounds)
    report(results, args.threads)
    out = REPO / ".run" / "bench" / "int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2, default=float))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
