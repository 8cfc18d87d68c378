"""The bad-input suite of the ingest service, shared by the in-memory and real-Kafka tests.

Each HTTP case: (name, body bytes, content type, expected status). Each Kafka
case: (name, record value, expected destination: 'raw' or 'dlq').
"""

from __future__ import annotations

import orjson
from textpulse.contracts import MAX_TEXT_CHARS


def ev(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"source": "test", "channel": "news", "text": "Shares of ACME rose 3% today."}
    base.update(overrides)
    return base


def js(obj: object) -> bytes:
    return orjson.dumps(obj)


JSON = "application/json"
ONE_MB_TEXT = "a" * (1024 * 1024)

HTTP_CASES: list[tuple[str, bytes, str, int]] = [
    ("valid", js(ev(id="ok-1")), JSON, 202),
    ("malformed_json", b'{"source": "x", "channel": ', JSON, 400),
    ("invalid_utf8", b'{"source":"x","channel":"news","text":"\xff\xfe"}', JSON, 400),
    ("not_an_object", js([1, 2, 3]), JSON, 422),
    ("wrong_types", js(ev(text=123, channel=5)), JSON, 422),
    ("missing_fields", js({"text": "hello"}), JSON, 422),
    ("empty_text", js(ev(text="")), JSON, 422),
    ("whitespace_text", js(ev(text=" \n\t ")), JSON, 422),
    ("control_chars_only", js(ev(text="\x00\x01\x07\x1b")), JSON, 422),
    ("one_mb_text", js(ev(text=ONE_MB_TEXT)), JSON, 413),
    ("too_long_text", js(ev(text="b" * (MAX_TEXT_CHARS + 1))), JSON, 422),
    ("unknown_channel", js(ev(channel="fax")), JSON, 422),
    ("unknown_field", js(ev(colour="red")), JSON, 422),
    ("naive_event_time", js(ev(event_time="2024-01-01T00:00:00")), JSON, 422),
    ("bad_id", js(ev(id="has spaces")), JSON, 422),
    ("wrong_content_type", js(ev()), "text/plain", 415),
    ("no_content_type", js(ev()), "", 415),
]

KAFKA_CASES: list[tuple[str, bytes, str]] = [
    ("valid", js(ev(id="k-ok-1")), "raw"),
    ("valid_controls_removed", js(ev(id="k-ok-2", text="tab\tok\x00\x07 bell")), "raw"),
    ("malformed_json", b'{"source": "x", "channel": ', "dlq"),
    ("invalid_utf8", b"\xff\xfe\xfd", "dlq"),
    ("not_an_object", js("just a string"), "dlq"),
    ("wrong_types", js(ev(text=["a"])), "dlq"),
    ("missing_fields", js({"channel": "news"}), "dlq"),
    ("empty_text", js(ev(text="   ")), "dlq"),
    ("one_mb_text", js(ev(text=ONE_MB_TEXT[: 900 * 1024])), "dlq"),
    ("unknown_channel", js(ev(channel="telex")), "dlq"),
    ("empty_value", b"", "dlq"),
]
