"""The service registry (textpulse.contracts.services) is the one list of services: everything else agrees.

A service added in one place and forgotten in another fails here, naming what to fix:
its directory, its settings (port, env prefix, topics), the CLI, the demo, the Prometheus
jobs and targets (generated: deploy/prometheus/render_targets.py), the Helm values and the
consumer group names the lag exporter reads back.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import tomllib
from typing import Any

import pytest
import yaml
from setuptools import find_packages
from textpulse.contracts.services import GROUP_PREFIX, REGISTRY, SERVICES, ServiceSpec, consumer_group, service
from textpulse.contracts.topics import ALL_TOPICS, by_name
from textpulse.settings import ServiceSettings

from tests.conftest import REPO

PROM = REPO / "deploy" / "prometheus"
CHART = REPO / "helm" / "textpulse"
#: Prometheus jobs that are not services.
INFRA_JOBS = {"prometheus", "alertmanager", "lag-exporter", "triton", "kafka"}
DECLARED = {spec.name for spec in ALL_TOPICS}


def settings_class(name: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{name}.settings")
    (cls,) = (
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, ServiceSettings) and obj.__module__ == module.__name__
    )
    return cls


def _load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("render_targets", PROM / "render_targets.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the registry itself ------------------------------------------------------------------------------


def test_every_service_directory_is_registered() -> None:
    """services/<name>/app.py is a service; ``_``-prefixed directories (the example) are not deployed."""
    found = {p.parent.name for p in (REPO / "services").glob("*/app.py") if not p.parent.name.startswith("_")}
    assert found == set(SERVICES), "register the service in libs/textpulse/contracts/services.py (REGISTRY)"


def test_names_and_ports_are_unique() -> None:
    assert len(set(SERVICES)) == len(SERVICES)
    assert len({s.port for s in REGISTRY}) == len(REGISTRY)
    assert service("route").port == 8084
    with pytest.raises(KeyError, match="registered"):
        service("nope")


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_registry_matches_the_settings(spec: ServiceSpec) -> None:
    cls = settings_class(spec.name)
    fields = cls.model_fields
    assert cls.model_config.get("env_prefix") == spec.env_prefix
    assert fields["http_port"].default == spec.port
    assert fields["topic_dlq"].default == spec.dlq.name
    assert spec.dlq in ALL_TOPICS
    uses = (*spec.inputs, *spec.outputs)
    for use in uses:
        assert use.setting in fields, f"{spec.name}: no setting {use.setting}"
        assert fields[use.setting].default == use.topic, (spec.name, use)
        if use.setting.endswith("_prefix"):
            assert any(t.startswith(use.topic) for t in DECLARED), f"{spec.name}: no declared {use.topic}* topic"
        else:
            by_name(use.topic)  # declared in contracts/topics.py
    # Every setting naming a declared topic is an input or output (or the DLQ) of the registry.
    topic_settings = {name for name, f in fields.items() if name.startswith("topic_") and f.default in DECLARED} - {
        "topic_dlq"
    }
    assert topic_settings == {use.setting for use in uses if not use.setting.endswith("_prefix")}, spec.name


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_kind_module_and_entry_points(spec: ServiceSpec) -> None:
    """``api`` services build a FastAPI app, ``worker`` ones an AsgiFastStream (read from the source: no import)."""
    assert importlib.util.find_spec(spec.module) is not None, spec.module
    source = (REPO / "services" / spec.name / "app.py").read_text("utf-8")
    assert "def create_app(" in source
    assert "def main(" in source
    # On the service kit an api service declares ``kit.Api(`` and the kit builds its FastAPI app.
    builds_api = "FastAPI(" in source or "kit.Api(" in source
    assert builds_api == (spec.kind == "api"), f"{spec.name}: kind {spec.kind}"


def test_consumer_groups_and_the_lag_exporter() -> None:
    from textpulse.observability.lag_exporter import DEFAULT_PREFIX, service_of

    assert consumer_group("classify") == "textpulse-classify"
    assert consumer_group("index", suffix="-routes") == "textpulse-index-routes"
    assert consumer_group("index", "custom", "-routes") == "custom-routes"
    assert DEFAULT_PREFIX == GROUP_PREFIX
    for spec in REGISTRY:
        assert all(service_of(group) == spec.name for group in spec.groups), spec.groups
    assert service("index").groups == ("textpulse-index", "textpulse-index-routes", "textpulse-index-alerts")


# --- what derives from it -----------------------------------------------------------------------------


def test_cli_serves_every_service() -> None:
    from textpulse import cli

    assert {s.name: f"services.{s.name}.app" for s in REGISTRY} == cli.SERVICES


def test_demo_runs_what_needs_only_kafka_and_the_models() -> None:
    from textpulse.demo import ENTRY, PIPELINE_SERVICES

    assert ENTRY.name == "ingest"
    # index needs Elasticsearch, recommend its recsys models: neither is part of the demo.
    assert [s.name for s in PIPELINE_SERVICES] == ["classify", "ner", "alert", "route"]


def test_prometheus_files_are_generated_from_the_registry() -> None:
    renderer = _load_renderer()
    assert renderer.stale() == [], "run: python deploy/prometheus/render_targets.py"
    files = {p.stem for p in (PROM / "targets").glob("*.yml")}
    assert files == set(SERVICES) | INFRA_JOBS, "a target file of a service that is not registered?"
    jobs = {j["job_name"] for j in yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]}
    assert jobs == set(SERVICES) | INFRA_JOBS


def test_target_down_alert_and_compose_cover_every_service() -> None:
    alerts = yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())
    rule = next(r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "TextpulseTargetDown")
    match = re.fullmatch(r'up\{job=~"([a-z|-]+)"\} == 0', rule["expr"].strip())
    assert match, rule["expr"]
    assert set(match.group(1).split("|")) == set(SERVICES) | {"triton", "kafka", "lag-exporter"}
    compose = REPO / "deploy" / "compose"
    assert set(SERVICES) <= set(yaml.safe_load((compose / "compose.yaml").read_text())["services"])
    scraped = {j["job_name"] for j in yaml.safe_load((compose / "prometheus.yml").read_text())["scrape_configs"]}
    assert set(SERVICES) <= scraped


def test_helm_values_have_every_service_and_only_those() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["services"]) == set(SERVICES), "helm/textpulse/values.yaml services vs the registry"
    assert values["lagExporter"]["groupPrefix"] == GROUP_PREFIX
    assert f'printf "{GROUP_PREFIX}%s"' in (CHART / "templates" / "_helpers.tpl").read_text()
    for spec in REGISTRY:
        block = values["services"][spec.name]
        assert block["port"] == spec.port, spec.name
        assert block["inference"] == ("models" in spec.needs), spec.name
        assert block["elasticsearch"] == ("elasticsearch" in spec.needs), spec.name
        assert block["image"]["repository"] == f"textpulse-{spec.name}"
        expected = [
            {
                "setting": use.setting,
                "topic": use.topic,
                "partitions": by_name(use.topic).partitions,
                **({"groupSuffix": use.group_suffix} if use.group_suffix else {}),
            }
            for use in spec.inputs
        ]
        assert block["consumer"]["topics"] == expected, spec.name


def test_the_example_is_neither_registered_nor_shipped() -> None:
    assert "_example" not in SERVICES
    assert "example" not in SERVICES
    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(where=str(REPO), include=find["include"], exclude=find.get("exclude", ()))
    assert "services.route" in packages
    assert not [p for p in packages if p.startswith("services._example")]
