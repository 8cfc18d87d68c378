"""``textpulse train | pretrain | distill | eval | export | bench``: the fine-tuning toolkit's command line.

torch and transformers are imported inside the commands so ``--help`` stays fast.
Results go to stdout as JSON; progress and logs go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Train, evaluate and export textpulse models.", no_args_is_help=True)

_TASK_HELP = "sentiment | phrasebank | topic | banking77 (intent) | clinc150 | finer_ord (ner) | wnut17"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _emit(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _parse_sets(values: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when possible (numbers, booleans)."""
    parsed: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            msg = f"--set expects key=value, got {item!r}"
            raise typer.BadParameter(msg)
        try:
            parsed[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key.replace("-", "_")] = raw
    return parsed


def _config_values(
    config: Path | None,
    profile: str | None,
    resolve: Callable[[str], Path],
    flags: dict[str, Any],
    sets: list[str] | None,
) -> dict[str, Any]:
    """The config file (``--config``, or the named ``--profile``), then the flags given, then ``--set`` (later wins)."""
    from textpulse.ml.config import load_config_file

    if config and profile:
        msg = "give --config or --profile, not both"
        raise typer.BadParameter(msg)
    source = config or (resolve(profile) if profile else None)
    values: dict[str, Any] = load_config_file(source) if source else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    values.update(_parse_sets(sets or []))
    return values


