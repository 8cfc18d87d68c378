"""Re-drive: dead letters decoded, selected, decided, and the re-driven copy's headers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from textpulse.contracts.dead_letters import DeadLetterReason
from textpulse.contracts.errors import ErrorCode, FieldError

from .dlq import H_ORIGINAL_SHA256, H_REASON, H_TIME, H_TRUNCATED, dlq_headers, fit_to_limit
from .redrive import (
    H_COUNT,
    H_FROM,
    H_REDRIVE_TIME,
    DeadLetter,
    Pacer,
    Selection,
    decide,
    parse_time,
    redrive_headers,
    restore,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Rec:
    topic: str = "text.in"
    partition: int = 2
    offset: int = 7
    key: bytes | None = b"k"
    value: bytes | None = b'{"id": "e1", "text": "hi"}'
    headers: Any = ()
    timestamp: int = int(NOW.timestamp() * 1000)


def letter(
    offset: int = 0,
    *,
    reason: str = "retries exhausted after 5 attempts: TimeoutError()",
    code: ErrorCode | None = ErrorCode.RETRIES_EXHAUSTED,
    source_offset: int = 7,
    original: tuple[tuple[str, bytes], ...] = (("traceparent", b"00-ab"),),
    extra: dict[str, str] | None = None,
    value: bytes = b'{"id": "e1", "text": "hi"}',
    when: datetime = NOW,
    category: DeadLetterReason | None = DeadLetterReason.RETRIES_EXHAUSTED,
) -> DeadLetter:
    """A dead letter as :class:`DeadLetters` writes it (through :func:`dlq_headers`)."""
    errors = [FieldError(code, "", "x")] if code else []
    headers = dlq_headers(
        Rec(offset=source_offset, headers=original, value=value),
        service="route",
        reason=reason,
        errors=errors,
        category=category,
    )
    headers[H_TIME] = when.isoformat()
    headers.update(extra or {})
    raw = tuple((k, v.encode()) for k, v in headers.items())
    return DeadLetter("dlq.route", 0, offset, int(when.timestamp() * 1000), b"k", value, raw)


def test_dead_letter_decodes_the_dlq_headers() -> None:
    d = letter(3)
    assert d.reason.startswith("retries exhausted")
    assert d.code == "retries_exhausted"
    assert d.category == "retries_exhausted"
    assert letter(category=None).category is None  # written before x-dlq-category existed
    assert d.source_topic == "text.in"
    assert d.source == "text.in:2:7"
    assert d.coordinates == "dlq.route:0:3"
    assert d.time == NOW
    assert d.redrives == 0
    assert not d.truncated
    assert d.event_id == "e1"
    line = d.summary()
    assert orjson.loads(orjson.dumps(line))["source"] == "text.in:2:7"
    assert line["service"] == "route"
    assert line["category"] == "retries_exhausted"


def test_event_id_of_derived_events_and_garbage() -> None:
    assert letter(value=b'{"event": {"id": "e9"}}').event_id == "e9"
    assert letter(value=b'{"event_id": "m3"}').event_id == "m3"
    assert letter(value=b"\xff\xfe").event_id is None
    assert letter(value=b"[1]").event_id is None


def test_detail_falls_back_to_base64_for_binary_values() -> None:
    d = letter(value=b"\xff\x00")
    out = d.detail()
    assert "value" not in out
    assert out["value_base64"] == "/wA="
    assert ["traceparent", "00-ab"] in out["headers"]
    assert letter().detail()["value"] == '{"id": "e1", "text": "hi"}'


def test_time_falls_back_to_the_record_timestamp() -> None:
    d = letter(extra={H_TIME: "not a time"})
    assert d.time == NOW


def test_parse_time() -> None:
    assert parse_time("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_time("90s", NOW) == NOW - timedelta(seconds=90)
    assert parse_time("1.5d", NOW) == NOW - timedelta(days=1.5)
    assert parse_time("2026-03-01T10:00:00") == datetime(2026, 3, 1, 10, tzinfo=UTC)
    assert parse_time("2026-03-01T10:00:00+01:00") == datetime(2026, 3, 1, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday")


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection(), [0, 1, 2, 3]),
        (Selection(reasons=("RETRIES",)), [0, 1]),
        (Selection(reasons=("timeout", "schema")), [0, 2]),
        (Selection(codes=("unknown_field",)), [2]),
        (Selection(categories=("invalid_record",)), [2]),
        (Selection(categories=("retries_exhausted", "model_rejected")), [0, 1, 3]),
        (Selection(categories=("store_rejected",)), []),
        (Selection(categories=("retries_exhausted",), from_offset=1), [1]),
        (Selection(from_offset=1, to_offset=2), [1, 2]),
        (Selection(since=NOW - timedelta(hours=1)), [2, 3]),
        (Selection(until=NOW - timedelta(hours=1)), [0, 1]),
        (Selection(partitions=(1,)), []),
        (Selection(source_topics=("text.in",)), [0, 1, 2, 3]),
        (Selection(reasons=("retries",), from_offset=1), [1]),
    ],
)
def test_selection(selection: Selection, expected: list[int]) -> None:
    letters = [
        letter(0, reason="retries exhausted: TimeoutError()", when=NOW - timedelta(hours=3)),
        letter(1, reason="retries exhausted: ValueError()", when=NOW - timedelta(hours=2)),
        letter(
            2,
            reason="schema: unknown field",
            code=ErrorCode.UNKNOWN_FIELD,
            when=NOW - timedelta(minutes=30),
            category=DeadLetterReason.INVALID_RECORD,
        ),
        letter(3, reason="model rejected", code=None, when=NOW, category=DeadLetterReason.MODEL_REJECTED),
    ]
    assert [d.offset for d in letters if selection.matches(d)] == expected


def test_decide_sends_skips_and_forces() -> None:
    letters = [
        letter(0, source_offset=10),
        letter(1, source_offset=11, extra={H_COUNT: "3"}),
        letter(2, source_offset=12),
        letter(3, source_offset=13, extra={H_TRUNCATED: "true"}),
        letter(4, source_offset=10),  # a second dead letter of the same source record
    ]
    decisions = decide(letters, max_redrives=3, already={"dlq.route:0:2"})
    assert [d.send for d in decisions] == [True, False, False, False, False]
    assert "re-driven 3 times" in (decisions[1].skip or "")
    assert "already re-driven" in (decisions[2].skip or "")
    assert "truncated" in (decisions[3].skip or "")
    assert "another dead letter" in (decisions[4].skip or "")
    assert decisions[0].target == "text.in"
    forced = decide(letters, max_redrives=3, already={"dlq.route:0:2"}, force=True)
    # Forced past the limit and the earlier re-drive, never past a truncated copy or a duplicate.
    assert [d.send for d in forced] == [True, True, True, False, False]
    assert decide(letters[:1], target="other")[0].target == "other"
    assert decisions[1].line()["action"] == "skip"
    assert decisions[0].line() == {
        "dlq": "dlq.route:0:0",
        "event_id": "e1",
        "target": "text.in",
        "redrives": 0,
        "action": "redrive",
    }


def test_decide_without_a_source_topic() -> None:
    bare = DeadLetter("dlq.x", 0, 0, 0, None, b"v", (("x-dlq-reason", b"r"),))
    assert "no x-dlq-source-topic" in (decide([bare])[0].skip or "")
    assert decide([bare], target="t")[0].send


def test_redrive_headers_keep_the_original_and_count() -> None:
    d = letter(5, extra={H_COUNT: "1", H_FROM: "dlq.route:0:1"})
    headers = redrive_headers(d, NOW)
    names = [k for k, _ in headers]
    assert not any(k.startswith("x-dlq-") for k in names)
    assert ("traceparent", b"00-ab") in headers
    assert dict(headers)[H_COUNT] == b"2"
    assert dict(headers)[H_FROM] == b"dlq.route:0:5"
    assert dict(headers)[H_REDRIVE_TIME] == NOW.isoformat().encode()
    assert names.count(H_COUNT) == 1


def test_count_survives_the_next_dead_lettering() -> None:
    """A re-driven record that fails again keeps x-redrive-count in its new dead letter."""
    first = letter(0)
    copy = Rec(offset=99, headers=redrive_headers(first, NOW))
    again = dlq_headers(copy, service="route", reason="still broken")
    raw = tuple((k, v.encode()) for k, v in again.items())
    second = DeadLetter("dlq.route", 0, 1, 0, b"k", first.value, raw)
    assert second.redrives == 1
    assert decide([second], max_redrives=1)[0].skip is not None
    assert dict(redrive_headers(second, NOW))[H_COUNT] == b"2"


def test_pacer_spreads_sends() -> None:
    pacer = Pacer(rate=10)
    delays = [pacer.delay(100.0) for _ in range(4)]
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert Pacer(rate=0).delay(5.0) == 0.0
    later = Pacer(rate=2)
    assert later.delay(0.0) == 0.0
    assert later.delay(3.0) == 0.0  # behind schedule: no wait


def test_restore_a_truncated_copy_from_its_original() -> None:
    original = Rec(value=b'{"id": "big", "text": "' + b"x" * 5000 + b'"}', headers=[("traceparent", b"00-big")])
    headers = dlq_headers(original, service="route", reason="too slow")
    key, value, cut = fit_to_limit(original.key, original.value or b"", headers, 2000)
    assert cut[H_TRUNCATED] == "true"
    d = DeadLetter("dlq.route", 0, 4, 0, key, value, tuple((k, v.encode()) for k, v in cut.items()))
    assert d.truncated
    assert "truncated" in (decide([d])[0].skip or "")
    full = restore(d, original)
    assert full is not None
    assert full.value == original.value
    assert not full.truncated
    assert full.header(H_ORIGINAL_SHA256) is None
    assert full.header(H_REASON) == "too slow"
    assert full.coordinates == d.coordinates
    assert ("traceparent", b"00-big") in full.headers
    assert decide([full])[0].send
    # Another record at those coordinates (the topic was re-created): not restored.
    assert restore(d, Rec(value=b"other")) is None


def test_cli_category_filter_takes_the_dead_letter_vocabulary() -> None:
    from typer.testing import CliRunner

    from textpulse.cli import _selection
    from textpulse.cli import app as cli_app

    chosen = _selection(None, None, [DeadLetterReason.INVALID_RECORD], None, None, None, None, None, None)
    assert chosen == Selection(categories=("invalid_record",))
    # Refused before anything connects: only DeadLetterReason values are categories.
    result = CliRunner().invoke(cli_app, ["dlq", "redrive", "route", "--category", "bogus", "--dry-run"])
    assert result.exit_code == 2
    assert "invalid_record" in result.output
