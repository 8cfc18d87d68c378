"""A seeded random fault schedule, and the kill → restart → recover cycle of one fault.

The replay window is cut into one slot per fault; a seeded shuffle decides which component is
killed in which slot and a seeded draw where in the slot (and for how long it stays dead). Faults
therefore never pile up on each other, every run with the same seed kills in the same order at
the same offsets, and a different seed tries other interleavings.

Time to recover is measured from the SIGKILL to the first moment when the component answers its
readiness probe again (``ready``) and, after that, its consumer groups have either committed
further than they had at the kill or are caught up (``recovered``): answering ``/ready`` is not
enough, the pipeline must move again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from .probe import PROGRESS_GROUPS, GroupState, LagProbe
from .stack import Component

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fault:
    target: str
    at_s: float
    down_s: float


@dataclass
class FaultResult:
    target: str
    at_s: float
    down_s: float
    pid: int | None = None
    ready_s: float | None = None
    recovered_s: float | None = None
    #: restarts by the harness's supervisor (process exited or stayed unready) before it was ready
    restarts: int = 0
    error: str | None = None


def fault_schedule(
    targets: list[str],
    *,
    seed: int,
    window_s: float,
    start_frac: float = 0.08,
    end_frac: float = 0.75,
    down_s: tuple[float, float] = (1.0, 4.0),
) -> list[Fault]:
    """One fault per target, at seeded random times inside ``[start_frac, end_frac]`` of the window."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible schedule, not a secret
    order = list(targets)
    rng.shuffle(order)
    lo, hi = start_frac * window_s, end_frac * window_s
    slot = (hi - lo) / max(1, len(order))
    faults = []
    for i, target in enumerate(order):
        at = lo + slot * (i + rng.uniform(0.1, 0.9))
        faults.append(Fault(target, round(at, 2), round(rng.uniform(*down_s), 2)))
    return faults


async def _group_states(probe: LagProbe, target: str) -> dict[str, GroupState | None]:
    groups = PROGRESS_GROUPS.get(target, ())
    return {g: await probe.group(g) for g in groups}


async def run_fault(
    fault: Fault,
    component: Component,
    probe: LagProbe,
    *,
    t0: float,
    tolerance: int,
    ready_timeout_s: float = 300.0,
    recover_timeout_s: float = 300.0,
) -> FaultResult:
    """Wait for the fault's time, SIGKILL, stay down ``down_s``, restart, measure the recovery."""
    result = FaultResult(fault.target, fault.at_s, fault.down_s)
    await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
    before = await _group_states(probe, fault.target)
    killed_at = time.monotonic()
    result.at_s = round(killed_at - t0, 2)
    result.pid = component.kill()
    log.info("chaos: SIGKILL %s (pid %s) at +%.1fs", fault.target, result.pid, result.at_s)
    try:
        await asyncio.sleep(fault.down_s)
        restarts_before = component.supervisor_restarts
        try:
            await component.start()
            await component.wait_ready(ready_timeout_s)
        finally:
            result.restarts = component.supervisor_restarts - restarts_before
        result.ready_s = time.monotonic() - killed_at
        deadline = time.monotonic() + recover_timeout_s
        while time.monotonic() < deadline:
            now = await _group_states(probe, fault.target)
            if all(_moved(before.get(g), s, tolerance) for g, s in now.items()):
                result.recovered_s = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.5)
        else:
            result.error = f"no progress within {recover_timeout_s:.0f}s after ready"
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log.exception("chaos: %s did not come back", fault.target)
    return result


def _moved(before: GroupState | None, now: GroupState | None, tolerance: int) -> bool:
    if now is None:
        return False
    if now.drained(tolerance):
        return True
    return before is not None and now.committed > before.committed