@app.command()
def train(
    task: Annotated[str, typer.Argument(help=_TASK_HELP)],
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of TrainConfig fields; flags override it.")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Model directory (default .cache/models/<task>).")] = None,
    base_model: Annotated[str | None, typer.Option(help="HF name or path (default: bundled all-MiniLM-L6-v2).")] = None,
    train_file: Annotated[str | None, typer.Option(help="Training file (default: the task's staged file).")] = None,
    dev_file: Annotated[
        str | None, typer.Option(help="Dev file (default: staged dev, else carved from train).")
    ] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    head_lr: Annotated[float | None, typer.Option(help="Default 10x --lr.")] = None,
    pooling: Annotated[str | None, typer.Option(help="mean | first")] = None,
    lora: Annotated[
        bool | None, typer.Option("--lora/--full", help="LoRA adapters (merged on save) or full fine-tune.")
    ] = None,
    limit_train: Annotated[int | None, typer.Option(help="Seeded random subset of train.")] = None,
    limit_dev: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    patience: Annotated[int | None, typer.Option()] = None,
    eval_every: Annotated[int | None, typer.Option()] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    extra_task: Annotated[
        list[str] | None,
        typer.Option("--extra-task", help="Add a sequence task as an extra head on the shared encoder (repeatable)."),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other TrainConfig field: key=value.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Fine-tune a model for TASK; prints the dev metrics summary as JSON."""
    _setup_logging(verbose)
    from textpulse.ml.config import TrainConfig, load_config_file, resolve_task
    from textpulse.ml.settings import MLSettings
    from textpulse.ml.train import train as run_training

    canonical, _ = resolve_task(task)
    values: dict[str, Any] = load_config_file(config) if config else {}
    flags = {
        "base_model": base_model,
        "train_file": train_file,
        "dev_file": dev_file,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "lr": lr,
        "head_lr": head_lr,
        "pooling": pooling,
        "lora": lora,
        "limit_train": limit_train,
        "limit_dev": limit_dev,
        "seed": seed,
        "threads": threads,
        "device": device,
        "patience": patience,
        "eval_every": eval_every,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if extra_task:
        values["extra_tasks"] = [resolve_task(t)[0] for t in extra_task]
    values.update(_parse_sets(set_ or []))
    values["task"] = canonical
    values["progress"] = progress and values.get("progress", True)
    values["output_dir"] = output or values.get("output_dir") or MLSettings().models_dir / canonical
    summary = run_training(TrainConfig(**values))
    summary["output_dir"] = str(values["output_dir"])
    _emit(summary)


@app.command()
def pretrain(
    config: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON file of PretrainConfig fields (e.g. ml/profiles/pretrain/quick.yaml)."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Shipped pretraining profile (quick | full) instead of --config.")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Base-model directory (default .cache/pretrain/base).")] = None,
    base_model: Annotated[str | None, typer.Option(help="HF name or path (default: bundled all-MiniLM-L6-v2).")] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    max_length: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option()] = None,
    limit_texts: Annotated[int | None, typer.Option(help="Seeded random subset of the unlabelled texts.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any other PretrainConfig field: key=value.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Domain-adaptive pretraining: masked-LM on the in-domain training texts; prints metrics as JSON.

    Resumes from OUTPUT/checkpoint when one exists for the same configuration. The output is a base
    model for ``train --base-model`` (or ``base_model:`` in a profile).
    """
    _setup_logging(verbose)
    from textpulse.ml.pretrain import load_pretrain_config, pretrain_profile
    from textpulse.ml.pretrain import pretrain as run_pretraining

    flags = {
        "output_dir": output,
        "base_model": base_model,
        "epochs": epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "max_length": max_length,
        "lr": lr,
        "limit_texts": limit_texts,
        "seed": seed,
        "threads": threads,
        "device": device,
    }
    values = _config_values(config, profile, pretrain_profile, flags, set_)
    values["progress"] = progress and values.get("progress", True)
    summary = run_pretraining(load_pretrain_config(values))
    summary["output_dir"] = str(values.get("output_dir", ""))
    _emit(summary)


@app.command()
def distill(
    config: Annotated[
        Path | None, typer.Option(help="YAML/JSON file of DistillConfig fields (e.g. ml/profiles/distill/*.yml).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Shipped distill profile (profiles/distill/NAME.yml).")] = None,
    output: Annotated[Path | None, typer.Option(help="Run folder: teacher/, soft_labels.npz, student-seedS/.")] = None,
    teacher_model: Annotated[
        Path | None, typer.Option(help="An already fine-tuned teacher folder (skips the teacher stage).")
    ] = None,
    stage: Annotated[
        list[str] | None,
        typer.Option("--stage", help="teacher | soft_labels | student | baseline (repeatable; default the first 3)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Student (and baseline) seed.")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the soft KL term (1 - alpha on hard CE).")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (teacher and student).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Any DistillConfig field: key=value.")] = None,
    teacher_set: Annotated[
        list[str] | None, typer.Option("--teacher-set", help="TrainConfig override of the teacher: key=value.")
    ] = None,
    student_set: Annotated[
        list[str] | None, typer.Option("--student-set", help="TrainConfig override of the student: key=value.")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Teacher -> student distillation: fine-tune the teacher (resumable per epoch), cache its soft labels,
    train the small student on them; prints the summaries as JSON."""
    _setup_logging(verbose)
    from textpulse.ml.distill import distill as run_distill
    from textpulse.ml.distill import distill_profile, load_distill_config

    flags = {
        "output_dir": output,
        "teacher_model": teacher_model,
        "stages": stage,
        "temperature": temperature,
        "alpha": alpha,
    }
    values = _config_values(config, profile, distill_profile, flags, set_)
    common = dict(values.get("common") or {})
    common.update({k: v for k, v in {"threads": threads, "device": device}.items() if v is not None})
    common["progress"] = progress and common.get("progress", True)
    values["common"] = common
    values["teacher"] = dict(values.get("teacher") or {}) | _parse_sets(teacher_set or [])
    values["student"] = dict(values.get("student") or {}) | _parse_sets(student_set or [])
    if seed is not None:
        values["student"]["seed"] = seed
    _emit(run_distill(load_distill_config(values)))


@app.command("eval")
def evaluate(
    task: Annotated[str, typer.Argument(help=_TASK_HELP)],
    model: Annotated[Path, typer.Option(help="Trained model dir, exported version dir or Triton model dir.")],
    data: Annotated[str, typer.Option(help="Labelled file (path, or relative to the data dir); see docs/models.md.")],
    head: Annotated[
        str | None,
        typer.Option(help="Head of a multi-head model to score, by its task name (default: the one trained for TASK)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split of CLINC150's data_full.json: train|val|test.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the PNG, card and metrics (default: a new temp dir; never inside the model)."),
    ] = None,
    backend: Annotated[str, typer.Option(help="torch | torch-int8 | onnx")] = "torch",
    batch_size: Annotated[int, typer.Option()] = 64,
    threads: Annotated[int | None, typer.Option()] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Score one head of MODEL on DATA: JSON metrics on stdout, confusion-matrix PNG, card and metrics on disk.

    Refused (one line on stderr, exit code 2): a model or head trained for another task, gold labels
    outside the head's label set, an --out inside the model or its repository.
    """
    _setup_logging(verbose)
    from textpulse.ml.evaluation_cli import EvalError, run_eval

    try:
        result = run_eval(
            task,
            model,
            data,
            head=head,
            split=split,
            out=out,
            backend=backend,
            batch_size=batch_size,
            threads=threads,
        )
    except EvalError as exc:
        # one plain line: typer's error panel wraps long paths and label lists over several lines
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    _emit(result)


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="Trained model directory.")],
    name: Annotated[str, typer.Option(help="Model name in the Triton repository (sentiment, topic, intent, ner ...).")],
    repo: Annotated[Path | None, typer.Option(help="Model repository (default TEXTPULSE_MODEL_REPO).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Also export and check model.onnx.")] = True,
    max_batch_size: Annotated[int, typer.Option()] = 64,
    torch_threads: Annotated[
        int | None, typer.Option(help="Runtime threads per Triton instance (default: export.CPU_THREADS).")
    ] = None,
    instances: Annotated[
        int | None,
        typer.Option(help="Triton CPU instances per model (default: export.CPU_INSTANCES; GPU: one per GPU)."),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help=(
                "CPU config precision: auto (the version's measured default from serving.json, else fp32), fp32, "
                "or int8 (dynamic quantisation; the GPU variant is bf16)."
            )
        ),
    ] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Export MODEL as the next version of NAME in the Triton repository; prints the manifest entry."""
    _setup_logging(verbose)
    from textpulse.ml.export import CPU_INSTANCES, CPU_THREADS, export_model
    from textpulse.ml.settings import MLSettings

    target = repo or MLSettings().model_repo
    entry = export_model(
        model,
        target,
        name,
        onnx=onnx,
        max_batch_size=max_batch_size,
        # unset: the exporter's own CPU layout (declared once, in textpulse.ml.export)
        torch_threads=CPU_THREADS if torch_threads is None else torch_threads,
        instances=CPU_INSTANCES if instances is None else instances,
        precision=precision,
    )
    entry["repository"] = str(target)
    _emit(entry)


@app.command("runtime-graphs")
def runtime_graphs(
    paths: Annotated[list[Path], typer.Argument(help="Model (latest version) or version folders.")],
    force: Annotated[bool, typer.Option("--force", help="Rewrite graphs that exist.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Add model.opt.onnx / model.int8.onnx to existing exports; prints what was written per folder."""
    _setup_logging(verbose)
    from textpulse.ml.onnx_runtime import add_runtime_graphs
    from textpulse.ml.predictor import resolve_model_dir

    for path in paths:
        directory = resolve_model_dir(path)
        _emit({"directory": str(directory), **add_runtime_graphs(directory, force=force)})


