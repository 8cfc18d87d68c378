"""After a chaos run: what reached each output, what is missing, what came twice, what was dead-lettered.

Definitions (each one only uses facts that do not depend on timing, so a fault-free run and a run
under faults must agree on them):

* ``text.raw`` — ingest's output: every accepted event once (by ``id``). Ingest de-duplicates
  retried requests, so a second record of an id here is ingest's duplicate; every stage
  downstream faithfully processes both records, so a duplicate of ``text.raw`` is counted here and
  *not again* as a duplicate of ``text.enriched``, ``entity.mentions`` or ``support.routed`` (their
  rows show it as inherited in the note): a duplicate in those rows is one their own service wrote.
* ``text.enriched`` — every good event the replay got accepted must appear (by ``event.id``).
  Duplicates: records beyond the first per id, less those inherited from ``text.raw``.
* ``entity.mentions`` — NER emits one mention per distinct entity key of an event, so the expected
  set is ``{(event id, entity key)}`` over the *first* ``text.enriched`` record of every event (the
  mention and the enriched record are written together by the same NER call). Duplicates: records
  beyond the first per pair.
* ``support.routed`` — every ``support`` event of ``text.enriched`` is routed exactly once
  (by ``event_id``).
* ``alerts.financial`` — alert decisions depend on the wall clock (idle partitions release the
  event-time watermark), so no fault-free expectation exists for them; what must hold is that the
  notifications of every alert are contiguous (sequence ``1..n`` per ``alert_id``: a gap is a lost
  notification). Duplicates: repeated ``(alert_id, sequence)``.
* Elasticsearch — one document per enriched event (id = event id), per routed message (id = event
  id) and per alert notification (id = ``alert_id#sequence``); documents are counted across all the
  monthly indices of the run's prefix, so a document written twice into two indices is a duplicate.
* dead-letter topics — exactly the injected bad records (by source topic/partition/offset from the
  dead-letter headers, so a redelivered dead letter counts as a duplicate, not as a second record)
  and nothing else: a good event in a DLQ counts as unexpected.

Topics are read with ``isolation_level="read_committed"``: records of aborted transactions are
invisible, as they are to every consumer of the platform.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from textpulse.contracts.topics import (
    ALERTS_FINANCIAL,
    ALL_TOPICS,
    ENTITY_MENTIONS,
    SUPPORT_ROUTED,
    TEXT_ENRICHED,
    TEXT_RAW,
)
from textpulse.kafka.dlq import H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from textpulse.kafka.read import read_to_end
from textpulse.settings import KafkaSettings

from .workload import Workload

DLQ_TOPICS = [s.name for s in ALL_TOPICS if s.name.startswith("dlq.")]


@dataclass
class OutputCheck:
    output: str
    expected: int
    seen: int  # distinct
    records: int  # total records / documents
    lost: int
    duplicates: int
    note: str = ""
    missing_sample: list[str] = field(default_factory=list)


@dataclass
class Collected:
    """Everything read back from the topics."""

    raw: Counter[str] = field(default_factory=Counter)
    enriched: dict[str, dict[str, Any]] = field(default_factory=dict)
    enriched_records: int = 0
    enriched_counts: Counter[str] = field(default_factory=Counter)
    mentions: Counter[tuple[str, str]] = field(default_factory=Counter)
    routed: Counter[str] = field(default_factory=Counter)
    alerts: Counter[tuple[str, int]] = field(default_factory=Counter)
    dlq: dict[str, Counter[tuple[str, str, str]]] = field(default_factory=dict)
    dlq_values: dict[str, list[bytes]] = field(default_factory=dict)


async def read_topics(settings: KafkaSettings, topics: list[str], timeout_s: float = 120.0) -> dict[str, list[Any]]:
    """Every committed record of ``topics``, read from the beginning up to the current end."""
    return await read_to_end(settings, *topics, timeout_s=timeout_s)


def _loads(value: bytes | None) -> Any:
    try:
        return orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None


def _headers(record: Any) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


async def collect(settings: KafkaSettings) -> Collected:
    topics = [
        TEXT_RAW.name,
        TEXT_ENRICHED.name,
        ENTITY_MENTIONS.name,
        SUPPORT_ROUTED.name,
        ALERTS_FINANCIAL.name,
        *DLQ_TOPICS,
    ]
    records = await read_topics(settings, topics)
    c = Collected()
    for rec in records[TEXT_RAW.name]:
        doc = _loads(rec.value)
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            c.raw[doc["id"]] += 1
    for rec in records[TEXT_ENRICHED.name]:
        doc = _loads(rec.value)
        ev_id = doc.get("event", {}).get("id") if isinstance(doc, dict) else None
        if ev_id is None:
            continue
        c.enriched_records += 1
        c.enriched_counts[ev_id] += 1
        c.enriched.setdefault(ev_id, doc)
    for rec in records[ENTITY_MENTIONS.name]:
        doc = _loads(rec.value)
        if isinstance(doc, dict) and "event_id" in doc:
            c.mentions[(doc["event_id"], doc["entity_key"])] += 1
    for rec in records[SUPPORT_ROUTED.name]:
        doc = _loads(rec.value)
        if isinstance(doc, dict) and "event_id" in doc:
            c.routed[doc["event_id"]] += 1
    for rec in records[ALERTS_FINANCIAL.name]:
        doc = _loads(rec.value)
        if isinstance(doc, dict) and "alert_id" in doc:
            c.alerts[(doc["alert_id"], int(doc["sequence"]))] += 1
    for name in DLQ_TOPICS:
        counter: Counter[tuple[str, str, str]] = Counter()
        for rec in records[name]:
            h = _headers(rec)
            counter[(h.get(H_SOURCE_TOPIC, "?"), h.get(H_SOURCE_PARTITION, "?"), h.get(H_SOURCE_OFFSET, "?"))] += 1
        c.dlq[name] = counter
        c.dlq_values[name] = [rec.value or b"" for rec in records[name]]
    return c


def _check(
    output: str,
    expected: set[Any],
    seen: Counter[Any],
    *,
    records: int | None = None,
    note: str = "",
    inherited: int = 0,
) -> OutputCheck:
    """``inherited``: duplicates that were already in the input (``text.raw``), not this stage's own."""
    missing = expected - set(seen)
    total = sum(seen.values()) if records is None else records
    if inherited:
        note = f"{note}; " if note else ""
        note += f"+{inherited} inherited from text.raw duplicates"
    return OutputCheck(
        output,
        len(expected),
        len(set(seen) & expected) if expected else len(seen),
        total,
        len(missing),
        total - len(seen) - inherited,
        note,
        sorted(map(str, missing))[:5],
    )


