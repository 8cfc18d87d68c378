"""A service in a CPU-limited container sizes its runtime's threads to the quota, not to the host.

Real kernel cgroups: the test makes a cgroup v1 ``cpu`` group with a 1-CPU CFS quota, moves a shell
into it, and runs Python in a new cgroup and mount namespace with the ``cpu`` hierarchy mounted
again, which is what a Docker or Kubernetes container sees (its own cgroup at
``/sys/fs/cgroup/cpu``). Needs root and ``unshare`` (util-linux), as on the CI machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.ci import missing

CPU = Path("/sys/fs/cgroup/cpu")
REPO = Path(__file__).resolve().parents[2]

PROBE = """
from services.classify.settings import ClassifySettings
from textpulse.ml.onnx_runtime import session_options
threads = ClassifySettings().inference.local_threads
print(threads, session_options(threads).intra_op_num_threads)
"""


def contained(quota_us: int, period_us: int = 100_000) -> str:
    """Run :data:`PROBE` in a fresh cgroup with this CFS quota (-1: none), seen from inside as a container."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        missing("root and unshare", "run the tests as root with util-linux installed (the CI machine is)")
    if not (CPU / "cpu.cfs_quota_us").is_file():
        missing("the cgroup v1 cpu controller", f"{CPU} is not a cgroup v1 cpu hierarchy on this host")
    group = CPU / f"textpulse-test-{uuid.uuid4().hex[:8]}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(period_us))
        (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        inner = (
            "mount -t tmpfs none /sys/fs/cgroup && mkdir /sys/fs/cgroup/cpu && "
            'mount -t cgroup -o cpu cgroup /sys/fs/cgroup/cpu && exec "$0" -c "$1"'
        )
        script = (
            f"echo $$ > {group}/cgroup.procs && "
            f'exec unshare --cgroup --mount --propagation private sh -c \'{inner}\' "$0" "$1"'
        )
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'libs'}:{REPO}"}
        env.pop("TEXTPULSE_LOCAL_THREADS", None)
        env.pop("LOKY_MAX_CPU_COUNT", None)
        done = subprocess.run(
            ["sh", "-c", script, sys.executable, PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            cwd=REPO,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()
    finally:
        group.rmdir()


def test_a_one_cpu_quota_gives_one_intra_op_thread() -> None:
    if (os.cpu_count() or 1) < 2:
        pytest.fail("needs a host with at least 2 CPUs to tell a 1-CPU quota from the host")
    assert contained(100_000) == "1 1"


def test_no_quota_keeps_the_library_default() -> None:
    assert contained(-1) == "None 0"
