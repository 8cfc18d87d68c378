"""requirements.lock agrees with pyproject.toml (issue #23, packaging; regenerate with `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;,#]+))?")


def _norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text("utf-8").splitlines():
        match = LOCK_LINE.match(line)
        if match:
            pins[_norm(match[1])] = match[2]
    return pins


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    found = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        found += extra
    return found


def test_every_pin_is_locked_at_the_same_version() -> None:
    lock = _lock()
    wrong = []
    for requirement in _requirements():
        match = REQUIREMENT.match(requirement)
        assert match, requirement
        name, pinned = _norm(match[1]), match[2]
        if name not in lock:
            wrong.append(f"{requirement}: not in requirements.lock")
        elif pinned is not None and lock[name] != pinned:
            wrong.append(f"{requirement}: locked {lock[name]}")
    assert wrong == [], "run `make lock`"


def test_every_locked_version_has_hashes() -> None:
    text = (REPO / "requirements.lock").read_text("utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [b.split()[0] for b in blocks if LOCK_LINE.match(b) and "--hash=sha256:" not in b]
    assert unhashed == []
    assert len(_lock()) >= len(_requirements())


def test_lock_header_is_the_make_lock_command() -> None:
    header = (REPO / "requirements.lock").read_text("utf-8").splitlines()[1].lstrip("#").strip()
    recipe = (REPO / "Makefile").read_text("utf-8").split("\nlock:", 1)[1].splitlines()[1].strip()
    assert recipe.removeprefix("$(VENV)/bin/") == header
