"""The training progress: periodic log lines with an ETA when stderr is not a terminal."""

from __future__ import annotations

import logging

import pytest
from textpulse.ml.train import Progress, _duration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_logs_once_a_minute_with_eta(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress(10, enabled=True, terminal=False, log_every_s=60, clock=clock)
    with caplog.at_level(logging.INFO, logger="textpulse.ml.train"):
        for _ in range(4):
            clock.now += 20
            progress.advance("loss 1.000")
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    # 20 s a step: the first minute is crossed at step 3, the next at step 6
    assert lines == ["train step 3/10 (30%) elapsed 1m00s eta 2m20s loss 1.000"]


def test_plain_progress_logs_the_last_step(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress(2, enabled=True, terminal=False, log_every_s=3600, clock=clock)
    with caplog.at_level(logging.INFO, logger="textpulse.ml.train"):
        clock.now += 5
        progress.advance("")
        clock.now += 5
        progress.advance("")
    assert [r.getMessage() for r in caplog.records] == ["train step 2/2 (100%) elapsed 0m10s eta 0m00s"]


def test_disabled_progress_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = Progress(1, enabled=False, terminal=False, log_every_s=0, clock=clock)
    with caplog.at_level(logging.INFO, logger="textpulse.ml.train"):
        progress.advance("x")
        progress.close()
    assert not caplog.records


def test_duration_format() -> None:
    assert _duration(59.6) == "1m00s"
    assert _duration(3 * 3600 + 61) == "3h01m01s"
    assert _duration(float("inf")) == "?"
