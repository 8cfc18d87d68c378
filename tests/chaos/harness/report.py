"""Rich tables of a chaos run and of a load run, and the pass/fail verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from .faults import RESUME_TARGET_S, FaultResult
from .logscan import ScanResult
from .stack import SERVICES
from .verify import OutputCheck

console = Console(width=150)


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def judge(
    checks: list[OutputCheck],
    dlq_checks: list[OutputCheck],
    faults: list[FaultResult],
    scan: ScanResult,
    *,
    delivery: str,
    rejected: int,
) -> Verdict:
    """Loss anywhere fails; duplicates fail in Elasticsearch always and in Kafka outputs under exactly-once."""
    v = Verdict()
    if rejected:
        v.failures.append(f"{rejected} replayed events rejected by ingest")
    for c in checks:
        if c.lost:
            v.failures.append(f"{c.output}: {c.lost} lost (e.g. {', '.join(c.missing_sample)})")
        if c.duplicates and (c.output.startswith("es:") or delivery == "exactly_once"):
            v.failures.append(f"{c.output}: {c.duplicates} duplicates")
    for d in dlq_checks:
        if d.lost:
            v.failures.append(f"{d.output}: {d.lost} injected bad records missing")
        if d.seen > d.expected or d.note:
            v.failures.append(
                f"{d.output}: unexpected dead letters ({d.seen} distinct, {d.expected} injected {d.note})"
            )
        if d.duplicates and delivery == "exactly_once":
            v.failures.append(f"{d.output}: {d.duplicates} duplicate dead letters")
    v.failures.extend(f"{f.target}: {f.error}" for f in faults if f.error)
    v.failures.extend(f"log leak: {what} in {path} ({n}x)" for what, path, n in scan.hits)
    return v


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def slow_resumes(faults: list[FaultResult], services: tuple[str, ...] = SERVICES) -> dict[str, float | None]:
    """Services whose first output after the restart came later than :data:`RESUME_TARGET_S` (None: never).

    A service caught up with an input that had stopped (``idle``: its upstream was down) had nothing
    to output and is not counted.
    """
    return {
        f.target: f.output_s
        for f in faults
        if f.target in services and ((f.output_s is None and not f.idle) or (f.output_s or 0.0) > RESUME_TARGET_S)
    }


def fault_table(faults: list[FaultResult]) -> Table:
    t = Table(title=f"faults (SIGKILL, then restart; services' first output ≤ {RESUME_TARGET_S:g} s after the restart)")
    cols = (
        "component",
        "killed at s",
        "pid",
        "down s",
        "ready after s",
        "recovered after s",
        "first output after restart s",
        "re-restarts",
        "error",
    )
    for col in cols:
        t.add_column(col, justify="left" if col in {"component", "error"} else "right")
    slow = slow_resumes(faults)
    for f in sorted(faults, key=lambda f: f.at_s):
        target = f" (≤ {RESUME_TARGET_S:g})" if f.target in SERVICES else ""
        t.add_row(
            f.target,
            f"{f.at_s:.1f}",
            str(f.pid or "—"),
            f"{f.down_s:.1f}",
            _s(f.ready_s),
            _s(f.recovered_s),
            ("idle" if f.output_s is None and f.idle else _s(f.output_s)) + target,
            str(f.restarts),
            f.error or "",
            style="red" if f.error or f.target in slow else None,
        )
    return t


def output_table(checks: list[OutputCheck], *, delivery: str) -> Table:
    t = Table(title=f"outputs ({delivery})")
    for col in ("output", "expected", "seen", "records/docs", "lost", "duplicates", "note"):
        t.add_column(col, justify="left" if col in {"output", "note"} else "right")
    for c in checks:
        bad = c.lost or (c.duplicates and (c.output.startswith("es:") or delivery == "exactly_once"))
        t.add_row(
            c.output,
            str(c.expected),
            str(c.seen),
            str(c.records),
            str(c.lost),
            str(c.duplicates),
            c.note,
            style="red" if bad else None,
        )
    return t


def dlq_table(checks: list[OutputCheck]) -> Table:
    t = Table(title="dead-letter topics (injected bad records only)")
    for col in ("topic", "injected", "distinct", "records", "missing", "redelivered", "note"):
        t.add_column(col, justify="left" if col in {"topic", "note"} else "right")
    for d in checks:
        bad = d.lost or d.seen > d.expected or d.note
        t.add_row(
            d.output,
            str(d.expected),
            str(d.seen),
            str(d.records),
            str(d.lost),
            str(d.duplicates),
            d.note,
            style="red" if bad else None,
        )
    return t


def scan_table(scan: ScanResult, needles: list[str]) -> Table:
    t = Table(title=f"log scan: {scan.files} files, {scan.bytes / 1e6:.1f} MB")
    t.add_column("planted")
    t.add_column("occurrences", justify="right")
    for what in needles:
        n = sum(h[2] for h in scan.hits if h[0] == what)
        t.add_row(what, str(n), style="red" if n else None)
    return t


def timing_table(title: str, rows: dict[str, float]) -> Table:
    t = Table(title=title)
    t.add_column("step")
    t.add_column("seconds", justify="right")
    for k, v in rows.items():
        t.add_row(k, f"{v:.1f}")
    return t
