"""What a chaos run replays: real events from the shared data sets, a few PII texts, and bad records.

Good events are real tweets (``twitter_fin_sentiment``, the financial path: sentiment, topic,
entities, alerts) and real banking questions (``banking77``, the support path: intent, routing),
with stable ids (``replay:<dataset>:<split>:<row>``). A few support messages carry an e-mail
address and a phone number, so the log scan has raw PII to look for.

Bad records are produced straight into the topics a service consumes, one kind per service, and
each must end in that service's dead-letter topic and nowhere else:

========================  ================  ====================================
topic                     record            expected in
========================  ================  ====================================
text.in                   truncated JSON    dlq.ingest
text.in                   not UTF-8         dlq.ingest
text.in                   schema violation  dlq.ingest
text.raw                  truncated JSON    dlq.classify
text.classified           truncated JSON    dlq.ner
entity.mentions           truncated JSON    dlq.alert
text.enriched             truncated JSON    dlq.route, dlq.alert, dlq.index
========================  ================  ====================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from textpulse.contracts.topics import ENTITY_MENTIONS, TEXT_CLASSIFIED, TEXT_ENRICHED, TEXT_IN, TEXT_RAW, dlq
from textpulse.replay import build_events

FINANCIAL_FILE = "twitter_fin_sentiment/sent_train.csv"
SUPPORT_FILE = "banking77/train.csv"
#: PII planted in a few replayed texts; none of it may appear in any log of the run
PII_EMAIL = "jane.doe.chaos@example.org"
PII_PHONE = "+44 20 7946 0958"
#: fake secrets set in every service's environment for the run (PLAINTEXT ignores them)
FAKE_SASL_PASSWORD = "chaos-Sasl-Pw-7f3a9c1e"  # a planted fake, searched for in the logs
FAKE_API_KEY = "chaos-api-key-5b8d2e40aa"


@dataclass(frozen=True)
class BadRecord:
    topic: str
    value: bytes
    #: dead-letter topics it must reach (each exactly once, in exactly-once mode)
    expected_dlqs: tuple[str, ...]
    label: str


@dataclass
class Workload:
    events: list[dict[str, Any]]
    bad: list[BadRecord] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def good_ids(self) -> set[str]:
        return {e["id"] for e in self.events}

    @property
    def support_ids(self) -> set[str]:
        return {e["id"] for e in self.events if e["channel"] == "support"}

    def expected_dlq_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for rec in self.bad:
            for name in rec.expected_dlqs:
                counts[name] = counts.get(name, 0) + 1
        return counts


def bad_records() -> list[BadRecord]:
    truncated = b'{"id": "chaos-bad", "source": "chaos", "channel": "news", "text": "cut'
    schema = b'{"id": "chaos-bad-schema", "source": "chaos", "channel": "carrier-pigeon", "text": 42}'
    return [
        BadRecord(TEXT_IN.name, truncated, (dlq("ingest").name,), "text.in truncated JSON"),
        BadRecord(TEXT_IN.name, b"\xff\xfe\x00 not utf-8", (dlq("ingest").name,), "text.in not UTF-8"),
        BadRecord(TEXT_IN.name, schema, (dlq("ingest").name,), "text.in schema violation"),
        BadRecord(TEXT_RAW.name, truncated, (dlq("classify").name,), "text.raw truncated JSON"),
        BadRecord(TEXT_CLASSIFIED.name, truncated, (dlq("ner").name,), "text.classified truncated JSON"),
        BadRecord(ENTITY_MENTIONS.name, truncated, (dlq("alert").name,), "entity.mentions truncated JSON"),
        BadRecord(
            TEXT_ENRICHED.name,
            truncated,
            (dlq("route").name, dlq("alert").name, dlq("index").name),
            "text.enriched truncated JSON",
        ),
    ]


def build_workload(events: int, *, seed: int, support_share: float = 0.3, pii_events: int = 3) -> Workload:
    """``events`` real events (a ``support_share`` of them banking questions), shuffled with ``seed``.

    Event times are spread over the last hour, so the alert windows see a realistic flow.
    """
    n_support = max(pii_events, int(events * support_share))
    n_fin = max(0, events - n_support)
    start = datetime.now(UTC) - timedelta(hours=1)
    fin = build_events(FINANCIAL_FILE, channel="social", limit=n_fin, spread=timedelta(hours=1), start=start)
    sup = build_events(SUPPORT_FILE, channel="support", limit=n_support, spread=timedelta(hours=1), start=start)
    for i, ev in enumerate(sup):
        ev["conversation_id"] = f"chaos-conv-{i % 40}"
        ev["user_id"] = f"chaos-user-{i % 97}"
    for ev in sup[:pii_events]:
        ev["text"] = f"{ev['text']} You can reach me at {PII_EMAIL} or {PII_PHONE}."
    rng = random.Random(seed)  # a reproducible order, not a secret
    merged = fin + sup
    rng.shuffle(merged)
    # Event times in replay order again, so the alert watermark sees an ordered flow.
    step = timedelta(hours=1) / max(1, len(merged))
    for i, ev in enumerate(merged):
        ev["event_time"] = (start + i * step).isoformat()
    return Workload(
        merged,
        bad_records(),
        {"sasl password": FAKE_SASL_PASSWORD, "api key": FAKE_API_KEY, "e-mail": PII_EMAIL, "phone": PII_PHONE},
    )


def secret_env() -> dict[str, str]:
    """Fake credentials every process of the run gets; a leak of any of them into a log fails the run."""
    return {
        "TEXTPULSE_KAFKA_SASL_USERNAME": "chaos-user",
        "TEXTPULSE_KAFKA_SASL_PASSWORD": FAKE_SASL_PASSWORD,
        "TEXTPULSE_CHAOS_API_KEY": FAKE_API_KEY,
    }
