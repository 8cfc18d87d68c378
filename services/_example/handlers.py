"""``text.raw`` → ``example.kept``: the events of some channels; what is not a TextEvent goes to the DLQ."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from faststream import Context
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError
from textpulse.contracts import DeadLetterReason, TextEvent, encode
from textpulse.contracts.errors import reason, validation_errors
from textpulse.kafka import DeadLetters
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.kit import Kit

from .settings import ExampleSettings

SERVICE = "example"


def keep(event: TextEvent, channels: frozenset[str]) -> bool:
    """The logic: pure (no I/O), so its unit test needs no broker."""
    return event.channel in channels


@dataclass
class Deps:
    """Built by the app's ``resources`` and put into FastStream's context as ``deps``."""

    settings: ExampleSettings
    out: RecordWriter
    dead_letters: DeadLetters


async def handle(records: Sequence[Any], deps: Deps) -> None:
    """One polled batch: write the kept events (all acknowledged before the batch commits)."""
    out: list[OutRecord] = []
    for rec in records:
        try:
            event = TextEvent.model_validate_json(rec.value or b"")
        except ValidationError as exc:
            errors = validation_errors(exc)  # the shared vocabulary: pydantic's text would echo the input
            await deps.dead_letters.send(rec, DeadLetterReason.INVALID_RECORD, f"not a TextEvent: {reason(errors)}")
            continue
        if keep(event, deps.settings.channels):
            out.append(OutRecord(encode(event), rec.key, {"content-type": "application/json"}))
    await deps.out.write(out)


def subscribe(kit: Kit[ExampleSettings, Any]) -> None:
    @kit.subscriber(kit.settings.topic_in, title="example.in", description="Events; the configured channels are kept.")
    async def on_batch(msg: KafkaMessage, deps: Annotated[Deps, Context("deps")]) -> None:
        # kit.run_batch: settings.delivery (exactly-once or not); a record failing every try ends in the DLQ
        await kit.run_batch(msg, lambda records: handle(records, deps))
