"""One dead-letter vocabulary: every reason a service can emit is a ``DeadLetterReason``, counted by ``DeadLetters``.

Read from the source (AST) so a new ``dead_letters.send(...)`` anywhere is checked without running
its service: its category must be a member of the enum, spelled ``DeadLetterReason.<MEMBER>``, and
no service counts ``textpulse_dlq_messages`` itself (``DeadLetters.send`` does, with the category).
"""

from __future__ import annotations

import ast
from pathlib import Path

from textpulse.contracts.dead_letters import DeadLetterReason

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted(
    p for root in ("services", "libs/textpulse") for p in (REPO / root).rglob("*.py") if not p.name.startswith("test_")
)


def _is_enum(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "DeadLetterReason"


def _calls() -> tuple[list[tuple[str, ast.expr]], list[tuple[str, ast.Attribute]]]:
    """The category argument of every ``dead_letters.send(record, category, ...)`` and every ``DeadLetterReason.X``."""
    sends: list[tuple[str, ast.expr]] = []
    refs: list[tuple[str, ast.Attribute]] = []
    for path in SOURCES:
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Attribute) and _is_enum(node.value):
                refs.append((f"{rel}:{node.lineno}", node))
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "send"
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr == "dead_letters"
            ):
                assert len(node.args) >= 2, f"{rel}:{node.lineno}: send(record, category, detail, ...)"
                sends.append((f"{rel}:{node.lineno}", node.args[1]))
    return sends, refs


def test_every_reason_a_service_emits_is_in_the_enum() -> None:
    sends, refs = _calls()
    emitting = {where.split("/")[1] for where, _ in refs if where.startswith("services/")}
    # Each of the seven services dead-letters records by itself, each through the enum.
    assert emitting >= {"alert", "classify", "index", "ingest", "ner", "recommend", "route"}, emitting
    for where, ref in refs:
        assert ref.attr in DeadLetterReason.__members__, f"{where}: {ref.attr} is not a DeadLetterReason"
    for where, arg in sends:
        # A member spelled out, or the parameter of a thin wrapper whose callers spell it (recommend).
        literal = isinstance(arg, ast.Attribute) and _is_enum(arg.value)
        assert literal or (isinstance(arg, ast.Name) and arg.id == "category"), f"{where}: {ast.unparse(arg)}"


def test_no_service_counts_its_own_dead_letters() -> None:
    for path in SOURCES:
        if path.name == "dlq.py":
            continue
        text = path.read_text()
        assert ".dlq.labels(" not in text, f"{path.relative_to(REPO)}: DeadLetters.send counts dead letters"


def test_the_vocabulary_is_small_and_snake_case() -> None:
    # A metric label value: bounded, stable, greppable.
    assert len(DeadLetterReason) <= 8
    for reason in DeadLetterReason:
        assert reason.value == reason.name.lower()
