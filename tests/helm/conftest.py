"""Fixtures of the chart tests: a helm binary (built from the Go module proxy when missing) and a renderer."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, missing

CHART = REPO / "helm" / "textpulse"
BUILD_SCRIPT = REPO / "deploy" / "helm" / "build.sh"
#: The Kubernetes version the chart is rendered for and validated against (kubernetes-validate's schemas).
KUBE_VERSION = "1.37.0"
#: A cold build (empty Go module cache) takes ~9 min on 2 shared cores.
BUILD_TIMEOUT_S = 1800


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """$HELM if set, else deploy/helm/build.sh's cached binary (built on first use)."""
    if os.environ.get("HELM"):
        helm = Path(os.environ["HELM"])
        if not os.access(helm, os.X_OK):
            missing("helm", f"HELM={helm} is not an executable")
        return helm
    if shutil.which("go") is None:
        missing("helm", "go is not installed, so deploy/helm/build.sh cannot build helm")
    try:
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        missing("helm", f"deploy/helm/build.sh did not finish in {BUILD_TIMEOUT_S} s")
    if proc.returncode != 0:
        missing("helm", f"deploy/helm/build.sh failed: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


Render = Callable[..., list[dict[str, Any]]]


def run_helm(helm: Path, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def render(helm_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Render:
    """``render(values_files=(), values=None, api_versions=())`` → the manifests of ``helm template``."""
    tmp = tmp_path_factory.mktemp("values")
    counter = iter(range(1_000_000))

    def _render(
        values_files: Sequence[str | Path] = (),
        values: dict[str, Any] | None = None,
        api_versions: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        args = ["template", "t", str(CHART), "--namespace", "textpulse", "--kube-version", KUBE_VERSION]
        for file in values_files:
            args += ["-f", str(CHART / "ci" / file) if isinstance(file, str) else str(file)]
        if values is not None:
            path = tmp / f"values-{next(counter)}.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["-f", str(path)]
        for api in api_versions:
            args += ["--api-versions", api]
        proc = run_helm(helm_bin, args)
        if proc.returncode != 0:
            raise HelmError(proc.stderr)
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    return _render
