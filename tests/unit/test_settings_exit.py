"""Every service refuses invalid settings with one clear line and exit status 2, never a traceback (#24)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from textpulse.contracts.topics import SERVICES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", SERVICES)
def test_invalid_settings_exit_2_with_one_line(service: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
        f"TEXTPULSE_{service.upper()}_HTTP_PORT": "not-a-port",
        f"TEXTPULSE_{service.upper()}_LOG_JSON": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", f"services.{service}.app"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    assert f"invalid {service} settings" in output, output
    assert "http_port" in output, output
