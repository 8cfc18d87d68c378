"""Streaming statistics: an exponentially weighted mean and variance.

The EW variance uses the incremental form (West 1979 / Finch 2009):
``diff = x − mean; incr = α·diff; mean += incr; var = (1 − α)·(var + diff·incr)``,
so a baseline costs two floats per figure and follows slow drift (a company
that is discussed more over weeks) while a burst stands out against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class EwStat:
    """EW mean / variance of one figure; ``n`` counts the updates (warm-up).

    A plain dataclass (pydantic still serialises it inside the key state): it
    is updated once per window per key, the hottest path of the service.
    """

    mean: float = 0.0
    var: float = 0.0
    n: int = 0

    def update(self, x: float, alpha: float) -> None:
        """Fold ``x`` in; the first value sets the mean."""
        if self.n == 0:
            self.mean, self.var = x, 0.0
        else:
            diff = x - self.mean
            incr = alpha * diff
            self.mean += incr
            self.var = (1.0 - alpha) * (self.var + diff * incr)
        self.n += 1

    def decay(self, windows: int, alpha: float) -> None:
        """Fold in ``windows`` zeros at once (a quiet key): closed form of ``update(0)`` repeated.

        With ``r = 1 − α``: ``mean_n = r^n·mean`` and ``var_n = r^n·(var + mean²·(1 − r^n))``.
        """
        if windows <= 0 or self.n == 0:
            return
        rn = (1.0 - alpha) ** windows
        self.var = rn * (self.var + self.mean * self.mean * (1.0 - rn))
        self.mean *= rn
        self.n += windows

    @property
    def std(self) -> float:
        """Standard deviation (0 before two updates)."""
        return math.sqrt(max(self.var, 0.0))

    def zscore(self, x: float, floor: float) -> float:
        """``(x − mean) / max(std, floor)``: the floor keeps a flat history from making every blip infinite."""
        return (x - self.mean) / max(self.std, floor)
