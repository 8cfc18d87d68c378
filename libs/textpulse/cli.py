"""The ``textpulse`` command line: replay, topics, serve, demo, tail (and the ML toolkit's train/eval/export)."""

from __future__ import annotations

import asyncio
import importlib
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

import textpulse
from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.services import GROUP_PREFIX, REGISTRY
from textpulse.settings import KafkaSettings

if TYPE_CHECKING:
    from textpulse.kafka.redrive import Decision, Selection, Sent

app = typer.Typer(help="textpulse: event-driven text intelligence on Kafka.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics declared by the platform.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
console = Console(stderr=True)

#: ``serve`` / ``asyncapi``: service → its app module, from the one registry (``contracts/services.py``).
SERVICES = {spec.name: spec.module for spec in REGISTRY}


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
    replication_factor: Annotated[
        int | None,
        typer.Option(min=1, help="Replicas of each new topic (default: the broker's default.replication.factor)."),
    ] = None,
    min_insync_replicas: Annotated[
        int | None,
        typer.Option(min=1, help="min.insync.replicas of each new topic (default: the broker's)."),
    ] = None,
) -> None:
    """Create every declared topic that does not exist yet (idempotent; existing topics are not changed)."""
    from textpulse.kafka.admin import create_topics, wait_for_broker

    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    if replication_factor is not None and min_insync_replicas is not None and min_insync_replicas > replication_factor:
        raise typer.BadParameter(
            f"{min_insync_replicas} is above --replication-factor {replication_factor}: every acks=all write fails",
            param_hint="--min-insync-replicas",
        )

    async def run() -> list[str]:
        await wait_for_broker(settings, wait_s)
        return await create_topics(
            settings, replication_factor=replication_factor, min_insync_replicas=min_insync_replicas
        )

    from aiokafka.errors import KafkaError

    try:
        created = asyncio.run(run())
    except (KafkaError, TimeoutError) as exc:
        # A Job's log should say what the broker refused, not end in a traceback.
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
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


@app.command("lag-exporter")
def lag_exporter(
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers (default: TEXTPULSE_KAFKA_*)")] = None,
    host: Annotated[str, typer.Option(help="Address of /metrics")] = "0.0.0.0",  # noqa: S104 - scraped from another pod
    port: Annotated[int, typer.Option(help="Port of /metrics")] = 9309,
    interval: Annotated[float, typer.Option(help="Seconds between probes")] = 15.0,
    group_prefix: Annotated[str, typer.Option(help="Groups measured: names with this prefix")] = GROUP_PREFIX,
    group: Annotated[
        list[str] | None, typer.Option(help="GROUP=SERVICE: one more group (a custom group id); repeatable")
    ] = None,
) -> None:
    """Export the lag of every textpulse consumer group, in records and seconds, measured once (run ONE)."""
    from textpulse.observability.lag_exporter import serve as serve_exporter
    from textpulse.observability.logging import configure_logging

    extra: dict[str, str] = {}
    for item in group or ():
        name, sep, service = item.partition("=")
        if not sep or not name or not service:
            raise typer.BadParameter(f"--group wants GROUP=SERVICE, got {item!r}")
        extra[name] = service
    configure_logging("lag-exporter")
    serve_exporter(_kafka(bootstrap), host=host, port=port, interval_s=interval, prefix=group_prefix, groups=extra)


@app.command()
def asyncapi(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout).")] = None,
) -> None:
    """AsyncAPI 3.0 document of a service's topics, generated from the event contracts."""
    from textpulse.contracts.asyncapi import document

    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    app_ = importlib.import_module(SERVICES[service]).create_app()
    # FastAPI apps (ingest) keep the broker on state; AsgiFastStream apps expose it directly.
    broker = app_.state.broker if hasattr(app_, "state") else app_.broker
    version = getattr(app_, "version", None) or textpulse.__version__
    # Indented: the committed documents are contracts, reviewed line by line in diffs.
    text = json.dumps(document(broker, title=f"textpulse {service}", version=version), indent=2)
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


# --- textpulse dlq: list, show, re-drive dead letters (logic in textpulse.kafka.redrive) ---------

