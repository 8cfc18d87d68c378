"""Re-drive dead letters: move records of ``dlq.<service>`` back to the topic they came from.

The pure part (parsing a dead letter, filters, the decision per record, the headers of the
re-driven copy) is here and unit-tested beside it; the aiokafka I/O (:func:`read_dead_letters`,
:func:`redriven_from`, :func:`send`) is kept thin. ``textpulse dlq list|show|redrive`` is the CLI.

What makes a re-drive safe to repeat:

- **The copy says where it came from.** Each re-driven record carries the original key, value
  and (non ``x-dlq-*``) headers plus :data:`H_COUNT` (re-drives of this record so far, this one
  included), :data:`H_TIME` and :data:`H_FROM` (the dead letter's ``topic:partition:offset``).
  These headers are not ``x-dlq-*``, so when a re-driven record fails again its new dead letter
  keeps them (:func:`textpulse.kafka.dlq.dlq_headers` copies the other headers): the count grows
  across round trips, and :func:`decide` refuses a record re-driven ``max_redrives`` times
  unless forced, so a poison record cannot loop for ever.
- **A dead letter is re-driven once.** Before sending, the target topics are read from the
  earliest selected dead letter's time on (:func:`redriven_from`); a dead letter whose
  coordinates already appear in an :data:`H_FROM` header there is skipped unless forced.
- **A forced second copy is still de-duplicated.** The copy keeps the event id, so the services'
  event-id de-duplication (:class:`textpulse.kafka.dedup.RecentIds` in classify, ner and route at
  least-once; ingest's idempotency window; Elasticsearch ``_id`` = event id in index) drops it.

A truncated dead letter (``x-dlq-truncated``) holds only a prefix of the value: ``redrive``
re-reads the original at its source coordinates (:func:`restore_truncated`, checked against
``x-dlq-original-sha256``) and sends that; once the source topic's retention deleted it, the
dead letter is skipped, never sent cut.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from textpulse.settings import KafkaSettings

from .admin import client_options, topic_partitions
from .broker import producer_options
from .dlq import (
    H_CATEGORY,
    H_CODE,
    H_EXC_TYPE,
    H_HEADERS_DROPPED,
    H_KEY_SHA256,
    H_KEY_SIZE,
    H_ORIGINAL_SHA256,
    H_ORIGINAL_SIZE,
    H_REASON,
    H_SERVICE,
    H_SOURCE_OFFSET,
    H_SOURCE_PARTITION,
    H_SOURCE_TOPIC,
    H_TIME,
    H_TRUNCATED,
)
from .read import read_range, reader

#: Headers of a re-driven record (not ``x-dlq-*``: they survive the next dead-lettering).
H_COUNT = "x-redrive-count"
H_REDRIVE_TIME = "x-redrive-time"
H_FROM = "x-redrive-from"
REDRIVE_PREFIX = "x-redrive-"
#: Re-drives of one record before :func:`decide` refuses it (``--max-redrives``).
DEFAULT_MAX_REDRIVES = 3

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _text(raw: object) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _event_id(value: bytes) -> str | None:
    """The event id of a JSON value: ``id`` (``text.in``), ``event_id`` or ``event.id`` (derived events)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    inner = doc.get("event")
    for found in (doc.get("id"), doc.get("event_id"), inner.get("id") if isinstance(inner, dict) else None):
        if isinstance(found, str) and found:
            return found
    return None


