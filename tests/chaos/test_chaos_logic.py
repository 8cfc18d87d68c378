"""The chaos harness's pure parts: schedule, verdict arithmetic, trend fit, log scan (no components)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tests.chaos.harness.faults import FaultResult, fault_schedule
from tests.chaos.harness.load import Series
from tests.chaos.harness.logscan import ScanResult, scan_logs
from tests.chaos.harness.report import judge
from tests.chaos.harness.verify import OutputCheck, _alert_gaps, _check, inherited_duplicates
from tests.chaos.harness.workload import bad_records

TARGETS = ["ingest", "classify", "ner", "alert", "route", "index", "triton", "elasticsearch", "kafka"]


def test_schedule_is_seeded_one_fault_per_target_inside_the_window() -> None:
    a = fault_schedule(TARGETS, seed=7, window_s=100)
    assert a == fault_schedule(TARGETS, seed=7, window_s=100)
    assert a != fault_schedule(TARGETS, seed=8, window_s=100)
    assert sorted(f.target for f in a) == sorted(TARGETS)
    times = [f.at_s for f in a]
    assert times == sorted(times), "one slot per fault, in order"
    assert all(8 <= t <= 75 for t in times)
    assert all(1.0 <= f.down_s <= 4.0 for f in a)


def test_check_counts_lost_and_duplicates() -> None:
    c = _check("text.enriched", {"a", "b", "c"}, Counter({"a": 2, "b": 1}))
    assert (c.expected, c.seen, c.records, c.lost, c.duplicates) == (3, 2, 3, 1, 1)
    assert c.missing_sample == ["c"]


def test_duplicates_already_in_text_raw_are_ingests_not_the_downstream_stages() -> None:
    # The 2026-12-06 13:12 chaos run: ingest wrote one event 5 times (replay retries of a request that
    # timed out while the broker was down); NER, exactly-once, then wrote it 5 times as well.
    raw = Counter({"a": 5, "b": 1, "c": 1})
    enriched = Counter({"a": 5, "b": 2, "c": 1})
    c = _check("text.enriched", {"a", "b", "c"}, enriched, inherited=inherited_duplicates(enriched, raw))
    assert (c.records, c.duplicates) == (8, 1), "only b's second record is the stage's own duplicate"
    assert "+4 inherited from text.raw" in c.note
    mentions = Counter({("a", "x"): 5, ("a", "y"): 6, ("b", "x"): 1})
    assert inherited_duplicates(mentions, raw, lambda key: key[0]) == 8


def test_alert_sequence_gaps_are_lost_notifications() -> None:
    assert _alert_gaps(Counter({("x", 1): 1, ("x", 3): 1, ("y", 1): 2})) == {"x#2"}


def _out(name: str, lost: int = 0, dup: int = 0) -> OutputCheck:
    return OutputCheck(name, 10, 10 - lost, 10 - lost + dup, lost, dup)


def test_verdict_duplicates_fail_only_under_exactly_once_or_in_elasticsearch() -> None:
    scan = ScanResult()
    dup_kafka = [_out("text.enriched", dup=2)]
    assert judge(dup_kafka, [], [], scan, delivery="at_least_once", rejected=0).ok
    assert not judge(dup_kafka, [], [], scan, delivery="exactly_once", rejected=0).ok
    assert not judge([_out("es: events", dup=1)], [], [], scan, delivery="at_least_once", rejected=0).ok
    assert not judge([_out("support.routed", lost=1)], [], [], scan, delivery="at_least_once", rejected=0).ok
    failed_restart = [FaultResult("kafka", 1.0, 1.0, error="TimeoutError")]
    assert not judge([], [], failed_restart, scan, delivery="at_least_once", rejected=0).ok


def test_unexpected_dead_letters_fail() -> None:
    dlq = [OutputCheck("dlq.classify", 1, 2, 2, 0, 0)]
    assert not judge([], dlq, [], ScanResult(), delivery="at_least_once", rejected=0).ok


def test_every_bad_record_names_the_dead_letter_topics_it_must_reach() -> None:
    for rec in bad_records():
        assert rec.expected_dlqs
        assert all(t.startswith("dlq.") for t in rec.expected_dlqs)


def test_series_trend_on_the_second_half() -> None:
    flat = Series(list(range(100)), [50.0 + (i % 7) for i in range(100)])
    assert abs(flat.rise()) < 5
    growing = Series(list(range(100)), [float(i) for i in range(100)])
    assert growing.rise() > 45


def test_log_scan_names_what_leaked_not_the_value(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text('{"msg": "login with hunter2"}\n')
    (tmp_path / "b.log").write_text("clean\n")
    result = scan_logs([tmp_path / "a.log", tmp_path / "b.log"], {"password": "hunter2", "email": "x@y.z"})
    assert result.files == 2
    assert result.hits == [("password", str(tmp_path / "a.log"), 1)]


def test_slow_or_missing_first_output_after_restart_is_over_target() -> None:
    from tests.chaos.harness.report import slow_resumes

    faults = [
        FaultResult("classify", 1.0, 1.0, output_s=3.2),
        FaultResult("ner", 2.0, 1.0, output_s=12.5),
        FaultResult("route", 3.0, 1.0),
        FaultResult("alert", 3.5, 1.0, idle=True),  # caught up, its input had stopped
        FaultResult("kafka", 4.0, 1.0, output_s=40.0),  # infrastructure: no target
    ]
    assert slow_resumes(faults) == {"ner": 12.5, "route": None}
