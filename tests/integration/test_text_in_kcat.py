"""``text.in`` written by an outside client: kcat (librdkafka) → the real ingest Kafka edge → real Kafka.

The project's own producers never make most of these records, so the edge is
tested with a client it did not write: NULL values (tombstones), bytes that are
not UTF-8, values that are not JSON, JSON of the wrong shape, text over the
limit, and valid events with keys ingest must ignore. Every bad record must land
in ``dlq.ingest`` once, with the code of the shared error vocabulary
(``x-dlq-code``, :mod:`textpulse.contracts.errors`); every valid one in
``text.raw``, keyed by ingest's own rule.

kcat is Debian's ``kcat`` package: ``make kcat-install`` (deploy/kafka/kcat-install.sh,
needs root); the fixture runs that script when kcat is absent, and under CI a
kcat that is still missing fails the test (tests/ci.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from textpulse.contracts.errors import ErrorCode
from textpulse.contracts.events import MAX_TEXT_CHARS
from textpulse.settings import KafkaSettings

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.conftest import REPO, missing
from tests.helpers import headers, read_all, running
from tests.ingest_cases import ev, js

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

#: name → (value; None = NULL, expected x-dlq-code). Each is one kcat message.
BAD: dict[str, tuple[bytes | None, ErrorCode]] = {
    "null_value": (None, ErrorCode.EMPTY_VALUE),
    "empty_value": (b"", ErrorCode.EMPTY_VALUE),
    "invalid_utf8": (b"\xff\xfe not utf-8 \xc3\x28", ErrorCode.INVALID_UTF8),
    "not_json": (b"source=kcat channel=news text=hello", ErrorCode.NOT_JSON),
    "truncated_json": (b'{"source": "kcat", "channel": ', ErrorCode.NOT_JSON),
    "array_not_object": (js([ev(id="kc-in-array")]), ErrorCode.NOT_AN_OBJECT),
    "string_not_object": (js("just a string"), ErrorCode.NOT_AN_OBJECT),
    "unknown_field": (js({**ev(id="kc-unknown"), "colour": "red"}), ErrorCode.UNKNOWN_FIELD),
    "missing_field": (js({"channel": "news", "text": "no source"}), ErrorCode.MISSING_FIELD),
    "text_too_long": (js(ev(id="kc-long", text="x" * (MAX_TEXT_CHARS + 1))), ErrorCode.TEXT_TOO_LONG),
    "text_far_too_long": (js(ev(id="kc-200k", text="y" * 200_000)), ErrorCode.TEXT_TOO_LONG),
    "text_empty": (js(ev(id="kc-empty", text=" \t ")), ErrorCode.TEXT_EMPTY),
}
#: Valid events with the key kcat sends (ingest ignores it: text.raw is keyed by its own rule).
VALID: list[tuple[bytes, dict[str, object], bytes | None]] = [
    (b"ignored-key-1", ev(id="kc-ok-1", entity_key="AAPL"), b"entity:AAPL"),
    (b"ignored-key-2", ev(id="kc-ok-2", user_id="u9"), b"user:u9"),
    (b"", ev(id="kc-ok-3", conversation_id="c-1", channel="support"), b"conv:c-1"),
    (b"AAPL", ev(id="kc-ok-4"), None),
]


@pytest.fixture(scope="module")
def kcat() -> str:
    """Path of kcat; installed from Debian by deploy/kafka/kcat-install.sh when absent."""
    path = shutil.which("kcat")
    if path is None:
        proc = subprocess.run(
            ["bash", str(REPO / "deploy" / "kafka" / "kcat-install.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        path = shutil.which("kcat")
        if path is None:
            missing("kcat", f"make kcat-install (apt-get install kcat, needs root) failed: {proc.stderr[-1500:]}")
    return path


def kcat_produce(kcat: str, bootstrap: str, topic: str, value: bytes | None, key: bytes, tmp: Path) -> None:
    """One record through kcat, its bytes exactly as given.

    A value is sent from a file (file mode: one file = one message, no delimiter
    parsing). kcat skips empty files, so an empty or NULL value goes as a
    ``key|`` line with ``-K '|'`` (empty value), plus ``-Z`` for NULL (a tombstone).
    """
    cmd = [kcat, "-P", "-b", bootstrap, "-t", topic, "-X", "message.max.bytes=2000000"]
    if not value:
        cmd += ["-K", "|", *(["-Z"] if value is None else [])]
        stdin = key + b"|\n"
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, check=False)
    else:
        body = tmp / f"value-{len(list(tmp.iterdir()))}"
        body.write_bytes(value)
        proc = subprocess.run(
            [*cmd, *(["-k", key.decode()] if key else []), str(body)], capture_output=True, timeout=60, check=False
        )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


async def test_kcat_bad_records_are_dead_lettered_with_their_code(
    kcat: str, kafka_settings: KafkaSettings, kafka_topics: dict[str, str], tmp_path: Path
) -> None:
    settings = IngestSettings(
        kafka=kafka_settings,
        topic_in=kafka_topics["text.in"],
        topic_out=kafka_topics["text.raw"],
        topic_dlq=kafka_topics["dlq.ingest"],
        group_id=f"g-{kafka_topics['text.in']}",
    )
    bootstrap = kafka_settings.bootstrap_servers
    # Every bad record carries its case in the key, so its dead letter can be matched to it.
    for name, (value, _code) in BAD.items():
        kcat_produce(kcat, bootstrap, kafka_topics["text.in"], value, f"case:{name}".encode(), tmp_path)
    for key, event, _ in VALID:
        kcat_produce(kcat, bootstrap, kafka_topics["text.in"], js(event), key, tmp_path)

    async with running(create_app(settings)):
        dlq = await read_all(kafka_settings, kafka_topics["dlq.ingest"], expect=len(BAD), timeout_s=90)
        raw = await read_all(kafka_settings, kafka_topics["text.raw"], expect=len(VALID), timeout_s=60)

    codes = {}
    for rec in dlq:
        h = headers(rec)
        assert h["x-dlq-source-topic"] == kafka_topics["text.in"]
        assert h["x-dlq-reason"].startswith(h["x-dlq-code"]), h
        codes[(rec.key or b"").decode()] = h["x-dlq-code"]
    assert len(dlq) == len(BAD), sorted(codes)  # each bad record once, none lost, none twice
    assert codes == {f"case:{name}": code.value for name, (_v, code) in BAD.items()}

    by_id = {orjson.loads(r.value)["id"]: r for r in raw}
    assert sorted(by_id) == sorted(str(e["id"]) for _, e, _ in VALID)
    for _key, event, want_key in VALID:
        assert by_id[str(event["id"])].key == want_key  # kcat's key ignored; ingest's keying rule