@dataclass(frozen=True)
class DeadLetter:
    """One record of a DLQ topic with its ``x-dlq-*`` headers decoded."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Any) -> DeadLetter:
        """From an aiokafka ``ConsumerRecord`` (or anything with its fields)."""
        raw = tuple((str(k), bytes(v) if v is not None else b"") for k, v in (record.headers or ()))
        return cls(
            record.topic, record.partition, record.offset, record.timestamp, record.key, record.value or b"", raw
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (decoded leniently), None when absent."""
        found = [v for k, v in self.headers if k == name]
        return _text(found[-1]) if found else None

    @property
    def coordinates(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def reason(self) -> str:
        return self.header(H_REASON) or ""

    @property
    def code(self) -> str | None:
        return self.header(H_CODE) or None

    @property
    def category(self) -> str | None:
        """``x-dlq-category``, a :class:`~textpulse.contracts.dead_letters.DeadLetterReason` value (None: absent)."""
        return self.header(H_CATEGORY) or None

    @property
    def source_topic(self) -> str | None:
        return self.header(H_SOURCE_TOPIC) or None

    @property
    def source(self) -> str | None:
        topic = self.source_topic
        if topic is None:
            return None
        return f"{topic}:{self.header(H_SOURCE_PARTITION)}:{self.header(H_SOURCE_OFFSET)}"

    @property
    def time(self) -> datetime:
        """When it was dead-lettered: ``x-dlq-time``, else the record's timestamp."""
        return _time(self.header(H_TIME)) or datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def truncated(self) -> bool:
        return (self.header(H_TRUNCATED) or "").lower() == "true"

    @property
    def redrives(self) -> int:
        """How many times this record (its earlier incarnations) was re-driven already."""
        return max(0, _int(self.header(H_COUNT)) or 0)

    @property
    def event_id(self) -> str | None:
        return _event_id(self.value)

    def summary(self) -> dict[str, Any]:
        """One line of ``textpulse dlq list``."""
        return {
            "partition": self.partition,
            "offset": self.offset,
            "time": self.time.isoformat(),
            "service": self.header(H_SERVICE),
            "category": self.category,
            "code": self.code,
            "reason": self.reason,
            "exception": self.header(H_EXC_TYPE) or None,
            "source": self.source,
            "event_id": self.event_id,
            "redrives": self.redrives,
            "truncated": self.truncated,
            "bytes": len(self.value),
        }

    def detail(self) -> dict[str, Any]:
        """``textpulse dlq show``: every header, key and value (text when UTF-8, else base64)."""
        out: dict[str, Any] = {"topic": self.topic, **self.summary()}
        out["headers"] = [[k, _text(v)] for k, v in self.headers]
        out["key"] = None if self.key is None else _text(self.key)
        try:
            out["value"] = self.value.decode("utf-8")
        except UnicodeDecodeError:
            out["value_base64"] = base64.b64encode(self.value).decode("ascii")
        return out


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when no zone is given) or a duration ago: ``90s``, ``30m``, ``2h``, ``7d``, ``1w``."""
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    parsed = _time(text.strip())
    if parsed is None:
        msg = f"not an ISO 8601 time or a duration like 30m/2h/7d: {text!r}"
        raise ValueError(msg)
    return parsed


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command acts on; every given criterion must hold.

    ``reasons``: case-insensitive substrings of ``x-dlq-reason`` (any one); ``codes``: exact
    ``x-dlq-code`` values (any one); ``categories``: exact ``x-dlq-category`` values
    (:class:`~textpulse.contracts.dead_letters.DeadLetterReason`, any one; a dead letter without
    the header matches none); ``since``/``until``: dead-letter time, ``until`` exclusive;
    ``from_offset``/``to_offset``: inclusive; ``partitions``: DLQ partitions;
    ``source_topics``: ``x-dlq-source-topic``.
    """

    reasons: tuple[str, ...] = ()
    codes: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    partitions: tuple[int, ...] = ()
    source_topics: tuple[str, ...] = ()

    def matches(self, letter: DeadLetter) -> bool:
        when = letter.time
        checks = (
            not self.partitions or letter.partition in self.partitions,
            self.from_offset is None or letter.offset >= self.from_offset,
            self.to_offset is None or letter.offset <= self.to_offset,
            not self.reasons or any(r.lower() in letter.reason.lower() for r in self.reasons),
            not self.codes or letter.code in self.codes,
            not self.categories or letter.category in self.categories,
            not self.source_topics or letter.source_topic in self.source_topics,
            self.since is None or when >= self.since,
            self.until is None or when < self.until,
        )
        return all(checks)


@dataclass(frozen=True)
class Decision:
    """What ``redrive`` does with one selected dead letter: send it to ``target``, or skip it and say why."""

    letter: DeadLetter
    target: str | None
    skip: str | None = None

    @property
    def send(self) -> bool:
        return self.skip is None

    def line(self) -> dict[str, Any]:
        out = {
            "dlq": self.letter.coordinates,
            "event_id": self.letter.event_id,
            "target": self.target,
            "redrives": self.letter.redrives,
        }
        return {**out, "action": "redrive" if self.send else "skip", **({"why": self.skip} if self.skip else {})}


