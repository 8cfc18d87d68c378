"""Run a service probe script in a fresh interpreter against a model repository (in-process backend, no Triton).

The torch-free tests (``tests/ml/test_serve_without_torch.py``, ``test_recommend_without_torch.py``)
block modules inside the script itself; this only sets what every such run shares: the repository,
one thread, the chosen local runtime, the project on the path, Triton's URL unset.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_probe(script: str, repo: Path, *args: str, runtime: str = "onnx") -> subprocess.CompletedProcess[str]:
    """``python -c script *args`` with ``TEXTPULSE_MODEL_REPO=repo``; output captured, exit status not checked."""
    env = {
        **os.environ,
        "TEXTPULSE_MODEL_REPO": str(repo),
        "TEXTPULSE_LOCAL_THREADS": "1",
        "TEXTPULSE_LOCAL_RUNTIME": runtime,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "libs"), str(REPO_ROOT)]),
    }
    env.pop("TEXTPULSE_TRITON_URL", None)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=300,
        check=False,
    )
