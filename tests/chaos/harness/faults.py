"""A seeded random fault schedule, and the kill → restart → recover cycle of one fault.

The replay window is cut into one slot per fault; a seeded shuffle decides which component is
killed in which slot and a seeded draw where in the slot (and for how long it stays dead). Faults
therefore never pile up on each other, every run with the same seed kills in the same order at
the same offsets, and a different seed tries other interleavings.

Time to recover is measured from the SIGKILL to the first moment when the component answers its
readiness probe again (``ready``) and, after that, its consumer groups have either committed
further than they had at the kill or are caught up (``recovered``): answering ``/ready`` is not
enough, the pipeline must move again.

Time to first output (``output_s``, the ≤ 10 s target of :data:`RESUME_TARGET_S` for the
services) is measured from the restart (the new process spawned, i.e. including its start-up
and model loading) to the first sign of new output: its consumer groups committed further (a
commit comes only after the batch's outputs were acknowledged, and under exactly-once it is part
of the outputs' transaction, i.e. the moment they become visible), or for ingest the end offset
of ``text.raw`` (its HTTP path, :data:`OUTPUT_TOPICS`) moved. Probed every 0.25 s from the restart,
or from the return of a component it depends on (:data:`DEPENDS_ON`, and Kafka) if another
fault had that one down: a service cannot output while Triton is down, however fast it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from textpulse.contracts.topics import TEXT_RAW
from textpulse.settings import KafkaSettings

from .probe import PROGRESS_GROUPS, GroupState, LagProbe
from .stack import Component

log = logging.getLogger(__name__)

#: Restart to first output, at most (issue #22: "back in seconds").
RESUME_TARGET_S = 10.0
#: component -> non-transactional topics only it writes (their end offsets move when it works again).
#: Not the transactional outputs: the abort marker of a killed predecessor's transaction moves their
#: end offsets too; there the group's commit, in the same transaction as the outputs, is the signal.
OUTPUT_TOPICS: dict[str, tuple[str, ...]] = {"ingest": (TEXT_RAW.name,)}
#: component -> what it cannot work without besides Kafka: its first output is timed from their return.
DEPENDS_ON: dict[str, tuple[str, ...]] = {"classify": ("triton",), "ner": ("triton",), "index": ("elasticsearch",)}


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
    #: restart (process spawned) -> first new output record or commit (see the module doc)
    output_s: float | None = None
    #: no first output because the component was caught up with an input that had stopped
    idle: bool = False
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
    rng = random.Random(seed)  # a reproducible schedule, not a secret
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
    deps: Sequence[Component] = (),
) -> FaultResult:
    """Wait for the fault's time, SIGKILL, stay down ``down_s``, restart, measure the recovery.

    ``deps``: components the target cannot work without (another fault may have them down): the
    first output is timed from the restart or from their return, whichever is later.
    """
    result = FaultResult(fault.target, fault.at_s, fault.down_s)
    watcher: asyncio.Task[float] | None = None
    await asyncio.sleep(max(0.0, t0 + fault.at_s - time.monotonic()))
    before = await _group_states(probe, fault.target)
    killed_at = time.monotonic()
    result.at_s = round(killed_at - t0, 2)
    result.pid = component.kill()
    log.info("chaos: SIGKILL %s (pid %s) at +%.1fs", fault.target, result.pid, result.at_s)
    try:
        await asyncio.sleep(fault.down_s)
        restarts_before = component.supervisor_restarts
        baseline = await _output_marks(probe, fault.target)
        restarted_at = time.monotonic()
        watcher = asyncio.create_task(_first_output(probe.settings, fault.target, baseline, restarted_at, deps))
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
        # Outputs can only lag the recovery by a poll; a component without any output never sets it.
        with contextlib.suppress(TimeoutError):
            result.output_s = await asyncio.wait_for(asyncio.shield(watcher), 10.0)
        if result.output_s is None:
            # Nothing to output: caught up with an input that stopped (e.g. upstream waits for Triton).
            # The broker may be down meanwhile (its own fault): ask again until it answers.
            states = await _group_states(probe, fault.target)
            for _ in range(int(recover_timeout_s)):
                if states and all(s is not None for s in states.values()):
                    break
                await asyncio.sleep(1.0)
                states = await _group_states(probe, fault.target)
            result.idle = bool(states) and all(s is not None and s.drained(tolerance) for s in states.values())
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        log.exception("chaos: %s did not come back", fault.target)
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
    return result


async def _is_ready(component: Component) -> bool:
    try:
        return await component.ready()
    except Exception:  # a component that does not answer is not ready
        return False


async def _output_marks(probe: LagProbe, target: str) -> dict[str, int] | None:
    """End offsets (summed per topic) of the target's output topics and its groups' committed sums."""
    marks: dict[str, int] = {}
    for topic in OUTPUT_TOPICS.get(target, ()):
        ends = await probe.end_offsets(topic)
        if ends is None:
            return None
        marks[f"topic:{topic}"] = sum(ends.values())
    for group, state in (await _group_states(probe, target)).items():
        if state is None:
            return None
        marks[f"group:{group}"] = state.committed
    return marks


async def _first_output(
    settings: KafkaSettings,
    target: str,
    baseline: dict[str, int] | None,
    since: float,
    deps: Sequence[Component] = (),
) -> float:
    """Seconds from ``since`` (or the last moment a dependency was down) to the first output mark above ``baseline``.

    Polled every 0.25 s, with its own probe: the recovery loop polls the shared one at the same time.
    """
    probe = LagProbe(settings)
    try:
        while True:
            if not all([await _is_ready(d) for d in deps]):
                since = time.monotonic()
            now = await _output_marks(probe, target)
            if now is not None:
                if baseline is None:
                    # The broker did not answer at the restart (the kafka fault): the first answer is the baseline.
                    baseline = now
                elif any(v > baseline.get(k, v) for k, v in now.items()):
                    return time.monotonic() - since
            await asyncio.sleep(0.25)
    finally:
        await probe.close()


def _moved(before: GroupState | None, now: GroupState | None, tolerance: int) -> bool:
    if now is None:
        return False
    if now.drained(tolerance):
        return True
    return before is not None and now.committed > before.committed