def decide(
    letters: Iterable[DeadLetter],
    *,
    max_redrives: int = DEFAULT_MAX_REDRIVES,
    force: bool = False,
    already: Collection[str] = (),
    target: str | None = None,
) -> list[Decision]:
    """One :class:`Decision` per dead letter, in order.

    Skipped: a truncated copy (never, even forced: its value is a prefix; :func:`restore_truncated`
    first), one with no source
    topic and no ``target`` override, a second dead letter of the same source record in this
    selection, and, unless ``force``, one re-driven ``max_redrives`` times already or whose
    coordinates are in ``already`` (it was re-driven before: :func:`redriven_from`).
    """
    out: list[Decision] = []
    sources: set[str] = set()
    for letter in letters:
        dest = target or letter.source_topic
        skip: str | None = None
        if letter.truncated:
            skip = f"truncated copy and the original at {letter.source} is gone or differs"
        elif dest is None:
            skip = "no x-dlq-source-topic header: give the target topic"
        elif letter.source is not None and letter.source in sources:
            skip = f"another dead letter of {letter.source} is re-driven in this run"
        elif not force and letter.redrives >= max_redrives:
            skip = f"re-driven {letter.redrives} times already (max {max_redrives}; --force to send)"
        elif not force and letter.coordinates in already:
            skip = "already re-driven (an x-redrive-from header on the target names it; --force to send)"
        if skip is None and letter.source is not None:
            sources.add(letter.source)
        out.append(Decision(letter, dest, skip))
    return out


def redrive_headers(letter: DeadLetter, now: datetime | None = None) -> list[tuple[str, bytes]]:
    """Headers of the re-driven copy: the original's (no ``x-dlq-*``, no old ``x-redrive-*``) plus the re-drive's."""
    kept = [(k, v) for k, v in letter.headers if not k.startswith(("x-dlq-", REDRIVE_PREFIX))]
    when = (now or datetime.now(UTC)).isoformat()
    return [
        *kept,
        (H_COUNT, str(letter.redrives + 1).encode()),
        (H_REDRIVE_TIME, when.encode()),
        (H_FROM, letter.coordinates.encode()),
    ]


#: Headers that describe a cut copy; gone once the original is restored.
_CUT = (H_TRUNCATED, H_ORIGINAL_SIZE, H_ORIGINAL_SHA256, H_HEADERS_DROPPED, H_KEY_SIZE, H_KEY_SHA256)


def restore(letter: DeadLetter, original: Any) -> DeadLetter | None:
    """``letter`` with the key, value and headers of ``original`` (the record at its source coordinates).

    None when ``original`` is not the record that was cut (its SHA-256 differs from
    ``x-dlq-original-sha256``). The dead letter's own ``x-dlq-*`` headers stay (reason, source),
    the ones describing the cut go.
    """
    value = bytes(original.value or b"")
    if hashlib.sha256(value).hexdigest() != letter.header(H_ORIGINAL_SHA256):
        return None
    kept = tuple((str(k), bytes(v or b"")) for k, v in (original.headers or ()) if not str(k).startswith("x-dlq-"))
    own = tuple((k, v) for k, v in letter.headers if k.startswith("x-dlq-") and k not in _CUT)
    return replace(letter, key=original.key, value=value, headers=kept + own)


