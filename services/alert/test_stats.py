"""Unit tests of the EW baseline."""

from __future__ import annotations

import math
import random

import pytest

from .stats import EwStat


def test_first_value_sets_mean() -> None:
    s = EwStat()
    s.update(4.0, 0.1)
    assert (s.mean, s.var, s.n) == (4.0, 0.0, 1)


def test_converges_to_stream_mean_and_std() -> None:
    rng = random.Random(1)
    s = EwStat()
    for _ in range(5000):
        s.update(rng.gauss(10.0, 2.0), 0.01)
    assert s.mean == pytest.approx(10.0, abs=0.5)
    assert s.std == pytest.approx(2.0, abs=0.4)


def test_zscore_uses_floor() -> None:
    s = EwStat()
    for _ in range(10):
        s.update(1.0, 0.1)
    assert s.std == 0.0
    assert s.zscore(2.0, 0.5) == pytest.approx(2.0)
    assert math.isfinite(s.zscore(100.0, 1e-9))


def test_decay_equals_repeated_zero_updates() -> None:
    a, b = EwStat(), EwStat()
    for x in (3.0, 5.0, 4.0, 8.0):
        a.update(x, 0.1)
        b.update(x, 0.1)
    for _ in range(37):
        a.update(0.0, 0.1)
    b.decay(37, 0.1)
    assert b.mean == pytest.approx(a.mean)
    assert b.var == pytest.approx(a.var)
    assert b.n == a.n
