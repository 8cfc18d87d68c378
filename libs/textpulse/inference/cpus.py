"""Intra-op threads for the in-process runtimes when a container limits this process's CPUs.

ONNX Runtime sizes its default intra-op pool to the *host's* physical cores and torch to the host's
logical CPUs; neither reads the container's CPU quota (onnxruntime#29510: "the cgroup CPU reservation
is invisible to core detection"). A classify pod limited to 2 CPUs on a 64-core node would run a
32-thread pool and spend its quota being throttled. joblib's ``cpu_count`` (loky) already reads what
limits a process — its affinity set, the cgroup v1/v2 CFS quota (rounded up) and ``LOKY_MAX_CPU_COUNT``
— so a service asks it, and keeps the library's own default where nothing limits the process (that
default is what the benchmarks measured best on an unconstrained host).
"""

from __future__ import annotations

import os


def container_threads() -> int | None:
    """The CPUs a quota, cpuset or ``LOKY_MAX_CPU_COUNT`` grants, when fewer than the host's; else ``None``."""
    from joblib import cpu_count  # here, not at import: joblib takes ~0.3 s to import, settings modules load often

    usable = int(cpu_count(only_physical_cores=False))
    return usable if usable < (os.cpu_count() or usable) else None
