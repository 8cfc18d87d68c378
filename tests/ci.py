"""What "in CI" means, and the pytest plugin that makes a CI run refuse skips.

The single definition: the ``CI`` environment variable is ``true``, ``1`` or
``yes`` in any case (GitHub Actions, GitLab CI and ``.ci/run`` export
``CI=true``). Every test reads it through :func:`in_ci` or :func:`missing`;
nothing else in the repository reads ``CI``.

A missing component, data set or binary skips a test on a developer's machine
(with the command that provides it) and fails it under CI. The plugin part of
this module is the net under that rule: under CI it records every test that
was skipped (at collection or at run time, however the skip was written) or
deselected (``-m``, ``-k``, ``--deselect``), lists them at the end, and turns
the session's exit status into a failure. A CI run therefore reports
``0 skipped``, or fails. The root ``conftest.py`` registers the plugin, so it
is active for any path pytest is pointed at (``tests``, ``libs``, ``services``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

#: Values of ``CI`` that mean "this is a CI run" (compared lower-cased, stripped).
CI_TRUE = frozenset({"1", "true", "yes"})


def in_ci() -> bool:
    """True when ``CI`` says this is a CI run; read on every call so tests can set it."""
    return os.environ.get("CI", "").strip().lower() in CI_TRUE


def missing(component: str, how: str) -> NoReturn:
    """Fail under CI, skip locally: a missing component never passes silently in CI.

    ``how`` says why it is missing or how to provide it (a make target, a script).
    """
    msg = f"{component} not available: {how}"
    if in_ci():
        pytest.fail(f"CI=true and {msg}", pytrace=False)
    pytest.skip(msg)


def require_dataset(name: str | None = None) -> Path:
    """The shared data directory (with ``name`` staged in it); :func:`missing` otherwise."""
    from textpulse.datasets import data_dir

    try:
        root: Path = data_dir()
    except FileNotFoundError as exc:
        missing("the shared datasets", str(exc))
    if name is not None and not (root / name).exists():
        missing(name, f"not staged in {root}")
    return root


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """The skip message of a report (``longrepr`` is ``(path, line, reason)`` for skips)."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # pytest: (path, line, message)
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class CISkipGuard:
    """Under CI: collect every skipped or deselected test and fail the session listing them."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []
        self.deselected: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.skipped:  # a module-level skip / importorskip: every test in it is lost
            self.skipped.append((report.nodeid, _reason(report)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # An xfail is reported as "skipped" with ``wasxfail``: it ran, so it is not a lost test.
        if report.skipped and not hasattr(report, "wasxfail"):
            self.skipped.append((report.nodeid, _reason(report)))

    def pytest_deselected(self, items: Sequence[pytest.Item]) -> None:
        self.deselected.extend(item.nodeid for item in items)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if (self.skipped or self.deselected) and session.exitstatus in (
            pytest.ExitCode.OK,
            pytest.ExitCode.NO_TESTS_COLLECTED,
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not (self.skipped or self.deselected):
            return
        tr = terminalreporter
        tr.write_sep("=", "CI=true: a CI run must run every test", red=True, bold=True)
        for nodeid, reason in self.skipped:
            tr.write_line(f"SKIPPED {nodeid}: {reason}")
        for nodeid in self.deselected:
            tr.write_line(f"DESELECTED {nodeid}")
        tr.write_line(
            f"{len(self.skipped)} skipped, {len(self.deselected)} deselected: provide the missing component "
            "(`make test` installs and starts them) and run without -m/-k/--deselect; the session fails."
        )


def pytest_configure(config: pytest.Config) -> None:
    if in_ci():
        config.pluginmanager.register(CISkipGuard(), "textpulse-ci-skip-guard")
