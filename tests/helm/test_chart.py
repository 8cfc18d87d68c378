"""The Helm chart: lint, render over a matrix of values, validate offline, and keep it in step with the code.

Rendered manifests are validated against the Kubernetes JSON schemas of
kubernetes-validate (strict: unknown fields fail) and the custom resources
against tests/helm/crd_schemas.py. The services come from the service registry
(textpulse.contracts.services), their settings and probe paths from services/<name>,
so a new service (or setting) without a chart entry fails here.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic_settings import BaseSettings
from textpulse.contracts.services import SERVICES as REGISTERED
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.inference.settings import InferenceSettings
from textpulse.observability.apikey import ApiSecuritySettings
from textpulse.settings import KafkaSettings, ServiceSettings

from tests.conftest import REPO
from tests.grafana_links import (
    JAEGER_PROVISIONING,
    explore_panes,
    explore_urls,
    jaeger_datasources,
    jaeger_datasources_of,
)
from tests.helm.conftest import CHART, KUBE_VERSION, HelmError, Render, run_helm
from tests.helm.crd_schemas import CRD_SCHEMAS

# The first test may build helm from source (minutes on a cold Go module cache).
pytestmark = [pytest.mark.helm, pytest.mark.timeout(1800)]

KEDA_API = "keda.sh/v1alpha1/ScaledObject"
MONITORING_API = "monitoring.coreos.com/v1/ServiceMonitor"
RULES_API = "monitoring.coreos.com/v1/PrometheusRule"
PARTITIONS = {spec.name: spec.partitions for spec in ALL_TOPICS}
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

#: name → (values files, --api-versions) of the render matrix.
MATRIX: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "defaults": ((), ()),
    "defaults-with-operators": ((), (KEDA_API, MONITORING_API, RULES_API)),
    "minimal": (("minimal-values.yaml",), ()),
    "gpu": (("gpu-values.yaml",), (MONITORING_API,)),
    "keda": (("keda-values.yaml",), ()),
    "hpa": (("hpa-values.yaml",), (KEDA_API,)),
    "external-kafka-sasl": (("external-kafka-sasl-values.yaml",), (KEDA_API,)),
    "production": (("production-values.yaml",), (KEDA_API, MONITORING_API, RULES_API)),
}


# --- discovery ---------------------------------------------------------------------------------------


def service_settings() -> dict[str, type[ServiceSettings]]:
    """services/<name>/settings.py → its ServiceSettings subclass, for every registered service."""
    found: dict[str, type[ServiceSettings]] = {}
    for path in (REPO / "services" / name / "settings.py" for name in REGISTERED):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, ServiceSettings)
            and obj is not ServiceSettings
            and obj.__module__ == module.__name__
        ]
        assert len(classes) == 1, f"{path}: expected one ServiceSettings subclass, found {classes}"
        found[path.parent.name] = classes[0]
    return found


SERVICES = service_settings()


def env_names(cls: type[BaseSettings], prefix: str | None = None) -> dict[str, tuple[type[BaseSettings], str]]:
    """Every environment variable a settings class reads → (owning class, field); nested settings use their prefix."""
    prefix = cls.model_config.get("env_prefix", "") if prefix is None else prefix
    out: dict[str, tuple[type[BaseSettings], str]] = {}
    for name, field in cls.model_fields.items():
        annotation = field.annotation
        if inspect.isclass(annotation) and issubclass(annotation, BaseSettings):
            out.update(env_names(annotation))
        else:
            out[f"{prefix}{name}".upper()] = (cls, name)
    return out


def read_env(cls: type[BaseSettings]) -> dict[str, tuple[type[BaseSettings], str]]:
    """What a service process reads: its own class (with nested Kafka / inference) and the shared API guard."""
    return {**env_names(cls), **env_names(ApiSecuritySettings)}


# --- rendered manifests ------------------------------------------------------------------------------


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container_env(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> dict[str, Any]:
    """The container's environment as Kubernetes builds it: envFrom ConfigMaps, then env entries."""
    maps = by_kind(docs, "ConfigMap")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return env


def validate(doc: dict[str, Any]) -> None:
    key = (doc["apiVersion"], doc["kind"])
    if key in CRD_SCHEMAS:
        jsonschema.validate(doc, CRD_SCHEMAS[key])
    else:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.fixture(scope="module")
def rendered(render: Render) -> dict[str, list[dict[str, Any]]]:
    return {name: render(files, api_versions=apis) for name, (files, apis) in MATRIX.items()}


# --- lint and schema validation ----------------------------------------------------------------------