dlq_app = typer.Typer(help="Dead-letter topics dlq.<service>: list, show, re-drive.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

DlqService = Annotated[str, typer.Argument(help="Service whose dead letters to read (dlq.<service>).")]
DlqTopic = Annotated[str | None, typer.Option("--topic", help="DLQ topic (default dlq.<service>).")]
Bootstrap = Annotated[str | None, typer.Option(help="host:port (default TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS).")]
Reason = Annotated[
    list[str] | None, typer.Option("--reason", help="x-dlq-reason contains this (any case); repeatable.")
]
Code = Annotated[list[str] | None, typer.Option("--code", help="x-dlq-code is this (e.g. unknown_field); repeatable.")]
Category = Annotated[
    list[DeadLetterReason] | None,
    typer.Option("--category", help="x-dlq-category is this (the dead-letter reason category); repeatable."),
]
Since = Annotated[
    str | None, typer.Option(help="Dead-lettered at or after: ISO 8601 time (UTC if no zone) or a duration ago (2h).")
]
Until = Annotated[str | None, typer.Option(help="Dead-lettered before (same forms as --since).")]
FromOffset = Annotated[int | None, typer.Option(help="First DLQ offset (inclusive).")]
ToOffset = Annotated[int | None, typer.Option(help="Last DLQ offset (inclusive).")]
Partition = Annotated[list[int] | None, typer.Option("--partition", help="DLQ partition; repeatable.")]
SourceTopic = Annotated[
    list[str] | None, typer.Option("--source-topic", help="x-dlq-source-topic is this; repeatable.")
]


def _dlq_topic(service: str, topic: str | None) -> str:
    from textpulse.contracts.topics import dlq

    if topic:
        return topic
    if service not in SERVICES:
        raise typer.BadParameter(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    return dlq(service).name


def _selection(
    reason: list[str] | None,
    code: list[str] | None,
    category: list[DeadLetterReason] | None,
    since: str | None,
    until: str | None,
    from_offset: int | None,
    to_offset: int | None,
    partition: list[int] | None,
    source_topic: list[str] | None,
) -> Selection:
    from textpulse.kafka.redrive import Selection, parse_time

    try:
        start = parse_time(since) if since else None
        end = parse_time(until) if until else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    return Selection(
        reasons=tuple(reason or ()),
        codes=tuple(code or ()),
        categories=tuple(c.value for c in category or ()),
        since=start,
        until=end,
        from_offset=from_offset,
        to_offset=to_offset,
        partitions=tuple(partition or ()),
        source_topics=tuple(source_topic or ()),
    )


def _kafka(bootstrap: str | None) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()


@dlq_app.command("list")
def dlq_list(
    service: DlqService,
    reason: Reason = None,
    code: Code = None,
    category: Category = None,
    since: Since = None,
    until: Until = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    partition: Partition = None,
    source_topic: SourceTopic = None,
    topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """One JSON line per dead letter (offset, time, code, reason, source, event id, re-drives); counts to stderr."""
    from collections import Counter

    from textpulse.kafka.redrive import read_dead_letters

    name = _dlq_topic(service, topic)
    selection = _selection(reason, code, category, since, until, from_offset, to_offset, partition, source_topic)
    letters = asyncio.run(read_dead_letters(_kafka(bootstrap), name, selection))
    for letter in letters:
        typer.echo(json.dumps(letter.summary()))
    codes = Counter(letter.code or "-" for letter in letters)
    console.print(
        f"{len(letters)} dead letter(s) in {name}: " + (", ".join(f"{c} {n}" for c, n in codes.items()) or "-")
    )


@dlq_app.command("show")
def dlq_show(
    service: DlqService,
    offset: Annotated[int, typer.Argument(help="DLQ offset.")],
    partition: Annotated[int, typer.Option(help="DLQ partition.")] = 0,
    topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """One dead letter as JSON: every header, the key and the value (base64 when not UTF-8)."""
    from textpulse.kafka.redrive import Selection, read_dead_letters

    name = _dlq_topic(service, topic)
    selection = Selection(from_offset=offset, to_offset=offset, partitions=(partition,))
    letters = asyncio.run(read_dead_letters(_kafka(bootstrap), name, selection))
    if not letters:
        console.print(f"[red]no record at {name}:{partition}:{offset}[/]")
        raise typer.Exit(1)
    typer.echo(json.dumps(letters[0].detail(), indent=2))


@dlq_app.command("redrive")
def dlq_redrive(
    service: DlqService,
    reason: Reason = None,
    code: Code = None,
    category: Category = None,
    since: Since = None,
    until: Until = None,
    from_offset: FromOffset = None,
    to_offset: ToOffset = None,
    partition: Partition = None,
    source_topic: SourceTopic = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be re-driven; send nothing.")] = False,
    rate: Annotated[float, typer.Option(help="Records per second at most (0 = no limit).")] = 50.0,
    max_redrives: Annotated[
        int, typer.Option(help="Refuse a record already re-driven this many times (x-redrive-count).")
    ] = 3,
    force: Annotated[
        bool, typer.Option("--force", help="Send records refused for --max-redrives or an earlier re-drive.")
    ] = False,
    check_target: Annotated[
        bool,
        typer.Option(help="Read the target topics since the oldest selected dead letter to skip earlier re-drives."),
    ] = True,
    to: Annotated[str | None, typer.Option("--to", help="Target topic (default: x-dlq-source-topic).")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Allow a re-drive with no filter at all (every dead letter).")
    ] = False,
    topic: DlqTopic = None,
    bootstrap: Bootstrap = None,
) -> None:
    """Send selected dead letters back to the topic they came from, with x-redrive-* headers.

    One JSON line per selected dead letter (action redrive or skip, and why); counts to stderr.
    Exit code 1 when a selected record was skipped.
    """
    from textpulse.kafka.redrive import Selection, decide, read_dead_letters, redriven_from, restore_truncated, send

    name = _dlq_topic(service, topic)
    selection = _selection(reason, code, category, since, until, from_offset, to_offset, partition, source_topic)
    if selection == Selection() and not all_:
        raise typer.BadParameter("no filter given: pass --all to re-drive every dead letter")
    settings = _kafka(bootstrap)

    async def run() -> tuple[list[Decision], list[Sent]]:
        letters = await restore_truncated(settings, await read_dead_letters(settings, name, selection))
        already: set[str] = set()
        if check_target and not force and letters:
            targets = {t for t in (to or d.source_topic for d in letters) if t}
            already = await redriven_from(settings, targets, min(d.time for d in letters))
        decisions = decide(letters, max_redrives=max_redrives, force=force, already=already, target=to)
        return decisions, ([] if dry_run else await send(settings, decisions, rate=rate))

    decisions, sent = asyncio.run(run())
    landed = {s.decision.letter.coordinates: s for s in sent}
    for decision in decisions:
        done = landed.get(decision.letter.coordinates)
        line = done.line() if done else decision.line()
        if dry_run and decision.send:
            line["action"] = "would redrive"
        typer.echo(json.dumps(line))
    skipped = sum(not d.send for d in decisions)
    verb = "would re-drive" if dry_run else "re-drove"
    count = sum(d.send for d in decisions) if dry_run else len(sent)
    console.print(f"{verb} {count} of {len(decisions)} selected dead letter(s) from {name}; skipped {skipped}")
    if skipped:
        raise typer.Exit(1)


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
