"""Precision table of the served models: fp32 / int8 / bf16 x {torch, ONNX Runtime} (``make bench-int8``).

For each served model (sentiment, topic, intent, NER by default; every head of a
multi-head model) in the model repository, in one run and one process:

* the dev split each head was trained against (rebuilt from the model's own
  ``training_config.json``: same file, fraction, seed and limit; an extra head's
  from its task preset, as training did), scored with every runtime x precision:
  accuracy and macro-F1, or entity-level micro/weighted F1 for NER;
* quality cost against torch FP32 (the reference every other row is compared with),
  in points (the largest drop over the head's metrics), and the share of dev
  predictions (word tags for NER) that agree with torch FP32;
* batched throughput (sentences/s, batches of 32 sorted by length, the in-process
  backend's way) of each runtime on the same dev texts, alternating runtimes over
  ``--rounds`` rounds and taking each one's median.

Runtimes: ``torch`` fp32 / int8 (``quantize_dynamic`` of every Linear) / bf16 (weights
cast; AVX512-BF16 where the CPU has it), ``onnx`` fp32 (``model.opt.onnx``, fused) /
int8 (``model.int8.onnx``, VNNI). ONNX Runtime has no CPU bf16 kernels for these ops,
so onnx/bf16 is listed as not runnable.

Rule printed at the end: a model's default is the fastest runtime/precision whose
quality cost is at most 1 point on every head; an int8 run must also give the reference's
label on at least 97 % of the dev predictions of every head (``--record`` refuses it
otherwise and says which head fell short). ``--record`` writes each model's
per-runtime winner to ``<version>/serving.json``, which the in-process backend serves
when ``TEXTPULSE_LOCAL_PRECISION`` is unset (``--from-json`` records an earlier run). Dev figures are dev figures (the
official test splits are held out). Results go to ``.run/bench/int8.json``. Not a
timed test. Version folders exported before ``model.opt.onnx`` existed get their ORT
graphs added first (``textpulse runtime-graphs``; files are only added).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from textpulse.inference.codec import length_sorted_chunks
from textpulse.ml.config import TrainConfig, resolve_task
from textpulse.ml.evaluate import evaluate_sequence, evaluate_token, sequence_probs, token_predictions
from textpulse.ml.onnx_runtime import OPT_FILE, SERVING_FILE, add_runtime_graphs
from textpulse.ml.predictor import Predictor, resolve_model_dir
from textpulse.ml.train import dev_examples_for, load_data

from bench.common import REPO, console, table

#: (runtime, precision); the first is the reference the quality cost is measured against
CONFIGS: tuple[tuple[str, str], ...] = (
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("torch", "int8"),
    ("onnx", "fp32"),
    ("onnx", "int8"),
)
REFERENCE = CONFIGS[0]
#: quality cost (points) a faster precision may have and still be the default
MAX_COST_POINTS = 1.0
#: share of dev predictions (word tags for NER) an int8 row must give the same label as the
#: reference on every head to be recorded as a default (issue #20's parity rule). A separate
#: guard from the cost: a head can keep its macro-F1 while flipping labels both ways.
MIN_INT8_AGREEMENT = 0.97
BATCH = 32


def label(config: tuple[str, str]) -> str:
    return f"{config[0]}/{config[1]}"


def train_config(version_dir: Path) -> TrainConfig:
    raw = json.loads((version_dir / "training_config.json").read_text("utf-8"))
    fields = set(TrainConfig.model_fields)
    return TrainConfig(**{k: v for k, v in raw.items() if k in fields})


def dev_sets(version_dir: Path, dev_limit: int | None) -> list[tuple[str, str, list[Any]]]:
    """(head, kind, dev examples) per head: ``""`` is the primary head, then each extra task's."""
    config = train_config(version_dir)
    examples = list(dev_examples_for(config))
    kind = "token" if examples and hasattr(examples[0], "tags") else "sequence"
    heads = [("", kind, examples[:dev_limit])]
    for requested in config.extra_tasks:
        # the same per-task config training used (train._prepare_tasks): files from the task preset
        name, preset = resolve_task(requested)
        overrides = {
            key: value
            for requested_name, data in config.extra_task_data.items()
            if resolve_task(requested_name)[0] == name
            for key, value in data.model_dump(exclude_unset=True).items()
        }
        task_config = config.model_copy(update={"train_file": None, "dev_file": None, "carve_dev": None, **overrides})
        heads.append((name, "sequence", list(load_data(task_config, preset)[1])[:dev_limit]))
    return heads