def inherited_duplicates(seen: Counter[Any], raw: Counter[str], event_id: Any = lambda key: key) -> int:
    """Extra records of ``seen`` explained by extra records of their event in ``text.raw``.

    A stage that processes each input record exactly once writes an event's output once per
    ``text.raw`` record of it; only what exceeds that is the stage's own duplicate.
    """
    return sum(min(n - 1, raw.get(event_id(key), 1) - 1) for key, n in seen.items() if n > 1)


async def es_documents(es_url: str, prefix: str, family: str) -> Counter[str]:
    """Document ids across every index of ``<prefix>-<family>-*`` (point-in-time-free scroll)."""
    ids: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=es_url, timeout=60.0) as client:
        await client.post(f"/{prefix}-{family}-*/_refresh", params={"ignore_unavailable": "true"})
        resp = await client.post(
            f"/{prefix}-{family}-*/_search",
            params={"scroll": "1m", "ignore_unavailable": "true", "allow_no_indices": "true"},
            json={"size": 5000, "_source": False, "sort": ["_doc"]},
        )
        resp.raise_for_status()
        body = resp.json()
        scroll_id = body.get("_scroll_id")
        try:
            while hits := body["hits"]["hits"]:
                ids.update(h["_id"] for h in hits)
                resp = await client.post("/_search/scroll", json={"scroll": "1m", "scroll_id": scroll_id})
                resp.raise_for_status()
                body = resp.json()
                scroll_id = body.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                with contextlib.suppress(httpx.HTTPError):
                    await client.request("DELETE", "/_search/scroll", json={"scroll_id": scroll_id})
    return ids


