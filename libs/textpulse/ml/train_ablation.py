"""Seeded ablation of the recipe levers: each variant x each seed on one task and one dev split.

``python -m textpulse.ml.train_ablation --profile PATH --out DIR --variant base --variant llrd=...``
trains every (seed, variant) pair in this process (seed-major, so a run cut short still has
whole seeds for every variant), appends one JSON line per run to ``DIR/results.jsonl`` (and
skips pairs already there, so it resumes), then prints a mean +- std table. Decisions follow
docs/models.md: a lever is adopted only when its mean gain over the baseline exceeds the seed
spread, because a dev split of a few hundred rows moves about 2 points between seeds.

``--holdout-fraction F`` (tasks with an out-of-scope label) first carves an evaluation split out of
the task's train file (near-duplicate aware, stratified, ``--holdout-seed``); the rest is written to
``DIR/train_pool.json`` and is all each run sees (its dev, calibration and train carves). Each
run's final model and oos threshold are then scored on the holdout, which no run used for any
choice, so variants that fit the threshold on different splits compare on the same unseen rows.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from textpulse.datasets import TextExample, dev_split, label_names, load_text_examples
from textpulse.ml.config import TrainConfig, load_config_file, resolve_task

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

app = typer.Typer(add_completion=False)


def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value,key=value`` (values parsed as JSON when possible)."""
    name, _, rest = spec.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            msg = f"variant {spec!r}: expected key=value, got {item!r}"
            raise ValueError(msg)
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return name, overrides


