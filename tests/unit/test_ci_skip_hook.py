"""tests/ci.py: one reading of ``CI``, and a CI session that skips or deselects anything fails.

Each case runs an inner pytest session (``pytester``, in-process) with the
plugin loaded the way the root conftest loads it.
"""

from __future__ import annotations

import pytest

from tests.ci import in_ci, missing

pytest_plugins = ("pytester",)

PASSING = """
def test_ok():
    assert True
"""

SKIPPING = """
import pytest

def test_ok():
    assert True

def test_needs_widget():
    pytest.skip("widget server is not running")

@pytest.mark.skipif(True, reason="no gadget binary")
def test_needs_gadget():
    pass
"""


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The inner ini is empty: pin the pytest-asyncio option the repository sets, to keep its warning out.
    opts = ("-o", "asyncio_default_fixture_loop_scope=function")
    return pytester.runpytest("-p", "tests.ci", "-p", "no:cacheprovider", "-ra", *opts, *args)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        (" true ", True),
        ("", False),
        ("false", False),
        ("0", False),
    ],
)
def test_one_reading_of_ci(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_unset_ci_is_not_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert not in_ci()


def test_missing_fails_in_ci_and_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and widget not available: make widget-up"):
        missing("widget", "make widget-up")
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="widget not available: make widget-up"):
        missing("widget", "make widget-up")


def test_ci_session_with_skips_fails_listing_them(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_inner=SKIPPING)
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        [
            "*CI=true: a CI run must run every test*",
            "SKIPPED test_inner.py::test_needs_widget: widget server is not running",
            "SKIPPED test_inner.py::test_needs_gadget: no gadget binary",
            "2 skipped, 0 deselected:*the session fails.",
        ]
    )


def test_ci_session_without_skips_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_inner=PASSING)
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*CI=true: a CI run must run every test*")


def test_ci_session_with_deselected_tests_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeini("[pytest]\nmarkers =\n    kafka: needs Kafka\n")
    pytester.makepyfile(
        test_inner="""
import pytest

def test_ok():
    pass

@pytest.mark.kafka
def test_on_kafka():
    pass
"""
    )
    result = run_inner(pytester, "-m", "not kafka")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["DESELECTED test_inner.py::test_on_kafka", "0 skipped, 1 deselected:*"])


def test_ci_session_with_a_skipped_module_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(
        test_ok=PASSING,
        test_gone="""
import pytest

pytest.importorskip("a_module_that_is_not_installed")

def test_never_collected():
    pass
""",
    )
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_gone.py: *a_module_that_is_not_installed*"])


def test_xfail_is_not_a_lost_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(
        test_inner="""
import pytest

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False
"""
    )
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(xfailed=1)


def test_ci_session_that_deselects_everything_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the guard this would end with "no tests ran" (exit 5); under CI it is a failure (exit 1)."""
    monkeypatch.setenv("CI", "true")
    pytester.makepyfile(test_inner="def test_broken():\n    assert False\n")
    result = run_inner(pytester, "--collect-only", "-k", "nothing_matches")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["DESELECTED test_inner.py::test_broken"])


def test_local_session_with_skips_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    pytester.makepyfile(test_inner=SKIPPING)
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.no_fnmatch_line("*CI=true*")


def test_the_repository_loads_the_guard(request: pytest.FixtureRequest) -> None:
    """The root conftest registers tests.ci for every path (tests/, libs/, services/)."""
    assert request.config.pluginmanager.has_plugin("tests.ci")