@pytest.mark.parametrize("values_file", [None, *sorted(p.name for p in (CHART / "ci").glob("*.yaml"))])
def test_helm_lint_strict(helm_bin: Path, values_file: str | None) -> None:
    args = ["lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION]
    if values_file:
        args += ["-f", str(CHART / "ci" / values_file)]
    proc = run_helm(helm_bin, args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_every_ci_values_file_is_in_the_matrix() -> None:
    in_matrix = {f for files, _ in MATRIX.values() for f in files}
    assert in_matrix == {p.name for p in (CHART / "ci").glob("*.yaml")}


@pytest.mark.parametrize("case", MATRIX)
def test_rendered_manifests_are_valid_kubernetes(rendered: dict[str, list[dict[str, Any]]], case: str) -> None:
    docs = rendered[case]
    assert docs
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"
    for doc in docs:
        try:
            validate(doc)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{case}: {doc['kind']}/{doc['metadata']['name']}: {exc}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{case}: no schema for {doc['apiVersion']} {doc['kind']}")
    for name, dep in {**by_kind(docs, "Deployment"), **by_kind(docs, "Job")}.items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"] + pod.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
        for container in pod["containers"]:
            assert container["resources"].get("requests"), f"{name}: no resource requests"


def test_every_deployment_has_a_pdb_and_spread(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for name, dep in by_kind(docs, "Deployment").items():
        assert name in pdbs
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


# --- the matrix, case by case ------------------------------------------------------------------------


def test_keda_scaled_objects_capped_at_partitions(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case in ("keda", "defaults-with-operators", "external-kafka-sasl"):
        docs = rendered[case]
        scaled = by_kind(docs, "ScaledObject")
        deployments = by_kind(docs, "Deployment")
        assert not by_kind(docs, "HorizontalPodAutoscaler"), case
        for name, obj in scaled.items():
            triggers = [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]
            cap = min(PARTITIONS[t["metadata"]["topic"]] for t in triggers)
            assert obj["spec"]["maxReplicaCount"] == cap, (case, name)
            assert obj["spec"]["scaleTargetRef"]["name"] in deployments
            # The autoscaler owns the replica count.
            assert "replicas" not in deployments[name]["spec"], (case, name)
    keda = by_kind(rendered["keda"], "ScaledObject")
    assert set(keda) == {f"t-textpulse-{s}" for s in SERVICES}
    assert keda["t-textpulse-ingest"]["spec"]["triggers"][-1] == {
        "type": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": "70"},
    }
    classify = keda["t-textpulse-classify"]["spec"]
    assert (classify["minReplicaCount"], classify["maxReplicaCount"]) == (2, 6)
    trigger = classify["triggers"][0]["metadata"]
    assert trigger == {
        "bootstrapServers": "kafka:9092",
        "consumerGroup": "textpulse-classify",
        "topic": "text.raw",
        "lagThreshold": "1000",
        "offsetResetPolicy": "earliest",
        "allowIdleConsumers": "false",
    }
    index_triggers = keda["t-textpulse-index"]["spec"]["triggers"]
    groups = {t["metadata"]["topic"]: t["metadata"]["consumerGroup"] for t in index_triggers}
    # services/index/handlers.py group_for: one group per indexed family.
    assert groups == {
        "text.enriched": "textpulse-index",
        "support.routed": "textpulse-index-routes",
        "alerts.financial": "textpulse-index-alerts",
    }


def test_hpa_fallback_without_keda(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for case in ("defaults", "hpa"):
        docs = rendered[case]
        assert not by_kind(docs, "ScaledObject"), case
        hpas = by_kind(docs, "HorizontalPodAutoscaler")
        assert set(hpas) == {f"t-textpulse-{s}" for s, v in VALUES["services"].items() if v["autoscaling"]["enabled"]}
        for hpa in hpas.values():
            assert hpa["spec"]["maxReplicas"] <= 6
    assert by_kind(rendered["hpa"], "HorizontalPodAutoscaler")["t-textpulse-index"]["spec"]["maxReplicas"] == 3
    minimal = rendered["minimal"]
    assert not by_kind(minimal, "HorizontalPodAutoscaler")
    assert not by_kind(minimal, "ScaledObject")
    assert by_kind(minimal, "Deployment")["t-textpulse-ingest"]["spec"]["replicas"] == 1


def test_gpu_triton(rendered: dict[str, list[dict[str, Any]]]) -> None:
    triton = by_kind(rendered["gpu"], "Deployment")["t-textpulse-triton"]
    spec = triton["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert triton["spec"]["replicas"] == 2
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--model-repository=s3://textpulse-models/repository" in container["args"]
    assert "--model-config-name=gpu" in container["args"]  # the exporter's configs/gpu.pbtxt (ONNX Runtime + TensorRT)
    assert container["envFrom"] == [{"secretRef": {"name": "textpulse-models-s3"}}]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {v["name"]: v for v in spec["volumes"]}["shm"]["emptyDir"]["medium"] == "Memory"
    classify = by_kind(rendered["gpu"], "Deployment")["t-textpulse-classify"]
    init = classify["spec"]["template"]["spec"]["initContainers"][0]
    assert "s3://textpulse-models/repository" in init["command"]
    env = container_env(rendered["gpu"], classify)
    assert env["TEXTPULSE_TRITON_URL"] == "t-textpulse-triton:8001"
    assert env["TEXTPULSE_INFERENCE_BATCH_SIZE"] == "128"
    assert env["TEXTPULSE_TRITON_TIMEOUT_S"] == "5.5"
    assert set(by_kind(rendered["gpu"], "ServiceMonitor")) == {f"t-textpulse-{s}" for s in SERVICES} | {
        "t-textpulse-triton",
        "t-textpulse-lag-exporter",
    }
    # No Triton in the minimal case: in-process inference, no GPU anywhere.
    minimal = rendered["minimal"]
    assert "t-textpulse-triton" not in by_kind(minimal, "Deployment")
    assert "TEXTPULSE_TRITON_URL" not in container_env(minimal, by_kind(minimal, "Deployment")["t-textpulse-ner"])
    assert "nvidia.com/gpu" not in json.dumps(minimal)


def test_external_kafka_with_sasl(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-kafka-sasl"]
    deployment = by_kind(docs, "Deployment")["t-textpulse-index"]
    env = container_env(docs, deployment)
    assert env["TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS"] == "events-kafka-bootstrap.kafka.svc:9093"
    assert env["TEXTPULSE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["TEXTPULSE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["TEXTPULSE_KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": "textpulse", "key": "password"}}
    assert env["TEXTPULSE_KAFKA_SSL_CAFILE"] == "/etc/textpulse/kafka-tls/ca.crt"
    assert env["TEXTPULSE_INDEX_ES_URL"] == "https://elastic:$(TEXTPULSE_ES_PASSWORD)@search-es-http.elastic.svc:9200"
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-tls"]["projected"]["sources"][0]["secret"]["name"] == "events-cluster-ca-cert"
    assert volumes["api-keys"]["secret"]["secretName"] == "textpulse-api-keys"
    # No password in any ConfigMap.
    assert "password" not in json.dumps([d for d in docs if d["kind"] == "ConfigMap"]).lower().replace(
        "sasl_password", ""
    )
    auth = by_kind(docs, "TriggerAuthentication")["t-textpulse-kafka"]["spec"]["secretTargetRef"]
    assert {a["parameter"] for a in auth} == {"username", "password", "ca"}
    for obj in by_kind(docs, "ScaledObject").values():
        for trigger in [t for t in obj["spec"]["triggers"] if t["type"] == "kafka"]:
            assert trigger["metadata"]["sasl"] == "scram_sha512"
            assert trigger["metadata"]["tls"] == "enable"
            assert trigger["authenticationRef"] == {"name": "t-textpulse-kafka"}


def test_dashboards_shipped_as_configmaps(rendered: dict[str, list[dict[str, Any]]]) -> None:
    sources = {p.name: p for p in (REPO / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert sources
    maps = [d for d in rendered["defaults"] if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    shipped = {name: text for m in maps for name, text in m["data"].items()}
    assert set(shipped) == set(sources)
    for name, text in shipped.items():
        source = sources[name].read_text().replace('"textpulse-prometheus"', '"prometheus"')
        assert json.loads(text) == json.loads(source), name
    assert not [d for d in rendered["minimal"] if d["metadata"].get("labels", {}).get("grafana_dashboard")]
    # monitoring.dashboards.datasourceUid rewrites every panel's datasource uid: kube-prometheus-stack's
    # "prometheus" by default, the local Grafana's "textpulse-prometheus" only in the source files.
    assert VALUES["monitoring"]["dashboards"]["datasourceUid"] == "prometheus"
    for case, uid in (("defaults", "prometheus"), ("keda", "mimir")):
        maps = [d for d in rendered[case] if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
        panels = [json.loads(text) for m in maps for text in m["data"].values()]
        uids = {ds["uid"] for ds in _datasources(panels) if ds.get("type") == "prometheus"}
        assert uids == {uid}, case


def test_jaeger_datasource_for_the_grafana_sidecar(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """monitoring.jaegerDatasource: the uid the dashboards' trace links open, the URL from values."""
    production = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
    url = production["monitoring"]["jaegerDatasource"]["url"]
    maps = [d for d in rendered["production"] if d["metadata"].get("labels", {}).get("grafana_datasource") == "1"]
    assert [m["metadata"]["name"] for m in maps] == ["t-textpulse-datasource-jaeger"]
    (text,) = maps[0]["data"].values()
    (datasource,) = jaeger_datasources_of(yaml.safe_load(text))
    (local,) = jaeger_datasources(JAEGER_PROVISIONING)
    assert datasource == {**local, "url": url}
    # Off by default (the chart runs no Jaeger and cannot guess its URL).
    assert VALUES["monitoring"]["jaegerDatasource"]["enabled"] is False
    for case in ("defaults", "minimal"):
        assert not [d for d in rendered[case] if "grafana_datasource" in d["metadata"].get("labels", {})], case
    # The shipped dashboards' trace links open that uid.
    shipped = [
        json.loads(text)
        for d in rendered["production"]
        if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for text in d["data"].values()
    ]
    assert shipped
    for dashboard in shipped:
        urls = explore_urls(dashboard)
        assert urls, dashboard["title"]
        for url in urls:
            for pane in explore_panes(url).values():
                assert pane["datasource"] == datasource["uid"]
                assert {q["datasource"]["uid"] for q in pane["queries"]} == {datasource["uid"]}


def _datasources(node: Any) -> list[dict[str, Any]]:
    """Every datasource reference ({"type", "uid"}) in a dashboard tree."""
    if isinstance(node, dict):
        found = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return found + [ds for value in node.values() for ds in _datasources(value)]
    if isinstance(node, list):
        return [ds for value in node for ds in _datasources(value)]
    return []


# --- the chart and the code --------------------------------------------------------------------------


def test_every_service_has_a_chart_entry() -> None:
    assert SERVICES, "no services discovered"
    assert set(VALUES["services"]) == set(SERVICES), "values.yaml services and the service registry differ"
    for name, cls in SERVICES.items():
        block = VALUES["services"][name]
        defaults = cls.model_fields
        assert block["port"] == defaults["http_port"].default, name
        assert (REPO / "services" / name / "Dockerfile").exists(), f"services/{name}/Dockerfile"
        assert block["inference"] == ("inference" in defaults), name
        assert block["elasticsearch"] == ("es_url" in defaults), name
        for entry in block["consumer"]["topics"]:
            assert entry["setting"] in defaults, f"{name}: no setting {entry['setting']}"
            assert entry["topic"] == defaults[entry["setting"]].default, (name, entry)
            assert entry["partitions"] == PARTITIONS[entry["topic"]], f"{name}: partitions of {entry['topic']}"


def _sentinel(env: str) -> str:
    return f"v-{env.lower()}"


#: Settings the chart sets from its own keys rather than the settings maps: env → the value it renders.
STRUCTURED = {
    "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": "broker-0:9093,broker-1:9093",
    "TEXTPULSE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "TEXTPULSE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
    "TEXTPULSE_KAFKA_SASL_USERNAME": "svc-user",
    "TEXTPULSE_KAFKA_SASL_PASSWORD": {"secretKeyRef": {"name": "kafka-user", "key": "password"}},
    "TEXTPULSE_KAFKA_SSL_CAFILE": "/etc/textpulse/kafka-tls/ca.crt",
    "TEXTPULSE_KAFKA_SSL_CERTFILE": "/etc/textpulse/kafka-tls/user.crt",
    "TEXTPULSE_KAFKA_SSL_KEYFILE": "/etc/textpulse/kafka-tls/user.key",
    "TEXTPULSE_API_KEYS_FILE": "/etc/textpulse/api-keys/keys",
    "TEXTPULSE_MODEL_REPO": "/models",
    "TEXTPULSE_INDEX_ES_CA_FILE": "/etc/textpulse/es-tls/ca.crt",
}
#: Read from a mounted secret instead (keys_file), so keys never sit in a ConfigMap.
VIA_FILE = {"TEXTPULSE_API_KEYS": "TEXTPULSE_API_KEYS_FILE"}


def test_every_setting_a_service_reads_can_be_set_from_values(render: Render) -> None:
    """One render with every setting of every service set through values; each must reach the container."""
    values: dict[str, Any] = {
        "kafka": {
            "bootstrapServers": STRUCTURED["TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS"],
            "securityProtocol": "SASL_SSL",
            "sasl": {
                "mechanism": "SCRAM-SHA-256",
                "username": "svc-user",
                "passwordSecret": {"name": "kafka-user", "key": "password"},
            },
            "tls": {"caSecret": {"name": "ca", "key": "ca.crt"}, "clientSecret": {"name": "client"}},
            "settings": {},
        },
        "inference": {"settings": {}},
        "api": {"settings": {}, "keysSecret": {"name": "keys", "key": "keys"}},
        "elasticsearch": {"tls": {"caSecret": {"name": "es-ca", "key": "ca.crt"}}},
        "services": {name: {"settings": {}} for name in SERVICES},
    }
    shared = {
        "TEXTPULSE_KAFKA_": values["kafka"]["settings"],
        "TEXTPULSE_API_": values["api"]["settings"],
    }
    expected: dict[str, dict[str, Any]] = {}
    for name, cls in SERVICES.items():
        prefix = f"TEXTPULSE_{name.upper()}_"
        want: dict[str, Any] = {}
        for env, (owner, field) in read_env(cls).items():
            if env in STRUCTURED:
                want[env] = STRUCTURED[env]
            elif env in VIA_FILE:
                want[VIA_FILE[env]] = STRUCTURED[VIA_FILE[env]]
            elif env == f"{prefix}HTTP_HOST":
                want[env] = "0.0.0.0"
            elif env == f"{prefix}HTTP_PORT":
                want[env] = str(VALUES["services"][name]["port"])
            elif env.startswith(prefix) and owner is cls:
                values["services"][name]["settings"][field] = want[env] = _sentinel(env)
            elif owner is KafkaSettings or owner is ApiSecuritySettings:
                target = shared["TEXTPULSE_KAFKA_" if owner is KafkaSettings else "TEXTPULSE_API_"]
                target[field] = want[env] = _sentinel(env)
            elif owner is InferenceSettings:
                values["inference"]["settings"][field] = want[env] = _sentinel(env)
            else:
                pytest.fail(f"{name} reads {env} ({owner.__name__}.{field}) and the chart has no place for it")
        expected[name] = want
    docs = render(values=values)
    deployments = by_kind(docs, "Deployment")
    for name, want in expected.items():
        env = container_env(docs, deployments[f"t-textpulse-{name}"])
        missing = {k: v for k, v in want.items() if env.get(k) != v}
        assert not missing, f"{name}: not set from values: {missing}"


@pytest.mark.parametrize("case", ["defaults", "external-kafka-sasl", "gpu", "production"])
def test_rendered_environment_is_valid_for_the_services(
    rendered: dict[str, list[dict[str, Any]]], case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings classes accept what the chart renders (e.g. 2000000, not 2e+06)."""
    docs = rendered[case]
    for name, cls in SERVICES.items():
        env = container_env(docs, by_kind(docs, "Deployment")[f"t-textpulse-{name}"])
        with monkeypatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("TEXTPULSE_")]:
                patch.delenv(key)
            for key, value in env.items():
                # Secrets and $(VAR) expansion are the kubelet's job: stand-ins here.
                if isinstance(value, str):
                    patch.setenv(key, value.replace("$(TEXTPULSE_ES_PASSWORD)", "pw"))
                else:  # the kubelet fills a resourceFieldRef with a whole number, a secretKeyRef with the secret
                    patch.setenv(key, "1" if "resourceFieldRef" in value else "pw")
            settings = cls()
            api = ApiSecuritySettings.for_service(name)
        assert settings.http_host == "0.0.0.0", name
        assert settings.http_port == VALUES["services"][name]["port"]
        assert settings.kafka.bootstrap_servers == env["TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS"]
        if case == "external-kafka-sasl":
            assert settings.kafka.sasl_password is not None
            assert (settings.kafka.compression, settings.kafka.linger_ms) == ("zstd", 10)
            assert api.rate_per_s == 50
            if name == "ingest":
                assert settings.dedup_capacity == 2_000_000  # type: ignore[attr-defined]


async def _get(app: Any, path: str) -> int:
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 15)
    return statuses[0]


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_probes_point_at_paths_the_service_serves(rendered: dict[str, list[dict[str, Any]]], service: str) -> None:
    """The probe paths of the rendered Deployment, asked of the service's real ASGI app (not started: no broker)."""
    container = by_kind(rendered["defaults"], "Deployment")[f"t-textpulse-{service}"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["ports"][0]["containerPort"] == SERVICES[service].model_fields["http_port"].default
    app = importlib.import_module(f"services.{service}.app").create_app()

    async def probe() -> dict[str, int]:
        paths = {
            "liveness": container["livenessProbe"]["httpGet"]["path"],
            "readiness": container["readinessProbe"]["httpGet"]["path"],
            "startup": container["startupProbe"]["httpGet"]["path"],
            "unknown": "/no-such-path",
        }
        return {kind: await _get(app, path) for kind, path in paths.items()}

    status = asyncio.run(probe())
    assert status["unknown"] == 404  # the check can tell a served path from an unserved one
    assert status["liveness"] == status["startup"] == 200
    # Not started, so the broker is unreachable: /ready is served and says "not ready".
    assert status["readiness"] == 503


# --- bad values --------------------------------------------------------------------------------------

BAD_VALUES = {
    "negative-replicas": ({"services": {"ingest": {"replicas": -1}}}, "/services/ingest/replicas"),
    "missing-image": ({"services": {"classify": {"image": {"repository": ""}}}}, "/services/classify/image/repository"),
    "no-image-block": (
        {"services": {"extra": {"enabled": True, "port": 9000}}},
        ("/services/extra", "'image'"),
    ),
    "bad-protocol": ({"kafka": {"securityProtocol": "TLS"}}, "/kafka/securityProtocol"),
    "sasl-without-secret": (
        {"kafka": {"securityProtocol": "SASL_SSL", "sasl": {"mechanism": "PLAIN", "username": "u"}}},
        "/kafka/sasl",
    ),
    "password-in-settings": (
        {"kafka": {"settings": {"sasl_password": "hunter2"}}},
        "invalid propertyName 'sasl_password'",
    ),
    "typo-in-service-block": ({"services": {"ner": {"replica": 2}}}, "/services/ner"),
    "root-pods": ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    "s3-without-url": ({"modelRepository": {"type": "s3"}}, "/modelRepository/s3"),
    "max-replicas-above-partitions": (
        {"services": {"route": {"autoscaling": {"maxReplicas": 12}}}},
        "services.route.autoscaling.maxReplicas=12 is above the 6 partitions",
    ),
    "negative-replication": ({"topics": {"replicationFactor": -1}}, "/topics/replicationFactor"),
    "min-isr-above-replication": (
        {"topics": {"replicationFactor": 2, "minInsyncReplicas": 3}},
        "topics.minInsyncReplicas=3 is above topics.replicationFactor=2",
    ),
    "egress-without-rules": (
        {"networkPolicy": {"egress": {"enabled": True}}},
        "networkPolicy.egress.enabled needs networkPolicy.egress.to",
    ),
    "ingress-without-hosts": ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.hosts"),
    "ingress-to-a-disabled-service": (
        {
            "services": {"recommend": {"enabled": False}},
            "ingress": {"enabled": True, "hosts": [{"host": "a", "paths": [{"path": "/v1", "service": "recommend"}]}]},
        },
        'ingress path /v1 names service "recommend", which is not an enabled entry of services',
    ),
    "jaeger-datasource-without-url": (
        {"monitoring": {"jaegerDatasource": {"enabled": True}}},
        "monitoring.jaegerDatasource.url is required",
    ),
    "jaeger-datasource-url-not-http": (
        {"monitoring": {"jaegerDatasource": {"enabled": True, "url": "jaeger:16686"}}},
        "/monitoring/jaegerDatasource/url",
    ),
    "runbook-base-with-anchor": (
        {"monitoring": {"prometheusRule": {"runbookBaseUrl": "https://x/runbooks.md#top"}}},
        "/monitoring/prometheusRule/runbookBaseUrl",
    ),
}


@pytest.mark.parametrize("case", BAD_VALUES)
def test_bad_values_fail_with_a_clear_message(render: Render, case: str) -> None:
    values, message = BAD_VALUES[case]
    with pytest.raises(HelmError) as err:
        render(values=values)
    for part in (message,) if isinstance(message, str) else message:
        assert part in str(err.value), str(err.value)


# --- Prometheus rules: one source with deploy/prometheus ---------------------------------------------

PROM_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
RUNBOOK_BASE = "https://github.com/textpulse/textpulse/blob/main/docs/runbooks.md"


def _rule_objects(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rule file stem → the groups of its PrometheusRule."""
    return {
        name.removeprefix("t-textpulse-rules-"): doc["spec"]["groups"]
        for name, doc in by_kind(docs, "PrometheusRule").items()
    }


def _source_groups() -> dict[str, list[dict[str, Any]]]:
    return {path.stem: yaml.safe_load(path.read_text())["groups"] for path in RULE_FILES}


def test_prometheus_rules_equal_deploy_prometheus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Every rule file of deploy/prometheus/rules, rule for rule, as a PrometheusRule (a new file is picked up)."""
    assert len(RULE_FILES) >= 2
    for case in ("defaults-with-operators", "production"):
        assert _rule_objects(rendered[case]) == _source_groups(), case
    production = by_kind(rendered["production"], "PrometheusRule")
    assert all(d["metadata"]["labels"]["release"] == "kube-prometheus-stack" for d in production.values())
    # Without the operator's API nothing is rendered (and NOTES says so), nor when switched off.
    assert not by_kind(rendered["defaults"], "PrometheusRule")


def test_prometheus_rules_switched_off_and_runbook_base(render: Render) -> None:
    off = render(values={"monitoring": {"prometheusRule": {"enabled": False}}}, api_versions=(RULES_API,))
    assert not by_kind(off, "PrometheusRule")
    base = "https://wiki.example.com/sre/textpulse-runbooks"
    docs = render(values={"monitoring": {"prometheusRule": {"runbookBaseUrl": base}}}, api_versions=(RULES_API,))
    got = _rule_objects(docs)
    want = _source_groups()
    alerts = 0
    for stem, groups in want.items():
        for group in groups:
            for rule in group["rules"]:
                if "alert" in rule:
                    alerts += 1
                    rule["annotations"]["runbook_url"] = f"{base}#{rule['alert'].lower()}"
        assert got[stem] == groups, stem
    assert alerts >= 10


def test_packaged_chart_carries_rules_and_dashboards(helm_bin: Path, tmp_path: Path) -> None:
    """`helm package` follows the rules/ and dashboards/ links, so the .tgz renders the same rules."""
    proc = run_helm(helm_bin, ["package", str(CHART), "--destination", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [archive] = tmp_path.glob("textpulse-*.tgz")
    args = ["template", "t", str(archive), "--namespace", "textpulse", "--kube-version", KUBE_VERSION]
    proc = run_helm(helm_bin, [*args, "--api-versions", RULES_API])
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert _rule_objects(docs) == _source_groups()
    dashboards = [d for d in docs if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    assert len(dashboards) == len(list((REPO / "deploy" / "grafana" / "dashboards").glob("*.json")))


def test_target_down_is_scoped_to_the_textpulse_jobs(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """up == 0 only for textpulse's jobs: services, Triton and the Kafka exporter, as scraped here and by the chart."""
    rules = {r["alert"]: r for g in _source_groups()["alerts"] for r in g["rules"] if "alert" in r}
    match = re.fullmatch(r'up\{job=~"([a-z|-]+)"\} == 0', rules["TextpulseTargetDown"]["expr"].strip())
    assert match, rules["TextpulseTargetDown"]["expr"]
    jobs = set(match.group(1).split("|"))
    assert jobs == set(SERVICES) | {"triton", "kafka", "lag-exporter"}
    local = {job["job_name"] for job in yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())["scrape_configs"]}
    # Prometheus and Alertmanager: the heartbeat covers the alerting path itself.
    assert jobs == local - {"prometheus", "alertmanager"}
    monitors = by_kind(rendered["gpu"], "ServiceMonitor").values()
    chart_jobs = {m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] for m in monitors}
    assert all(m["spec"]["jobLabel"] == "app.kubernetes.io/component" for m in monitors)
    assert chart_jobs == jobs - {"kafka"}  # the cluster's Kafka is scraped by its own operator


# --- topics Job ---------------------------------------------------------------------------------------


def _cli_kwargs(command: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run a rendered `textpulse ...` command through the real CLI; returns what reached create_topics."""
    from textpulse.cli import app
    from textpulse.kafka import admin
    from typer.testing import CliRunner

    calls: list[dict[str, Any]] = []

    async def no_wait(settings: KafkaSettings, timeout_s: float = 60.0) -> None:
        calls.append({"wait_s": timeout_s})

    async def create(settings: KafkaSettings, **kwargs: Any) -> list[str]:
        calls.append({"bootstrap": settings.bootstrap_servers, **kwargs})
        return []

    monkeypatch.setattr(admin, "wait_for_broker", no_wait)
    monkeypatch.setattr(admin, "create_topics", create)
    assert command[0] == "textpulse"
    script = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert script["textpulse"] == "textpulse.cli:app"  # the console script the image puts on PATH
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    return {k: v for call in calls for k, v in call.items()}


def test_topics_job(rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered["production"]
    job = by_kind(docs, "Job")["t-textpulse-topics"]
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in hooks["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # A pre-install hook runs before the chart's ServiceAccount exists.
    assert "serviceAccountName" not in pod
    container = pod["containers"][0]
    assert (
        container["image"]
        == by_kind(docs, "Deployment")["t-textpulse-ingest"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    # The same Kafka settings as the services (the kafka ConfigMap does not exist yet when the hook runs).
    services_env = container_env(docs, by_kind(docs, "Deployment")["t-textpulse-ingest"])
    # ...but no static member id: the job joins no consumer group; each consumer pod is a static
    # member named after its pod (kafka.staticMembership, on by default).
    member = services_env.pop("TEXTPULSE_KAFKA_GROUP_INSTANCE_ID")
    assert member == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert {k: v for k, v in env.items() if k.startswith("TEXTPULSE_KAFKA_")} == {
        k: v for k, v in services_env.items() if k.startswith("TEXTPULSE_KAFKA_")
    }
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/etc/textpulse/kafka-tls"}
    with monkeypatch.context() as patch:
        for key in [k for k in os.environ if k.startswith("TEXTPULSE_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value if isinstance(value, str) else "pw")  # the secret: the kubelet's job
        kwargs = _cli_kwargs(container["command"], patch)
    assert kwargs == {
        "wait_s": 120.0,
        "bootstrap": "events-kafka-bootstrap.kafka.svc:9093",
        "replication_factor": 3,
        "min_insync_replicas": 2,
    }
    # Defaults: the broker decides.
    default_job = by_kind(rendered["defaults"], "Job")["t-textpulse-topics"]
    command = default_job["spec"]["template"]["spec"]["containers"][0]["command"]
    with monkeypatch.context() as patch:
        patch.delenv("TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS", raising=False)
        patch.setenv("TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
        kwargs = _cli_kwargs(command, patch)
    assert (kwargs["replication_factor"], kwargs["min_insync_replicas"]) == (None, None)


def _notes(helm: Path, tmp_path: Path, values: dict[str, Any]) -> str:
    """NOTES.txt as `helm install` prints it (rendered through tpl in a copy of the chart: no cluster here)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart, symlinks=False)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "NOTES.txt")
    template = '{{ tpl (.Files.Get "NOTES.txt") . | quote }}'
    (chart / "templates" / "zz-notes.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {template}\n"
    )
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    args = ["template", "t", str(chart), "-s", "templates/zz-notes.yaml", "-f", str(tmp_path / "values.yaml")]
    proc = run_helm(helm, args)
    assert proc.returncode == 0, proc.stderr
    return str(yaml.safe_load(proc.stdout)["data"]["notes"])


def test_notes_topic_command(helm_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    notes = _notes(helm_bin, tmp_path / "on", {})
    assert "by the Job t-textpulse-topics (replication factor the broker's default" in notes
    notes = _notes(helm_bin, tmp_path / "off", {"topics": {"create": False, "replicationFactor": 3}})
    # The command: from the kubectl line to the first line without a continuation backslash.
    lines = notes.split("Create them once", 1)[1].splitlines()[1:]
    end = next(i for i, text in enumerate(lines) if not text.rstrip().endswith("\\"))
    line = " ".join(" ".join(text.rstrip().removesuffix("\\") for text in lines[: end + 1]).split())
    assert line.startswith("kubectl -n default run "), line
    # The image's entry point starts the service: the command must replace it.
    assert "--command -- textpulse topics create --replication-factor 3" in line
    command = line.split("--command -- ", 1)[1].split()
    with monkeypatch.context() as patch:
        patch.setenv("TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
        assert _cli_kwargs(command, patch)["replication_factor"] == 3


# --- network policies, ingress, pod extras, Elasticsearch CA ----------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def test_network_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["production"]
    policies = by_kind(docs, "NetworkPolicy")
    default = policies.pop("t-textpulse-default")["spec"]
    assert default["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in default  # deny all ingress but what the component policies admit
    # Every pod of the release, the topics Job included, is under the default policy.
    pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in {**by_kind(docs, "Deployment")}.items()}
    pods["job"] = by_kind(docs, "Job")["t-textpulse-topics"]["spec"]["template"]["metadata"]["labels"]
    assert all(_selects(default["podSelector"], labels) for labels in pods.values())
    egress = default["egress"]
    assert {p["port"] for p in egress[0]["ports"]} == {53}
    assert {p["port"] for rule in egress[2:] for p in rule["ports"]} == {9093, 9200}
    deployments = by_kind(docs, "Deployment")
    assert set(policies) == set(deployments)
    for name, policy in policies.items():
        spec = policy["spec"]
        assert spec["podSelector"] == deployments[name]["spec"]["selector"]
        assert spec["policyTypes"] == ["Ingress"]
        ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
        if name == "t-textpulse-lag-exporter":
            # /metrics only, for the scrapers.
            assert ports == {"metrics"}
            assert spec["ingress"][0]["from"] == [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ]
        elif name == "t-textpulse-triton":
            assert ports == {"http", "grpc", "metrics"}
            grpc = next(r for r in spec["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"])
            assert all(_selects(peer["podSelector"], pods["t-textpulse-classify"]) for peer in grpc["from"])
        else:
            assert ports == {"http"}
            peers = spec["ingress"][0]["from"]
            assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in peers
            assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in peers
    # Default values: ingress rules only, egress open.
    default = by_kind(rendered["defaults"], "NetworkPolicy")["t-textpulse-default"]["spec"]
    assert default["policyTypes"] == ["Ingress"]
    assert not by_kind(rendered["defaults"], "Ingress")


def _routes(service: str) -> list[str]:
    """The API paths a service serves, from its OpenAPI document."""
    app = importlib.import_module(f"services.{service}.app").create_app()
    return list(app.openapi()["paths"])


def test_ingress_paths_reach_routes_of_their_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["production"]
    [ingress] = by_kind(docs, "Ingress").values()
    services = by_kind(docs, "Service")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"][0]["secretName"] == "textpulse-tls"
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert len(paths) == 5
    for path in paths:
        backend = path["backend"]["service"]
        service = services[backend["name"]]
        assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        name = service["metadata"]["labels"]["app.kubernetes.io/component"]
        served = [r for r in _routes(name) if r.startswith(path["path"])]
        assert served, f"{path['path']} → {name}, which serves none of it"


def test_pod_labels_priority_and_extra_env(rendered: dict[str, list[dict[str, Any]]], render: Render) -> None:
    docs = rendered["production"]
    for name, dep in by_kind(docs, "Deployment").items():
        pod = dep["spec"]["template"]
        assert pod["metadata"]["labels"]["team"] == "nlp", name
        assert _selects(dep["spec"]["selector"], pod["metadata"]["labels"]), name
        want = "textpulse-critical" if name == "t-textpulse-classify" else "textpulse-high"
        assert pod["spec"]["priorityClassName"] == want, name
        if name != "t-textpulse-triton":
            assert container_env(docs, dep)["OTEL_SERVICE_NAMESPACE"] == "textpulse", name
    assert by_kind(docs, "Deployment")["t-textpulse-classify"]["spec"]["template"]["metadata"]["labels"]["tier"] == (
        "inference"
    )
    assert by_kind(docs, "Job")["t-textpulse-topics"]["spec"]["template"]["spec"]["priorityClassName"] == (
        "textpulse-high"
    )
    # A pod label can never move a pod out of its Deployment's selector.
    clash = render(values={"podLabels": {"app.kubernetes.io/component": "other", "app.kubernetes.io/instance": "x"}})
    for name, dep in by_kind(clash, "Deployment").items():
        assert _selects(dep["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"]), name
    # A service's extraEnv entry of the same name comes after the global one (the later wins in Kubernetes).
    global_env = [{"name": "X", "value": "global"}]
    both = render(values={"extraEnv": global_env, "services": {"ner": {"extraEnv": [{"name": "X", "value": "ner"}]}}})
    assert container_env(both, by_kind(both, "Deployment")["t-textpulse-ner"])["X"] == "ner"
    assert container_env(both, by_kind(both, "Deployment")["t-textpulse-route"])["X"] == "global"


def test_inference_threads_follow_the_cpu_request(rendered: dict[str, list[dict[str, Any]]], render: Render) -> None:
    """ORT / torch pools are sized to the node: the in-process runtimes get the pod's CPU request instead."""
    by_request = {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1"}}
    docs = rendered["defaults"]
    for name, dep in by_kind(docs, "Deployment").items():
        short = name.removeprefix("t-textpulse-")
        env = container_env(docs, dep)
        if VALUES["services"].get(short, {}).get("inference"):
            assert env.get("TEXTPULSE_LOCAL_THREADS") == by_request, name
        else:
            assert "TEXTPULSE_LOCAL_THREADS" not in env, name
    # An explicit setting (inference ConfigMap) is not overridden; no CPU request, no entry (it would read 0).
    explicit = render(values={"inference": {"settings": {"local_threads": 3}}})
    assert container_env(explicit, by_kind(explicit, "Deployment")["t-textpulse-ner"])["TEXTPULSE_LOCAL_THREADS"] == "3"
    no_request = render(values={"services": {"ner": {"resources": {"requests": {"cpu": None}}}}})  # null deletes
    assert "TEXTPULSE_LOCAL_THREADS" not in container_env(
        no_request, by_kind(no_request, "Deployment")["t-textpulse-ner"]
    )


def test_elasticsearch_ca_file(rendered: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    docs = rendered["production"]
    index = by_kind(docs, "Deployment")["t-textpulse-index"]
    env = container_env(docs, index)
    assert env["TEXTPULSE_INDEX_ES_CA_FILE"] == "/etc/textpulse/es-tls/ca.crt"
    pod = index["spec"]["template"]["spec"]
    volume = {v["name"]: v for v in pod["volumes"]}["es-tls"]
    ca = {"secretName": "search-es-http-certs-public", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert volume["secret"] == ca
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["es-tls"]["mountPath"] == "/etc/textpulse/es-tls"
    with monkeypatch.context() as patch:
        patch.setenv("TEXTPULSE_INDEX_ES_CA_FILE", env["TEXTPULSE_INDEX_ES_CA_FILE"])
        assert str(SERVICES["index"]().es_ca_file) == "/etc/textpulse/es-tls/ca.crt"  # type: ignore[attr-defined]
    # Only the services that talk to Elasticsearch get it.
    for name, dep in by_kind(docs, "Deployment").items():
        if name not in {"t-textpulse-index", "t-textpulse-triton"}:
            assert not any(k.endswith("_ES_CA_FILE") for k in container_env(docs, dep)), name


# --- lag exporter -------------------------------------------------------------------------------------


def test_lag_exporter_is_one_pod_running_the_real_command(
    rendered: dict[str, list[dict[str, Any]]], render: Render, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One replica (Recreate: never two), scraped as job lag-exporter, its command accepted by the real CLI."""
    from textpulse.cli import app
    from textpulse.observability import lag_exporter
    from typer.testing import CliRunner

    docs = rendered["defaults-with-operators"]
    dep = by_kind(docs, "Deployment")["t-textpulse-lag-exporter"]
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9309, "protocol": "TCP"}]
    env = container_env(docs, dep)
    assert env["TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS"] == VALUES["kafka"]["bootstrapServers"]
    monitor = by_kind(docs, "ServiceMonitor")["t-textpulse-lag-exporter"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert by_kind(docs, "Service")["t-textpulse-lag-exporter"]["spec"]["ports"][0]["targetPort"] == "metrics"

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(lag_exporter, "serve", lambda settings, **kw: calls.append({"settings": settings, **kw}))
    monkeypatch.setattr("textpulse.observability.logging.configure_logging", lambda *a, **k: None)
    extra = render(values={"lagExporter": {"groups": {"my-ner": "ner"}, "interval": 30}})
    command = by_kind(extra, "Deployment")["t-textpulse-lag-exporter"]["spec"]["template"]["spec"]["containers"][0][
        "command"
    ]
    assert command[:2] == ["textpulse", "lag-exporter"]
    result = CliRunner().invoke(app, command[1:])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert (call["port"], call["interval_s"], call["prefix"], call["groups"]) == (
        9309,
        30.0,
        "textpulse-",
        {"my-ner": "ner"},
    )
    off = render(values={"lagExporter": {"enabled": False}}, api_versions=(MONITORING_API,))
    assert not [d for d in off if d["metadata"]["name"] == "t-textpulse-lag-exporter"]
