"""Seeded ablation of the recipe levers: each variant x each seed on one task and one dev split.

``python -m textpulse.ml.train_ablation --profile PATH --out DIR --variant base --variant llrd=...``
trains every (seed, variant) pair in this process (seed-major, so a run cut short still has
whole seeds for every variant), appends one JSON line per run to ``DIR/results.jsonl`` (and
skips pairs already there, so it resumes), then prints a mean +- std table. Decisions follow
docs/models.md: a lever is adopted only when its mean gain over the baseline exceeds the seed
spread, because a dev split of a few hundred rows moves about 2 points between seeds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Annotated, Any

import typer

from textpulse.ml.config import TrainConfig, load_config_file

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


@app.command()
def main(
    profile: Annotated[Path, typer.Option(help="YAML/JSON TrainConfig fields shared by every variant.")],
    out: Annotated[Path, typer.Option(help="Results folder (results.jsonl; models are not kept).")],
    task: Annotated[str, typer.Option()] = "phrasebank",
    variant: Annotated[list[str] | None, typer.Option(help="name[:key=value,...]; repeatable.")] = None,
    seed: Annotated[list[int] | None, typer.Option(help="Training seeds (repeatable); dev carve stays fixed.")] = None,
    metric: Annotated[str, typer.Option(help="Dev metric to tabulate (the task's selection metric).")] = "accuracy",
) -> None:
    """Train each seed x variant, append results, print the summary table."""
    from textpulse.ml.train import train

    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = [json.loads(line) for line in results.read_text("utf-8").splitlines()] if results.exists() else []
    shared = load_config_file(profile)
    variants = [parse_variant(v) for v in variant or ["base"]]
    for run_seed in seed or [1, 2, 3]:
        for name, overrides in variants:
            if any(r["variant"] == name and r["seed"] == run_seed for r in done):
                continue
            values = shared | overrides | {"task": task, "seed": run_seed, "progress": False}
            config = TrainConfig(output_dir=out / "model", **values)
            summary = train(config)
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
            done.append(row)
            with results.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
    for line in summarise(done):
        gain = "" if line["gain"] is None else f" gain {line['gain']:+.4f}"
        typer.echo(f"{line['variant']:>10} n={line['n']} {metric} {line['mean']:.4f} +- {line['std']:.4f}{gain}")


if __name__ == "__main__":
    app()
