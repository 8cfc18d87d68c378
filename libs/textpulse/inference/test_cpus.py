"""The in-process runtimes' default threads follow what limits the process (joblib's cpu_count)."""

from __future__ import annotations

import os

import pytest

from textpulse.inference.cpus import container_threads
from textpulse.inference.settings import InferenceSettings


@pytest.fixture(autouse=True)
def _no_thread_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tests of the session may have left TEXTPULSE_LOCAL_THREADS in os.environ
    # (tests/integration/test_classify_ner_kafka.py sets it for its services).
    monkeypatch.delenv("TEXTPULSE_LOCAL_THREADS", raising=False)
    monkeypatch.delenv("LOKY_MAX_CPU_COUNT", raising=False)


def test_an_unlimited_process_keeps_the_library_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(os.cpu_count() or 1)))
    monkeypatch.setattr("joblib.externals.loky.backend.context._cpu_count_cgroup", lambda n: n)
    assert container_threads() is None
    assert InferenceSettings().local_threads is None


def test_a_quota_below_the_host_sets_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(64)))
    # A 1500m Kubernetes limit: the CFS quota is 1.5 CPUs, which joblib rounds up.
    monkeypatch.setattr("joblib.externals.loky.backend.context._cpu_count_cgroup", lambda _n: 2)
    assert container_threads() == 2
    assert InferenceSettings().local_threads == 2


def test_a_cpuset_below_the_host_sets_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {4, 5, 6})
    monkeypatch.setattr("joblib.externals.loky.backend.context._cpu_count_cgroup", lambda n: n)
    assert container_threads() == 3


def test_the_setting_wins_over_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr("joblib.externals.loky.backend.context._cpu_count_cgroup", lambda _n: 2)
    monkeypatch.setenv("TEXTPULSE_LOCAL_THREADS", "5")
    assert InferenceSettings().local_threads == 5
