"""Write the services' Prometheus jobs and file_sd target files from the service registry.

One job per registered service (libs/textpulse/contracts/services.py): its block in
prometheus.yml (between the BEGIN/END markers) and targets/<service>.yml with the service's
default port. The other jobs (Prometheus, Alertmanager, Kafka, Triton, the lag exporter) are
written by hand. tests/unit/test_service_registry.py fails when the committed files differ.

    python deploy/prometheus/render_targets.py          # rewrite
    python deploy/prometheus/render_targets.py --check  # exit 1 naming the stale files
"""

from __future__ import annotations

import sys
from pathlib import Path

from textpulse.contracts.services import REGISTRY, ServiceSpec

HERE = Path(__file__).resolve().parent
BEGIN = "  # BEGIN registered services (deploy/prometheus/render_targets.py; edit the registry, not this block)\n"
END = "  # END registered services\n"


def target_file(spec: ServiceSpec) -> str:
    """The committed default targets of a service's job (start.sh renders the live copy from it)."""
    job, var = spec.name, f"PROM_TARGET_{spec.name.upper().replace('-', '_')}"
    return (
        f'# Default targets of job "{job}" (file_sd). start.sh writes the live copy to\n'
        f"# .run/prometheus/targets/{job}.yml; override with {var}=host:port[,host:port].\n"
        f"- targets: ['127.0.0.1:{spec.port}']\n"
        "  labels:\n"
        "    env: local\n"
    )


def jobs_block() -> str:
    jobs = "".join(
        f"  - job_name: {spec.name}\n    file_sd_configs:\n      - files: [targets/{spec.name}.yml]\n"
        for spec in REGISTRY
    )
    return BEGIN + jobs + END


def with_jobs(config: str) -> str:
    """``config`` (prometheus.yml) with the generated block in place of the old one."""
    start, end = config.index(BEGIN), config.index(END) + len(END)
    return config[:start] + jobs_block() + config[end:]


def rendered() -> dict[Path, str]:
    """Every generated file → its content."""
    config = HERE / "prometheus.yml"
    files = {HERE / "targets" / f"{spec.name}.yml": target_file(spec) for spec in REGISTRY}
    files[config] = with_jobs(config.read_text("utf-8"))
    return files


def stale() -> list[Path]:
    """The generated files whose committed content differs (or that are missing)."""
    return [path for path, text in rendered().items() if not path.exists() or path.read_text("utf-8") != text]


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        paths = stale()
        for path in paths:
            print(f"stale: {path.relative_to(HERE)} (run python deploy/prometheus/render_targets.py)")
        return 1 if paths else 0
    if argv:
        print(__doc__)
        return 2
    for path, text in rendered().items():
        path.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
