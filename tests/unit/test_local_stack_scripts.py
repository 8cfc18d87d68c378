"""The local-stack scripts without the stack: Prometheus scrapes only what runs; pipeline-up's model check.

``deploy/prometheus/targets.sh`` renders the file_sd target files the way
``make prom-up`` / ``pipeline-up`` / ``pipeline-down`` do; here into a
temporary run dir, with a stand-in "service" (a listening socket and this
process's pid in the pid file ``make pipeline-up`` would write).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, port_open

SERVICE_JOBS = {"ingest": 8080, "classify": 8081, "ner": 8082, "alert": 8083, "route": 8084, "index": 8085}


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def render(tmp_path: Path, **env: str) -> dict[str, list[str]]:
    """Run targets.sh; the targets of every job."""
    proc = subprocess.run(
        ["bash", str(REPO / "deploy" / "prometheus" / "targets.sh")],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("PROM_", "PIPELINE_"))},
            "PROM_RUN_DIR": str(tmp_path / "prometheus"),
            "PIPELINE_RUN_DIR": str(tmp_path / "pipeline"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = {}
    for f in (tmp_path / "prometheus" / "targets").glob("*.yml"):
        doc = yaml.safe_load(f.read_text()) or []
        out[f.stem] = [t for group in doc for t in group["targets"]]
    return out


def started(tmp_path: Path, job: str, port: int, pid: int) -> None:
    run = tmp_path / "pipeline"
    run.mkdir(exist_ok=True)
    (run / f"{job}.pid").write_text(f"{pid}\n")
    (run / f"{job}.port").write_text(f"{port}\n")


def test_only_started_services_are_scraped(tmp_path: Path, listening: int) -> None:
    started(tmp_path, "classify", listening, os.getpid())
    started(tmp_path, "ner", 1, 2**22 + 17)  # a pid file whose process is gone: not a target
    targets = render(tmp_path)
    assert targets["classify"] == [f"127.0.0.1:{listening}"]
    assert targets["prometheus"] == ["127.0.0.1:9090"]
    # Jobs nobody started: no target, hence no TextpulseTargetDown (unless this machine runs them).
    for job, port in SERVICE_JOBS.items():
        if job != "classify" and not port_open(port):
            assert targets[job] == [], job


def test_an_explicit_target_wins_and_empty_means_none(tmp_path: Path, listening: int) -> None:
    started(tmp_path, "classify", listening, os.getpid())
    targets = render(tmp_path, PROM_TARGET_CLASSIFY="", PROM_TARGET_INDEX="10.0.0.5:8085,10.0.0.6:8085")
    assert targets["classify"] == []
    assert targets["index"] == ["10.0.0.5:8085", "10.0.0.6:8085"]


def test_targets_all_renders_the_committed_port_plan(tmp_path: Path) -> None:
    targets = render(tmp_path, PROM_TARGETS_ALL="1")
    for job, port in SERVICE_JOBS.items():
        assert targets[job] == [f"127.0.0.1:{port}"]
    assert targets["alertmanager"] == ["127.0.0.1:9093"]


def test_pipeline_up_without_models_names_make_models(tmp_path: Path) -> None:
    """The model check comes first: no broker is started and nothing is left behind."""
    proc = subprocess.run(
        ["bash", str(REPO / "deploy" / "pipeline" / "up.sh")],
        env={**os.environ, "TEXTPULSE_MODEL_REPO": str(tmp_path / "no-models"), "PIPELINE_RUN_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "make models" in lines[0]
    assert str(tmp_path / "no-models") in lines[0]
    assert list(tmp_path.iterdir()) == []
