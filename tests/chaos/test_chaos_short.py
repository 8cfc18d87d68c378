"""The short chaos variant CI runs: the whole local stack, every component SIGKILLed once.

~300 real events at 5/s (a 60 s replay) through the real Apache Kafka, Triton, Elasticsearch,
Prometheus and all six services on the chaos ports; nine faults (each service, Triton,
Elasticsearch, the broker) at seeded times, with classify, ner, alert and route in exactly-once
mode (``TEXTPULSE_CHAOS_DELIVERY=at_least_once`` for the other). One run feeds every test of this
module. Budget: about 4 minutes on an otherwise idle 2-core machine with the jars, models and the
Triton runtime cached (6 minutes measured on the shared machine at load average 18-20).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.chaos.harness.run import ChaosOptions, ChaosResult, run_chaos
from tests.chaos.harness.stack import Ports
from tests.conftest import REPO, missing, port_open
from tests.support.inference import build_tiny_repo

pytestmark = [pytest.mark.chaos, pytest.mark.kafka, pytest.mark.triton, pytest.mark.es]
DELIVERY = os.environ.get("TEXTPULSE_CHAOS_DELIVERY", "exactly_once")


def _prerequisites() -> None:
    if shutil.which("java") is None:
        missing("java", "apt-get install openjdk-17-jdk-headless")
    if not (REPO / ".cache" / "kafka").is_dir():
        missing("Kafka jars", "make kafka-fetch")
    if not (REPO / ".cache" / "triton" / "dist").is_dir():
        missing("tritonserver", "deploy/triton/fetch.sh")
    if shutil.which("prometheus") is None:
        missing("prometheus", "make prom-install")
    p = Ports()
    busy = [port for port in (p.kafka, p.es_http, p.triton_http, p.service_base, p.prometheus) if port_open(port)]
    if busy:
        missing("the chaos ports", f"ports {busy} are in use: another chaos run? `make chaos-down`")


@pytest.fixture(scope="module")
def chaos_run() -> ChaosResult:
    _prerequisites()
    # The tiny test models: the run checks delivery, not accuracy, and their inference keeps up on a
    # busy 2-core machine where the quick-profile models would be the bottleneck.
    opts = ChaosOptions(
        events=300,
        rate=5.0,
        seed=11,
        delivery=DELIVERY,
        run_dir=REPO / ".run" / "chaos-ci",
        model_repo=build_tiny_repo(),
        drain_timeout_s=120,
    )
    result = asyncio.run(run_chaos(opts))
    # The per-fault figures (restart -> ready / recovered / first output) for the docs and a failed run's triage.
    faults = [dataclasses.asdict(f) for f in result.faults]
    (opts.run_dir / "faults.json").write_text(json.dumps(faults, indent=1))
    return result


@pytest.mark.timeout(600)
def test_no_output_loses_an_event_and_every_component_recovers(chaos_run: ChaosResult) -> None:
    lost = {c.output: c.lost for c in chaos_run.checks if c.lost}
    assert not lost, f"lost events: {lost}"
    assert len(chaos_run.faults) == 9
    unrecovered = {f.target: f.error for f in chaos_run.faults if f.recovered_s is None}
    assert not unrecovered, unrecovered
    enriched = next(c for c in chaos_run.checks if c.output == "text.enriched")
    assert enriched.expected >= 300
    assert chaos_run.ok, chaos_run.failures


@pytest.mark.timeout(600)
def test_bad_records_land_only_in_their_dead_letter_topics(chaos_run: ChaosResult) -> None:
    for d in chaos_run.dlq_checks:
        assert d.seen == d.expected, f"{d.output}: {d.seen} distinct dead letters, {d.expected} injected"
        assert not d.note, d.note


@pytest.mark.timeout(600)
def test_no_duplicates_in_elasticsearch_nor_under_exactly_once(chaos_run: ChaosResult) -> None:
    for c in chaos_run.checks:
        if c.output.startswith("es:") or DELIVERY == "exactly_once":
            assert c.duplicates == 0, f"{c.output}: {c.duplicates} duplicates"


@pytest.mark.timeout(600)
def test_no_secret_or_raw_pii_in_any_log_of_the_run(chaos_run: ChaosResult) -> None:
    scan = chaos_run.scan
    assert scan.files >= 10, "the logs of every service and component are scanned"
    assert not scan.hits, [f"{what} in {Path(path).name} ({n}x)" for what, path, n in scan.hits]