def head_logits(predictor: Predictor, head: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if not head:
        return predictor.logits
    return lambda ids, mask: predictor.all_logits(ids, mask)[f"logits_{head}"]


def score(predictor: Predictor, head: str, kind: str, examples: list[Any]) -> tuple[dict[str, float], list[str]]:
    """Headline dev metrics and the flat list of predicted labels (word tags for NER)."""
    labels = predictor.extra_heads[head] if head else predictor.labels
    logits_fn = head_logits(predictor, head)
    if kind == "token":
        tags = token_predictions(logits_fn, predictor.tokenizer, examples, labels, predictor.max_length)
        metrics = evaluate_token(tags, examples)
        return {k: float(metrics[k]) for k in ("micro_f1", "weighted_f1")}, [t for row in tags for t in row]
    probs = sequence_probs(logits_fn, predictor.tokenizer, examples, labels, predictor.max_length)
    metrics, predicted = evaluate_sequence(probs, examples, labels)
    return {k: float(metrics[k]) for k in ("accuracy", "macro_f1")}, predicted


def throughput(predictor: Predictor, texts: list[str]) -> float:
    """Sentences/s: tokenise + one forward pass serving every head, batches of 32 sorted by length."""
    started = time.perf_counter()
    for chunk in length_sorted_chunks(texts, BATCH):
        batch = predictor.encode([texts[i] for i in chunk])
        predictor.all_logits(batch.input_ids, batch.attention_mask)
    return len(texts) / (time.perf_counter() - started)


def text_of(example: Any) -> str:
    """A sequence example's text, or a token example's tokens joined as the model sees them."""
    return example.text() if callable(example.text) else str(example.text)


def eligible(result: dict[str, Any]) -> set[str]:
    """The runs of a model that may be its default: cost <= MAX_COST_POINTS on every head, and
    int8 runs only with agreement >= MIN_INT8_AGREEMENT on every head."""
    return {
        k
        for k in result["sentences_per_s"]
        if all(h["runs"][k]["cost_points"] <= MAX_COST_POINTS for h in result["heads"])
        and (not k.endswith("/int8") or all(h["runs"][k]["agreement"] >= MIN_INT8_AGREEMENT for h in result["heads"]))
    }


def refused_int8(result: dict[str, Any]) -> list[str]:
    """``runtime/int8 on head (agreement)`` for every head whose int8 agreement is below the bar."""
    return [
        f"{k} on {h['head']} ({h['runs'][k]['agreement']:.1%} agreement)"
        for k in result["sentences_per_s"]
        if k.endswith("/int8")
        for h in result["heads"]
        if h["runs"][k]["agreement"] < MIN_INT8_AGREEMENT
    ]


def run(
    repo: Path, models: list[str], threads: int, rounds: int, speed_texts: int, dev_limit: int | None
) -> list[dict[str, Any]]:
    results = []
    for name in models:
        version_dir = resolve_model_dir(repo / name)
        if not (version_dir / OPT_FILE).is_file():
            console.print(f"{name}: adding ORT graphs to {version_dir}")
            add_runtime_graphs(version_dir)
        heads = dev_sets(version_dir, dev_limit)
        primary = str(train_config(version_dir).task)  # the primary head is named by its task
        console.print(f"{name}: heads {[h or primary for h, _, _ in heads]} from {version_dir}")
        predictors = {
            config: Predictor(version_dir, backend=config[0], precision=config[1], threads=threads, batch_size=BATCH)  # type: ignore[arg-type]
            for config in CONFIGS
        }
        head_results = []
        for head, kind, examples in heads:
            scored = {config: score(p, head, kind, examples) for config, p in predictors.items()}
            ref_metrics, ref_labels = scored[REFERENCE]
            rows = {}
            for config, (metrics, predicted) in scored.items():
                agree = sum(a == b for a, b in zip(ref_labels, predicted, strict=True)) / max(1, len(ref_labels))
                cost = max(100 * (ref_metrics[k] - metrics[k]) for k in ref_metrics)
                rows[label(config)] = {"metrics": metrics, "agreement": agree, "cost_points": cost}
            head_results.append({"head": head or primary, "kind": kind, "dev_examples": len(examples), "runs": rows})
        texts = [text_of(e) for e in heads[0][2]]
        texts = [texts[i % len(texts)] for i in range(speed_texts)]
        for p in predictors.values():
            throughput(p, texts[:BATCH])  # warm-up
        rates: dict[str, list[float]] = {label(c): [] for c in CONFIGS}
        for _ in range(rounds):
            for config, p in predictors.items():
                rates[label(config)].append(throughput(p, texts))
        speed = {k: statistics.median(v) for k, v in rates.items()}
        result: dict[str, Any] = {"model": name, "heads": head_results, "sentences_per_s": speed}
        result["default"] = max(eligible(result), key=lambda k: speed[k])
        results.append(result)
        del predictors
    return results


def report(results: list[dict[str, Any]], threads: int, speed_texts: int) -> None:
    names = [label(c) for c in CONFIGS]
    rows = []
    for r in results:
        speed = r["sentences_per_s"]
        ref = speed[label(REFERENCE)]
        rows.append((f"{r['model']} sentences/s", *(f"{speed[n]:,.1f} ({speed[n] / ref:.2f}x)" for n in names), "n/a"))
        for h in r["heads"]:
            runs = h["runs"]
            rows.extend(
                (f"  {h['head']} {key}", *(f"{runs[n]['metrics'][key]:.4f}" for n in names), "n/a")
                for key in runs[label(REFERENCE)]["metrics"]
            )
            rows.append((f"  {h['head']} cost (points)", *(f"{runs[n]['cost_points']:+.2f}" for n in names), "n/a"))
            rows.append((f"  {h['head']} agreement", *(f"{runs[n]['agreement']:.1%}" for n in names), "n/a"))
        rows.append((f"{r['model']} default (rule)", *("<--" if n == r["default"] else "" for n in names), ""))
    console.print(
        table(
            f"Precision x runtime ({threads} threads, batch {BATCH}, {speed_texts} texts per speed round; "
            f"quality on dev splits vs torch/fp32)",
            rows,
            ("measure", *names, "onnx/bf16"),
        )
    )
    console.print("onnx/bf16: not runnable (ONNX Runtime's CPU provider has no bf16 MatMul/Attention/LayerNorm)")
    for r in results:
        console.print(
            f"{r['model']}: default {r['default']} (fastest with quality cost <= {MAX_COST_POINTS:g} point on every "
            f"head, int8 only with >= {MIN_INT8_AGREEMENT:.0%} label agreement)"
        )
        if refused := refused_int8(r):
            console.print(f"{r['model']}: int8 not eligible: {', '.join(refused)}")
    overall = set.intersection(*(eligible(r) for r in results))
    if overall:
        best = max(
            overall,
            key=lambda k: min(r["sentences_per_s"][k] / r["sentences_per_s"][label(REFERENCE)] for r in results),
        )
        console.print(f"one setting for every model: {best} (TEXTPULSE_LOCAL_RUNTIME / TEXTPULSE_LOCAL_PRECISION)")


def record(repo: Path, results: list[dict[str, Any]]) -> None:
    """Write each model's measured default per runtime into its version folder (``serving.json``)."""
    for r in results:
        version_dir = resolve_model_dir(repo / r["model"])
        ok = eligible(r)
        if refused := refused_int8(r):
            console.print(f"{r['model']}: int8 refused, below {MIN_INT8_AGREEMENT:.0%} agreement: {', '.join(refused)}")
        defaults = {}
        # the default runtime only: an explicit TEXTPULSE_LOCAL_RUNTIME=torch keeps meaning fp32 (bench_pipeline)
        for runtime in ("onnx",):
            mine = [k for k in ok if k.startswith(f"{runtime}/")]
            defaults[runtime] = max(mine, key=lambda k: r["sentences_per_s"][k]).split("/")[1] if mine else "fp32"
        serving = {
            "defaults": defaults,
            "rule": (
                f"fastest precision with dev quality cost <= {MAX_COST_POINTS:g} point on every head, int8 only "
                f"with >= {MIN_INT8_AGREEMENT:.0%} label agreement with the reference on every head (bench_int8)"
            ),
            "sentences_per_s": r["sentences_per_s"],
            "cost_points": {h["head"]: {k: v["cost_points"] for k, v in h["runs"].items()} for h in r["heads"]},
            "agreement": {h["head"]: {k: v["agreement"] for k, v in h["runs"].items()} for h in r["heads"]},
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (version_dir / SERVING_FILE).write_text(json.dumps(serving, indent=2) + "\n", "utf-8")
        console.print(f"{r['model']}: recorded {defaults} in {version_dir / SERVING_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model-repo",
        type=Path,
        default=Path(os.environ.get("TEXTPULSE_MODEL_REPO", REPO / ".cache" / "model-repo")),
        help="model repository (default TEXTPULSE_MODEL_REPO, else .cache/model-repo)",
    )
    parser.add_argument(
        "--models",
        default="sentiment,topic,intent,ner,finance,support",
        help="comma-separated model names (those absent from the repository are skipped with a note)",
    )
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds per runtime (alternating)")
    parser.add_argument("--speed-texts", type=int, default=512, help="dev texts per throughput round")
    parser.add_argument("--dev-limit", type=int, default=None, help="score at most this many dev examples per head")
    parser.add_argument(
        "--record", action="store_true", help=f"write each model's measured default precision to {SERVING_FILE}"
    )
    parser.add_argument("--from-json", type=Path, help="record from an earlier run's JSON instead of measuring")
    parser.add_argument(
        "--runtimes",
        default="torch,onnx",
        help="runtimes compared (onnx alone: the served runtime only, onnx/fp32 the reference; what make models runs)",
    )
    args = parser.parse_args()
    wanted = {r.strip() for r in args.runtimes.split(",") if r.strip()}
    global CONFIGS, REFERENCE  # noqa: PLW0603 - one run compares one set of configs
    CONFIGS = tuple(c for c in CONFIGS if c[0] in wanted)
    if not CONFIGS or (("onnx", "fp32") not in CONFIGS and ("torch", "fp32") not in CONFIGS):
        parser.error(f"--runtimes {args.runtimes!r}: choose from torch, onnx")
    REFERENCE = CONFIGS[0]
    if args.from_json:
        record(args.model_repo, json.loads(args.from_json.read_text("utf-8"))["results"])
        return
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    present = [m for m in models if (args.model_repo / m).is_dir()]
    if not present:
        parser.error(f"{args.model_repo} has none of {models}: run `make models` or pass --model-repo")
    if absent := [m for m in models if m not in present]:
        console.print(f"not in {args.model_repo}, skipped: {absent}")
    results = run(args.model_repo, present, args.threads, args.rounds, args.speed_texts, args.dev_limit)
    report(results, args.threads, args.speed_texts)
    if args.record:
        record(args.model_repo, results)
    out = REPO / ".run" / "bench" / "int8.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "results": results}, indent=2, default=float))
    console.print(f"written {out}")


if __name__ == "__main__":
    main()
