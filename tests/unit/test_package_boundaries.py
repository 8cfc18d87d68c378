"""Boundaries of the product (issue #24): benchmarks are product tooling and import nothing from tests/."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_benchmarks_import_no_tests() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(m for m in _imports(path) if m == "tests" or m.startswith("tests."))
        for path in sorted((REPO / "bench").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_library_imports_no_tests() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "libs" / "textpulse").rglob("*.py"))
        if not path.name.startswith("test_") and any(m == "tests" or m.startswith("tests.") for m in _imports(path))
    ]
    assert offenders == []