def scores(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """(variant, dev score) pairs. Checkpoint averaging never changes the training trajectory, only
    adds a candidate at the end, so a run with ``average_last > 1`` stands for two variants: its
    own name scored by the best single checkpoint, and ``name+avg`` by what selection kept."""
    pairs = []
    for row in rows:
        if row.get("averaged_score") is not None:
            pairs.append((row["variant"], float(row["single_best"])))
            pairs.append((row["variant"] + "+avg", float(row["score"])))
        else:
            pairs.append((row["variant"], float(row["score"])))
    return pairs


def summarise(rows: list[dict[str, Any]], baseline: str = "base") -> list[dict[str, Any]]:
    """Per variant: n, mean, sample std and the mean gain over ``baseline``."""
    by_variant: dict[str, list[float]] = {}
    for variant, score in scores(rows):
        by_variant.setdefault(variant, []).append(score)
    base = by_variant.get(baseline)
    base_mean = statistics.fmean(base) if base else None
    table = []
    for variant, values in by_variant.items():
        mean = statistics.fmean(values)
        table.append(
            {
                "variant": variant,
                "n": len(values),
                "mean": mean,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "gain": None if base_mean is None else mean - base_mean,
            }
        )
    return table


HOLDOUT_METRICS = ("in_scope_accuracy", "oos_recall", "oos_precision", "oos_f1")


def with_oos_f1(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` plus ``oos_f1`` (harmonic mean of oos precision and recall) when both are there."""
    if "oos_precision" not in metrics or "oos_recall" not in metrics:
        return metrics
    precision, recall = float(metrics["oos_precision"]), float(metrics["oos_recall"])
    return metrics | {"oos_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def holdout_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant (runs scored on a holdout): mean and std of each holdout metric, and the mean
    optimism of the dev figure over the holdout one (dev - holdout, same model and threshold)."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if "holdout" in row:
            by_variant.setdefault(row["variant"], []).append(row)
    table = []
    for variant, runs in by_variant.items():
        line: dict[str, Any] = {"variant": variant, "n": len(runs)}
        devs = [with_oos_f1(r["dev"]) for r in runs]
        for name in HOLDOUT_METRICS:
            values = [float(r["holdout"]["own"][name]) for r in runs]
            line[name] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
            if all(name in dev for dev in devs):
                line[f"{name}_optimism"] = statistics.fmean(
                    float(dev[name]) - value for dev, value in zip(devs, values, strict=True)
                )
        table.append(line)
    return table


def carve_holdout(task: str, fraction: float, seed: int, pool_path: Path) -> list[TextExample]:
    """Carve ``fraction`` of ``task``'s train rows as a scoring-only holdout; write the rest to ``pool_path``.

    The same near-duplicate grouping and label stratification as the dev carve, so no holdout row
    has a twin among the rows the runs train, pick checkpoints or calibrate on. The pool keeps the
    ``data_full.json`` layout (in-scope ``train`` + ``oos_train``, input order), so a run with
    ``train_file`` set to it carves dev and calibration from it exactly as from the original file.
    """
    name, preset = resolve_task(task)
    if preset.oos_label is None or preset.dataset != "clinc150":
        msg = f"--holdout-fraction supports CLINC150-format tasks with an out-of-scope label, not {name}"
        raise ValueError(msg)
    spec = f"{preset.dataset}:{preset.train_split}" if preset.train_split else preset.dataset
    pool, holdout = dev_split(load_text_examples(preset.train, dataset=spec), fraction, seed, stratify=True)
    layout: dict[str, list[list[str]]] = {"train": [], "oos_train": []}
    for example in pool:
        key = "oos_train" if example.label == preset.oos_label else "train"
        layout[key].append([example.text, example.label or ""])
    pool_path.parent.mkdir(parents=True, exist_ok=True)
    pool_path.write_text(json.dumps(layout), "utf-8")
    return holdout


def holdout_metrics(
    probs: np.ndarray,
    examples: Sequence[TextExample],
    labels: list[str],
    oos_label: str,
    threshold: float | None,
) -> dict[str, Any]:
    """In-scope accuracy, oos recall / precision / F1 (and the rest) at a threshold fitted elsewhere."""
    from textpulse.ml.evaluate import evaluate_sequence

    metrics, _ = evaluate_sequence(probs, examples, labels, oos_label, threshold)
    return with_oos_f1(metrics)


def _score_holdout(result: Any, holdout: list[TextExample], config: TrainConfig) -> dict[str, Any]:
    """The trained model's holdout metrics at its own threshold, plus the holdout's oracle threshold."""
    from textpulse.ml.evaluate import calibrate, sequence_probs
    from textpulse.ml.inference import torch_logits_fn
    from textpulse.ml.train import dev_examples_for

    _, preset = resolve_task(config.task)
    labels = label_names(preset.dataset)  # the primary head's order, as training built it
    oos = preset.oos_label or ""
    logits_fn = torch_logits_fn(result.model, "cpu")
    probs = sequence_probs(logits_fn, result.tokenizer, holdout, labels, config.max_length, config.eval_batch_size)
    own = holdout_metrics(probs, holdout, labels, oos, result.summary["dev"].get("oos_threshold"))
    # the threshold the holdout itself would pick (under the same rule): how much a fitted one leaves behind
    oracle_threshold = calibrate(probs, holdout, labels, oos, config.oos_min_recall)
    oracle = holdout_metrics(probs, holdout, labels, oos, oracle_threshold)
    # the same model with its threshold fitted on dev instead (what the run without a calibration
    # split does): a paired, same-model comparison of the two places to fit the threshold
    dev = [e for e in dev_examples_for(config) if isinstance(e, TextExample)]
    dev_probs = sequence_probs(logits_fn, result.tokenizer, dev, labels, config.max_length, config.eval_batch_size)
    dev_threshold = calibrate(dev_probs, dev, labels, oos, config.oos_min_recall)
    dev_fit = holdout_metrics(probs, holdout, labels, oos, dev_threshold)
    return {"own": own, "oracle": oracle, "dev_fit": dev_fit}


@app.command()
def main(
    profile: Annotated[Path, typer.Option(help="YAML/JSON TrainConfig fields shared by every variant.")],
    out: Annotated[Path, typer.Option(help="Results folder (results.jsonl; models are not kept).")],
    task: Annotated[str, typer.Option()] = "phrasebank",
    variant: Annotated[list[str] | None, typer.Option(help="name[:key=value,...]; repeatable.")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Training seeds (repeatable); dev carve stays fixed.")] = None,
    metric: Annotated[str, typer.Option(help="Dev metric to tabulate (the task's selection metric).")] = "accuracy",
    holdout_fraction: Annotated[
        float | None,
        typer.Option(help="Oos tasks: carve this fraction of train as a scoring-only holdout (see module doc)."),
    ] = None,
    holdout_seed: Annotated[int | None, typer.Option(help="Seed of the holdout carve; default data_seed + 2.")] = None,
) -> None:
    """Train each seed x variant, append results, print the summary table."""
    from textpulse.ml.train import fit

    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text("utf-8").splitlines()] if results.exists() else []
    shared = load_config_file(profile)
    holdout: list[TextExample] = []
    if holdout_fraction is not None:
        # data_seed + 1 is the calibration carve's seed; + 2 keeps the three carves uncorrelated
        carve_seed = holdout_seed if holdout_seed is not None else int(shared.get("data_seed", 13)) + 2
        holdout = carve_holdout(task, holdout_fraction, carve_seed, out / "train_pool.json")
        shared |= {"train_file": str(out / "train_pool.json"), "carve_dev": True}
    variants = [parse_variant(v) for v in variant or ["base"]]
    for run_seed in seed or [1, 2, 3]:
        for name, overrides in variants:
            if any(r["variant"] == name and r["seed"] == run_seed for r in done):
                continue
            values = shared | overrides | {"task": task, "seed": run_seed, "progress": False}
            config = TrainConfig(output_dir=out / "model", **values)
            result = fit(config)
            summary = result.summary
            row = {
                "variant": name,
                "seed": run_seed,
                "overrides": overrides,
                "dev": summary["dev"],
                "score": float(summary["dev"][metric]),
                # what selection would have kept without the averaged candidate
                "single_best": max(float(h["score"]) for h in summary["history"]),
                "best_step": summary["best_step"],
                "steps": summary["steps"],
                "averaged_score": summary.get("averaged_score"),
                "history": summary["history"],
                "train_seconds": summary["train_seconds"],
            }
            if holdout:
                row["holdout"] = _score_holdout(result, holdout, config) | {"n": len(holdout)}
            done.append(row)
            with results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    for line in summarise(done):
        gain = "" if line["gain"] is None else f" gain {line['gain']:+.4f}"
        typer.echo(f"{line['variant']:>10} n={line['n']} {metric} {line['mean']:.4f} +- {line['std']:.4f}{gain}")
    for line in holdout_summary(done):
        cells = []
        for name in HOLDOUT_METRICS:
            mean, std = line[name]
            optimism = line.get(f"{name}_optimism")
            cells.append(f"{name} {mean:.4f} +- {std:.4f}" + ("" if optimism is None else f" (dev {optimism:+.4f})"))
        typer.echo(f"{line['variant']:>10} n={line['n']} holdout " + ", ".join(cells))


if __name__ == "__main__":
    app()