def _alert_gaps(alerts: Counter[tuple[str, int]]) -> set[str]:
    by_id: dict[str, set[int]] = {}
    for alert_id, seq in alerts:
        by_id.setdefault(alert_id, set()).add(seq)
    gaps: set[str] = set()
    for alert_id, seqs in by_id.items():
        gaps.update(f"{alert_id}#{n}" for n in range(1, max(seqs) + 1) if n not in seqs)
    return gaps


async def verify(
    settings: KafkaSettings, workload: Workload, accepted: set[str], *, es_url: str, index_prefix: str
) -> tuple[list[OutputCheck], list[OutputCheck], Collected]:
    """Output checks and dead-letter checks of a run whose replay got ``accepted`` ids in."""
    c = await collect(settings)
    checks = [
        _check(TEXT_RAW.name, accepted, c.raw, note="ingest"),
        _check(
            TEXT_ENRICHED.name,
            accepted,
            c.enriched_counts,
            records=c.enriched_records,
            inherited=inherited_duplicates(c.enriched_counts, c.raw),
        ),
    ]
    expected_mentions = {
        (ev_id, ent["key"]) for ev_id, doc in c.enriched.items() if ev_id in accepted for ent in doc.get("entities", [])
    }
    checks.append(
        _check(
            ENTITY_MENTIONS.name,
            expected_mentions,
            c.mentions,
            note="from text.enriched entities",
            inherited=inherited_duplicates(c.mentions, c.raw, lambda key: key[0]),
        )
    )
    support = {i for i in accepted if i in workload.support_ids}
    checks.append(_check(SUPPORT_ROUTED.name, support, c.routed, inherited=inherited_duplicates(c.routed, c.raw)))
    gaps = _alert_gaps(c.alerts)
    notifications = set(c.alerts)
    alert_check = _check(
        ALERTS_FINANCIAL.name,
        {f"{a}#{s}" for a, s in notifications} | gaps,
        Counter({f"{a}#{s}": n for (a, s), n in c.alerts.items()}),
        note=f"{len({a for a, _ in notifications})} alerts; lost = sequence gaps",
    )
    checks.append(alert_check)
    es_events = await es_documents(es_url, index_prefix, "events")
    checks.append(_check("es: events", accepted, es_events))
    es_routes = await es_documents(es_url, index_prefix, "routes")
    checks.append(_check("es: routes", support, es_routes))
    es_alerts = await es_documents(es_url, index_prefix, "alerts")
    checks.append(_check("es: alerts", {f"{a}#{s}" for a, s in notifications}, es_alerts))
    dlq_checks = []
    expected_dlq = workload.expected_dlq_counts()
    for name in DLQ_TOPICS:
        counter = c.dlq.get(name, Counter())
        exp = expected_dlq.get(name, 0)
        good_leaked = sum(
            1 for v in c.dlq_values.get(name, []) if isinstance(d := _loads(v), dict) and _good_id(d) in accepted
        )
        distinct = len(counter)
        dlq_checks.append(
            OutputCheck(
                name,
                exp,
                distinct,
                sum(counter.values()),
                max(0, exp - distinct),
                sum(counter.values()) - distinct,
                note=f"{good_leaked} good events" if good_leaked else "",
            )
        )
    return checks, dlq_checks, c


def _good_id(doc: dict[str, Any]) -> str | None:
    ev = doc.get("event", doc)
    value = ev.get("id") if isinstance(ev, dict) else None
    return value if isinstance(value, str) else doc.get("event_id")