@app.command()
def bench(
    model: Annotated[Path, typer.Option(help="Model dir (trained, version or Triton model dir).")],
    batch_size: Annotated[int, typer.Option()] = 32,
    batches: Annotated[int, typer.Option(help="Timed batches after one warm-up.")] = 8,
    backend: Annotated[str, typer.Option(help="torch | torch-int8 | onnx")] = "torch",
    threads: Annotated[int | None, typer.Option()] = None,
) -> None:
    """CPU inference speed (sentences/s) on dev-like tweets, and the parameter count."""
    _setup_logging(verbose=False)
    from textpulse.ml.evaluation_cli import measure_speed

    started = time.perf_counter()
    result = measure_speed(model, batch_size=batch_size, batches=batches, backend=backend, threads=threads)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    _emit(result)


@app.command()
def report(
    models: Annotated[Path | None, typer.Option(help="Folder of trained task dirs (default .cache/models).")] = None,
    speed: Annotated[bool, typer.Option("--speed/--no-speed", help="Measure CPU sentences/s at batch 32.")] = True,
) -> None:
    """Dev metrics of every trained task beside the issue's targets, with parameters and speed."""
    _setup_logging(verbose=False)
    from textpulse.ml.evaluation_cli import targets_report
    from textpulse.ml.settings import MLSettings

    typer.echo(targets_report(models or MLSettings().models_dir, speed=speed))


if __name__ == "__main__":
    app()