@dataclass
class Pacer:
    """At most ``rate`` sends per second (0: no limit), spread evenly rather than in bursts."""

    rate: float
    _start: float | None = None
    _sent: int = 0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next send (records it as sent)."""
        if self.rate <= 0:
            return 0.0
        if self._start is None:
            self._start = now
        due = self._start + self._sent / self.rate
        self._sent += 1
        return max(0.0, due - now)

    async def wait(self) -> None:
        pause = self.delay(time.monotonic())
        if pause:
            await asyncio.sleep(pause)


# --- aiokafka I/O -----------------------------------------------------------------------------


async def read_dead_letters(
    settings: KafkaSettings,
    topic: str,
    selection: Selection = Selection(),
    *,
    timeout_s: float = 120.0,
) -> list[DeadLetter]:
    """The dead letters of ``topic`` up to its end now that ``selection`` matches, by partition and offset.

    Starts at ``from_offset`` or, with ``since``, at the first record written since then (minus a
    minute of clock skew between producers); records written while it reads are not included.
    """
    consumer = reader(settings)  # read_committed: an aborted dead letter was never written
    await consumer.start()
    try:
        tps = [
            tp
            for tp in await topic_partitions(consumer, topic)
            if not selection.partitions or tp.partition in selection.partitions
        ]
        if not tps:
            return []
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if selection.from_offset is not None:
            starts = {tp: max(off, selection.from_offset) for tp, off in starts.items()}
        if selection.since is not None:
            since_ms = int((selection.since - timedelta(minutes=1)).timestamp() * 1000)
            found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            starts = {tp: max(starts[tp], found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        if selection.to_offset is not None:
            ends = {tp: min(off, selection.to_offset + 1) for tp, off in ends.items()}
        out = [
            letter
            async for rec in read_range(consumer, starts, ends, timeout_s)
            if selection.matches(letter := DeadLetter.of(rec))
        ]
    finally:
        await consumer.stop()
    return sorted(out, key=lambda d: (d.partition, d.offset))


async def redriven_from(
    settings: KafkaSettings, topics: Iterable[str], since: datetime, *, timeout_s: float = 300.0
) -> set[str]:
    """The :data:`H_FROM` values of the records of ``topics`` written since ``since``: dead letters already re-driven.

    A re-drive is written after its dead letter, so reading from the earliest selected dead
    letter's time (minus a minute of clock skew) finds every earlier re-drive still retained.
    This reads the input topics' records of that period: its cost grows with their traffic.
    """
    names = sorted(set(topics))
    if not names:
        return set()
    consumer = reader(settings)  # read_committed: an aborted dead letter was never written
    await consumer.start()
    found: set[str] = set()
    try:
        tps = await topic_partitions(consumer, *names)
        if not tps:
            return found
        ends = await consumer.end_offsets(tps)
        since_ms = int((since - timedelta(minutes=1)).timestamp() * 1000)
        offsets = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        starts = {tp: offsets[tp].offset if offsets.get(tp) else ends[tp] for tp in tps}
        async for rec in read_range(consumer, starts, ends, timeout_s):
            for k, v in rec.headers or ():
                if k == H_FROM:
                    found.add(_text(v))
    finally:
        await consumer.stop()
    return found


async def restore_truncated(settings: KafkaSettings, letters: Sequence[DeadLetter]) -> list[DeadLetter]:
    """``letters`` with each truncated copy replaced by its original where the source topic still has it.

    A dead letter whose original is gone (retention) or differs stays truncated, and
    :func:`decide` skips it.
    """
    cut = [d for d in letters if d.truncated and d.source_topic]
    if not cut:
        return list(letters)
    restored: dict[str, DeadLetter] = {}
    consumer = reader(settings)  # read_committed: an aborted dead letter was never written
    await consumer.start()
    try:
        for letter in cut:
            partition, offset = _int(letter.header(H_SOURCE_PARTITION)), _int(letter.header(H_SOURCE_OFFSET))
            if partition is None or offset is None or letter.source_topic is None:
                continue
            tp = TopicPartition(letter.source_topic, partition)
            first = (await consumer.beginning_offsets([tp]))[tp]
            if offset < first:
                continue
            async for rec in read_range(consumer, {tp: offset}, {tp: offset + 1}, 30.0):
                if (full := restore(letter, rec)) is not None:
                    restored[letter.coordinates] = full
    finally:
        await consumer.stop()
    return [restored.get(d.coordinates, d) for d in letters]


@dataclass
class Sent:
    """Where a re-driven copy landed."""

    decision: Decision
    partition: int
    offset: int
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> dict[str, Any]:
        return {**self.decision.line(), "partition": self.partition, "offset": self.offset, **self.extra}


async def send(settings: KafkaSettings, decisions: Sequence[Decision], *, rate: float = 0.0) -> list[Sent]:
    """Send each decision marked ``send`` to its target (same key, so the partitioner keeps per-key order).

    One at a time with ``acks=all``, at most ``rate`` records/s: a re-drive is an operator's action
    on a few records, and each ack before the next keeps the order and makes an interruption
    leave a clean prefix (what was sent is on the target, with :data:`H_FROM`, and is skipped next time).
    """
    todo = [d for d in decisions if d.send and d.target is not None]
    if not todo:
        return []
    producer = AIOKafkaProducer(**client_options(settings), **producer_options(settings))  # type: ignore[arg-type]
    await producer.start()
    out: list[Sent] = []
    pacer = Pacer(rate)
    try:
        for decision in todo:
            await pacer.wait()
            assert decision.target is not None  # filtered above; narrows the type
            meta = await producer.send_and_wait(
                decision.target,
                decision.letter.value,
                key=decision.letter.key,
                headers=redrive_headers(decision.letter),
            )
            out.append(Sent(decision, meta.partition, meta.offset))
    finally:
        await producer.stop()
    return out
