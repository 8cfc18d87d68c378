"""The ``textpulse`` command line: replay, topics, serve, demo, tail (and the ML toolkit's train/eval/export)."""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

import textpulse
from textpulse.chaos.cli import app as chaos_app
from textpulse.settings import KafkaSettings

app = typer.Typer(help="textpulse: event-driven text intelligence on Kafka.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics declared by the platform.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(chaos_app, name="chaos")
console = Console(stderr=True)

SERVICES = {
    "ingest": "services.ingest.app",
    "alert": "services.alert.app",
    "route": "services.route.app",
    "index": "services.index.app",
    "classify": "services.classify.app",
    "ner": "services.ner.app",
    "recommend": "services.recommend.app",
}


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="Data set file (absolute, or relative to TEXTPULSE_DATA_DIR).")],
    channel: Annotated[str, typer.Option(help="news | social | support | review")] = "social",
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible).")] = 200.0,
    limit: Annotated[int | None, typer.Option(help="Replay at most this many rows.")] = None,
    target: Annotated[str, typer.Option(help="http (ingest API) or kafka (text.in topic).")] = "http",
    url: Annotated[str, typer.Option(help="Ingest base URL for target=http.")] = "http://127.0.0.1:8080",
    topic: Annotated[str, typer.Option(help="Topic for target=kafka.")] = "text.in",
    dataset: Annotated[str | None, typer.Option(help="Data set name when the file name does not tell.")] = None,
    source: Annotated[str | None, typer.Option(help="Source field (default replay:<dataset>).")] = None,
    spread_hours: Annotated[float, typer.Option(help="Spread event times over this many hours.")] = 0.0,
    batch: Annotated[int, typer.Option(help="Events per request.")] = 100,
) -> None:
    """Stream a labelled data set file into the platform with a progress bar."""
    from textpulse.replay import build_events
    from textpulse.replay import replay as run_replay

    if target not in {"http", "kafka"}:
        raise typer.BadParameter("target must be http or kafka")
    events = build_events(
        file,
        channel=channel,
        source=source,
        dataset=dataset,
        limit=limit,
        spread=timedelta(hours=spread_hours) if spread_hours else None,
    )
    tgt: Literal["http", "kafka"] = "kafka" if target == "kafka" else "http"
    stats = asyncio.run(run_replay(events, target=tgt, url=url, topic=topic, rate=rate, batch_size=batch))
    console.print(
        f"sent {stats.sent} in {stats.seconds:.1f}s ({stats.rate:.0f} ev/s): accepted {stats.accepted}, "
        f"duplicates {stats.duplicates}, rejected {stats.rejected}, retries {stats.retries}"
    )
    for err in stats.errors[:5]:
        console.print(f"[red]{err}[/]")
    if stats.rejected:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(
    bootstrap: Annotated[
        str | None, typer.Option(help="host:port (default TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS).")
    ] = None,
    wait_s: Annotated[float, typer.Option(help="Wait this long for the broker.")] = 60.0,
) -> None:
    """Create every declared topic that does not exist yet (idempotent)."""
    from textpulse.kafka.admin import create_topics, wait_for_broker

    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()

    async def run() -> list[str]:
        await wait_for_broker(settings, wait_s)
        return await create_topics(settings)

    created = asyncio.run(run())
    console.print(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@topics_app.command("clean")
def topics_clean(
    prefix: Annotated[
        str, typer.Option(help="Delete the topics whose name starts with this (tests name theirs t.<test>-<id>.).")
    ] = "t.",
    bootstrap: Annotated[
        str | None, typer.Option(help="host:port (default TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the topics that would go; delete nothing.")] = False,
    wait_s: Annotated[float, typer.Option(help="Wait this long for the broker.")] = 30.0,
) -> None:
    """Delete leftover test topics (by name prefix) from the broker; the names go to stdout."""
    from textpulse.contracts.topics import ALL_TOPICS
    from textpulse.kafka.admin import delete_topics, list_topics, wait_for_broker

    # An empty prefix (or one any declared topic starts with) would delete the platform's own topics.
    if not prefix.strip():
        raise typer.BadParameter(f"refusing prefix {prefix!r}: it matches every topic", param_hint="--prefix")
    if any(spec.name.startswith(prefix) for spec in ALL_TOPICS):
        raise typer.BadParameter(
            f"refusing prefix {prefix!r}: it matches the platform's declared topics", param_hint="--prefix"
        )
    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()

    async def run() -> tuple[list[str], list[str]]:
        await wait_for_broker(settings, wait_s)
        found = await list_topics(settings, prefix)
        return found, ([] if dry_run else await delete_topics(settings, found))

    found, deleted = asyncio.run(run())
    for name in found:
        typer.echo(name)
    if dry_run:
        console.print(f"{len(found)} topic(s) start with {prefix!r} (dry run: nothing deleted)")
    else:
        console.print(f"deleted {len(deleted)} of {len(found)} topic(s) starting with {prefix!r}")


@topics_app.command("list")
def topics_list() -> None:
    """Print the declared topics (name, partitions, key, cleanup policy) as JSON lines."""
    from textpulse.contracts.topics import ALL_TOPICS

    for spec in ALL_TOPICS:
        typer.echo(
            json.dumps(
                {
                    "name": spec.name,
                    "partitions": spec.partitions,
                    "key": spec.key,
                    "compacted": spec.compacted,
                    "value": spec.value.__name__ if spec.value else None,
                }
            )
        )


@app.command()
def serve(service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")]) -> None:
    """Run a service in the foreground (settings from the environment)."""
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    importlib.import_module(SERVICES[service]).main()


@app.command()
def asyncapi(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
) -> None:
    """AsyncAPI 3.0 document of a service's topics, generated from the event contracts."""
    from faststream.specification import AsyncAPI

    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    app_ = importlib.import_module(SERVICES[service]).create_app()
    # FastAPI apps (ingest) keep the broker on state; AsgiFastStream apps expose it directly.
    broker = app_.state.broker if hasattr(app_, "state") else app_.broker
    version = getattr(app_, "version", None) or textpulse.__version__
    spec = AsyncAPI(broker, title=f"textpulse {service}", version=version, schema_version="3.0.0")
    text = spec.to_specification().to_json()
    if out:
        out.write_text(text + "\n")
    else:
        typer.echo(text)


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Real tweets to replay.")] = 400,
    rate: Annotated[float, typer.Option(help="Replay rate, events/s.")] = 100.0,
    linger_s: Annotated[float, typer.Option(help="Keep showing the live view this long after the replay.")] = 5.0,
    live: Annotated[bool, typer.Option(help="Show the live terminal view.")] = True,
    pipeline: Annotated[
        bool | None, typer.Option(help="Run classify/NER/route/alert (default: when the models are exported).")
    ] = None,
) -> None:
    """Start the embedded broker and the services, replay real tweets, show what flows."""
    from textpulse.demo import run_demo

    ok = asyncio.run(run_demo(events=events, rate=rate, linger_s=linger_s, live=live, pipeline=pipeline))
    if not ok:
        raise typer.Exit(1)


@app.command()
def tail(
    bootstrap: Annotated[
        str | None, typer.Option(help="host:port (default TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS).")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Stop after this long (0 = until Ctrl-C).")] = 0.0,
) -> None:
    """Live view: record counts per topic and the latest events."""
    from textpulse.demo import live_view

    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    asyncio.run(live_view(settings, seconds=seconds or None))


def _mount_ml() -> None:
    """Add the ML toolkit's commands (train, eval, export) when its package is present."""
    try:
        ml = importlib.import_module("textpulse.ml.cli")
    except ModuleNotFoundError:
        return
    for command in ml.app.registered_commands:
        app.registered_commands.append(command)
    for group in ml.app.registered_groups:
        app.registered_groups.append(group)


_mount_ml()

if __name__ == "__main__":
    app()
