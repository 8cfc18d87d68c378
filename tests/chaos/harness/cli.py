"""``python -m tests.chaos.harness run`` and ``python -m tests.chaos.harness load``."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Chaos harness and sustained load on the local stack (see docs/chaos.md).", no_args_is_help=True)

Delivery = Annotated[str, typer.Option(help="at_least_once | exactly_once (classify, ner, alert, route).")]


def _setup() -> None:
    """Quiet client libraries (a broker outage is the point of the run) and make SIGTERM unwind, so
    the ``finally`` blocks stop every process the run started."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    def _term(signum: int, frame: object) -> None:  # signal handler signature
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)


def _check_delivery(delivery: str) -> None:
    if delivery not in {"at_least_once", "exactly_once"}:
        raise typer.BadParameter("delivery must be at_least_once or exactly_once")


@app.command("run")
def run_cmd(
    events: Annotated[int, typer.Option(help="Real events to replay.")] = 3000,
    rate: Annotated[float, typer.Option(help="Replay rate, events/s (the replay lasts events/rate).")] = 25.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault schedule and the event order.")] = 7,
    delivery: Delivery = "at_least_once",
    targets: Annotated[
        str, typer.Option(help="Comma-separated components to kill (default: every service, triton, ES, kafka).")
    ] = "",
    run_dir: Annotated[Path | None, typer.Option(help="Logs and state (default .run/chaos).")] = None,
    model_repo: Annotated[
        Path | None, typer.Option(help="Model repository (default: quick models, else tiny).")
    ] = None,
    prometheus: Annotated[bool, typer.Option(help="Start Prometheus (scraping the chaos stack) too.")] = True,
    keep: Annotated[bool, typer.Option(help="Leave Kafka, ES, Triton, Prometheus running afterwards.")] = False,
) -> None:
    """Start the stack, replay at a steady rate, SIGKILL + restart every component once, verify; exit 1 on loss."""
    from .run import ChaosOptions, run_chaos

    _check_delivery(delivery)
    _setup()
    opts = ChaosOptions(events=events, rate=rate, seed=seed, delivery=delivery, prometheus=prometheus, keep=keep)
    if targets:
        opts.targets = tuple(t.strip() for t in targets.split(",") if t.strip())
    if run_dir is not None:
        opts.run_dir = run_dir
    opts.model_repo = model_repo
    result = asyncio.run(run_chaos(opts))
    raise typer.Exit(0 if result.ok else 1)


@app.command("load")
def load_cmd(
    minutes: Annotated[float, typer.Option(help="Duration of the sustained phase.")] = 10.0,
    rate: Annotated[
        float, typer.Option(help="Events/s; 0 = measure the maximum first and use --fraction of it.")
    ] = 0.0,
    fraction: Annotated[float, typer.Option(help="Share of the measured maximum rate to hold.")] = 0.8,
    delivery: Delivery = "at_least_once",
    sample_s: Annotated[float, typer.Option(help="Sampling interval of lag and memory.")] = 5.0,
    calibration_events: Annotated[int, typer.Option(help="Burst size that measures the maximum rate.")] = 2000,
    run_dir: Annotated[Path | None, typer.Option(help="Logs and state (default .run/chaos-load).")] = None,
    model_repo: Annotated[
        Path | None, typer.Option(help="Model repository (default: quick models, else tiny).")
    ] = None,
    prometheus: Annotated[bool, typer.Option(help="Start Prometheus (scraping the stack) too.")] = True,
) -> None:
    """Hold a steady rate for a while; exit 1 when consumer lag trends up or a service's memory grows."""
    from .load import LoadOptions, run_load

    _check_delivery(delivery)
    _setup()
    opts = LoadOptions(
        minutes=minutes,
        rate=rate,
        fraction=fraction,
        delivery=delivery,
        sample_s=sample_s,
        prometheus=prometheus,
        calibration_events=calibration_events,
    )
    if run_dir is not None:
        opts.run_dir = run_dir
    opts.model_repo = model_repo
    result = asyncio.run(run_load(opts))
    raise typer.Exit(0 if result.ok else 1)
