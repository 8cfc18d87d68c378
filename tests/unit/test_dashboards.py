"""Grafana dashboards and Prometheus rules against the metric contract, offline.

Checks what a broken dashboard would otherwise only show in a browser: stale
generated JSON, duplicate panel ids, panels without title or unit, datasource
references that do not resolve to the provisioned datasource, trace links that
do not open the provisioned Jaeger datasource, and PromQL that
names a metric or label that no service, rule or exporter produces. The
PromQL check is lexical (no Prometheus needed): metric names, label matchers
and by/without/on labels are checked against deploy/prometheus/metrics-contract.yml
and the recording rules; evaluating every expression against a live
Prometheus is the job of an integration test.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from textpulse.observability.tracing import EVENT_ID_ATTR

from tests.grafana_links import (
    explore_panes,
    explore_urls,
    jaeger_datasources,
    jaeger_datasources_of,
    provisioned_jaeger_uid,
)

if TYPE_CHECKING:
    from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))

# Labels every scraped series gets from Prometheus (job, instance) and from
# the target files (env).
TARGET_LABELS = frozenset({"env", "job", "instance"})
PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan"}
)
GROUPING_RE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR_RE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
MATCHER_RE = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
IDENT_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@cache
def generator() -> ModuleType:
    """deploy/grafana/generate.py, imported from its path (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("textpulse_grafana_generate", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@cache
def provisioned_uid() -> str:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (datasource,) = doc["datasources"]
    assert datasource["type"] == "prometheus"
    return str(datasource["uid"])


@cache
def contract() -> dict[str, frozenset[str]]:
    """Metric name -> labels, for every series a service or exporter exposes."""
    doc = yaml.safe_load((PROMETHEUS / "metrics-contract.yml").read_text())
    out: dict[str, frozenset[str]] = {}
    for family in doc.values():
        for name, spec in family.items():
            labels = frozenset(spec["labels"]) | TARGET_LABELS
            if spec["type"] == "histogram":
                out[f"{name}_bucket"] = labels | {"le"}
                out[f"{name}_sum"] = labels
                out[f"{name}_count"] = labels
            else:
                out[name] = labels
    return out


def rule_groups(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load((PROMETHEUS / "rules" / name).read_text())["groups"])


@cache
def recorded() -> dict[str, frozenset[str]]:
    """Map each recorded series to its labels.

    The labels are the level part of the name (``env_service_topic:...``) plus
    any static rule label such as ``quantile``.
    """
    out: dict[str, frozenset[str]] = {}
    for group in rule_groups("recording.yml"):
        for rule in group["rules"]:
            level = rule["record"].split(":", 1)[0]
            out[rule["record"]] = frozenset(level.split("_")) | frozenset(rule.get("labels", {}))
    return out


def known_series() -> dict[str, frozenset[str]]:
    return {**contract(), **recorded(), "ALERTS": frozenset({"alertname", "alertstate", "severity"}) | TARGET_LABELS}


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Return the series names an expression selects.

    Lexically: identifiers that are not functions, keywords, label names or
    parts of a range.
    """
    text = strip_strings(expr)
    text = GROUPING_RE.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    names = set()
    for match in IDENT_RE.finditer(text):
        word = match.group(0)
        following = text[match.end() :].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def _check_matchers(expr: str, names: set[str], series: dict[str, frozenset[str]]) -> list[str]:
    """Problems of the ``{...}`` label matchers: syntax, label on the metric, regex."""
    problems: list[str] = []
    available = frozenset().union(*(series.get(n, frozenset()) for n in names))
    for match in SELECTOR_RE.finditer(expr):
        metric, body = match.group(1), match.group(2)
        for matcher in (m for m in body.split(",") if m.strip()):
            parsed = MATCHER_RE.fullmatch(matcher)
            if parsed is None:
                problems.append(f"malformed matcher {matcher.strip()!r}")
                continue
            label, operator, value = parsed.groups()
            allowed = series.get(metric, frozenset()) if metric else available
            if label != "__name__" and label not in allowed:
                problems.append(f"label {label!r} is not on {metric or names}")
            if operator in {"=~", "!~"}:
                try:
                    re.compile(generator().expand(value))
                except re.error as exc:
                    problems.append(f"bad regex {value!r}: {exc}")
    return problems


def check_expression(expr: str) -> list[str]:
    """List the problems of one PromQL expression: unknown metrics, bad matchers, unknown labels."""
    series = known_series()
    bare = strip_strings(expr)
    problems = [f"unbalanced {pair}" for pair in ("()", "{}", "[]") if bare.count(pair[0]) != bare.count(pair[1])]
    names = metric_names(expr)
    if not names:
        problems.append("selects no metric")
    problems.extend(f"unknown metric {n}" for n in sorted(names) if n not in series)
    problems.extend(_check_matchers(expr, names, series))
    available = frozenset().union(*(series.get(n, frozenset()) for n in names))
    for match in GROUPING_RE.finditer(bare):
        for label in (x.strip() for x in match.group(2).split(",")):
            if label and label not in available:
                problems.append(f"{match.group(1)} label {label!r} is on none of {sorted(names)}")
    return problems


def dashboards() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in DASHBOARD_FILES]


# ------------------------------------------------------------------- tests


def test_generated_json_is_committed_and_current() -> None:
    gen = generator()
    assert {path.name for path in DASHBOARD_FILES} == {d.filename for d in gen.dashboards()}
    assert gen.stale_files() == [], "run: python deploy/grafana/generate.py"


def test_the_four_dashboards_exist() -> None:
    titles = {d["title"] for d in dashboards()}
    assert titles == {
        "textpulse / Pipeline overview",
        "textpulse / Model serving",
        "textpulse / Financial sentiment",
        "textpulse / Customer service",
    }
    uids = [d["uid"] for d in dashboards()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_panels_have_unique_ids_titles_and_units(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = dashboard["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    for panel in panels:
        assert panel["title"].strip(), f"panel {panel['id']} has no title"
        if panel["type"] == "text":
            assert panel["options"]["content"].strip(), f"text panel {panel['title']!r} is empty"
            continue
        assert panel["fieldConfig"]["defaults"].get("unit"), f"panel {panel['title']!r} has no unit"
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_panels_fit_the_grid_without_overlap(path: Path) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in json.loads(path.read_text())["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & area, f"{panel['title']!r} overlaps another panel"
        cells |= area


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_every_datasource_reference_is_the_provisioned_one(path: Path) -> None:
    uid = provisioned_uid()
    dashboard = json.loads(path.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "text"]
    assert all("datasource" not in p and "targets" not in p for p in dashboard["panels"] if p["type"] == "text")
    refs = [p["datasource"] for p in panels]
    refs += [t["datasource"] for p in panels for t in p["targets"]]
    refs += [v["datasource"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": uid}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_environment_and_service_variables(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"env", "service"} <= set(variables)
    for var in variables.values():
        if var["type"] == "textbox":
            # Not PromQL: a free-text value for the trace links (checked in test_trace_links_*).
            continue
        assert var["type"] == "query"
        assert check_expression(re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", var["query"])) == []
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", ()))
    assert "$env" in exprs, "variable env defined but never used"
    assert "$service" in exprs, "variable service defined but never used"


def test_panel_queries_lists_every_expression_of_the_json() -> None:
    gen = generator()
    listed = {(q.dashboard_uid, q.panel_id, q.ref_id, q.expr) for q in gen.panel_queries()}
    in_json = {
        (d["uid"], p["id"], t["refId"], t["expr"])
        for d in dashboards()
        for p in d["panels"]
        for t in p.get("targets", ())
    }
    assert listed == in_json
    assert len(listed) >= 40


def test_expand_replaces_every_variable() -> None:
    gen = generator()
    for query in gen.panel_queries():
        expanded = gen.expand(query.expr)
        assert "$" not in expanded, expanded
    assert gen.expand('x{env=~"$env"}[$__rate_interval]', {"env": "local"}) == 'x{env=~"local"}[1m]'
    with pytest.raises(KeyError):
        gen.expand("rate(x[$__unknown])")


@pytest.mark.parametrize(
    "query", generator().panel_queries(), ids=lambda q: f"{q.dashboard_uid}:{q.panel_id}{q.ref_id}"
)
def test_panel_expression_uses_only_contract_metrics_and_labels(query: Any) -> None:
    assert check_expression(query.expr) == []


def test_recorded_names_match_their_aggregation_labels() -> None:
    """``env_service:x`` must aggregate ``by (env, service)``: the level names the labels."""
    for group in rule_groups("recording.yml"):
        for rule in group["rules"]:
            level = set(rule["record"].split(":", 1)[0].split("_"))
            for match in GROUPING_RE.finditer(rule["expr"]):
                if match.group(1) != "by":
                    continue
                labels = {x.strip() for x in match.group(2).split(",")} - {"le"}
                assert labels == level, f"{rule['record']}: by ({', '.join(sorted(labels))})"


@pytest.mark.parametrize("name", ["recording.yml", "alerts.yml"])
def test_rule_expressions_use_only_contract_metrics_and_labels(name: str) -> None:
    for group in rule_groups(name):
        for rule in group["rules"]:
            assert check_expression(rule["expr"]) == [], rule.get("record") or rule.get("alert")


def test_alert_rules_carry_severity_and_annotations() -> None:
    names = []
    for group in rule_groups("alerts.yml"):
        for rule in group["rules"]:
            names.append(rule["alert"])
            assert rule["labels"]["severity"] in {"critical", "warning", "none"}
            assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    assert len(names) == len(set(names))


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    alerts = {rule["alert"] for group in rule_groups("alerts.yml") for rule in group["rules"]}
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in (PROMETHEUS / "tests").glob("*.yml"):
        for test in yaml.safe_load(path.read_text()).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"


def test_checker_catches_typos() -> None:
    """The lexical checker itself: it must flag what it exists to flag."""
    assert check_expression('sum by (service) (rate(textpulse_messages_processed_total{env=~"$env"}[1m]))') == []
    assert "unknown metric textpulse_message_processed_total" in check_expression(
        "rate(textpulse_message_processed_total[1m])"
    )
    assert any("'entity'" in p for p in check_expression('textpulse_alerts_open{entity="ACME"}'))
    assert any("'sevice'" in p for p in check_expression("sum by (sevice) (textpulse_alerts_open)"))
    assert any("unbalanced" in p for p in check_expression("sum(rate(textpulse_alerts_open[1m])"))


def test_provisioning_points_at_the_dashboards_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "textpulse.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"] == "${TEXTPULSE_DASHBOARDS_DIR}"
    assert "TEXTPULSE_DASHBOARDS_DIR" in (GRAFANA / "README.md").read_text()


# ------------------------------------------------------- traces (Jaeger datasource)

COMPOSE = REPO / "deploy" / "compose"


def test_jaeger_datasource_is_provisioned_with_uid_jaeger() -> None:
    """Locally and in compose (the chart's ConfigMap: tests/helm): Grafana is the trace UI."""
    (local,) = jaeger_datasources(GRAFANA / "provisioning" / "datasources" / "jaeger.yml")
    assert local["uid"] == "jaeger" == generator().JAEGER_UID
    # The query API of deploy/jaeger (JAEGER_QUERY_PORT), not the OTLP receiver.
    assert local["url"] == "http://127.0.0.1:16686"
    assert local["access"] == "proxy"
    assert not local.get("isDefault"), "Prometheus stays the default datasource of new panels"
    (composed,) = jaeger_datasources(COMPOSE / "grafana-datasource.yml")
    assert {k: v for k, v in composed.items() if k != "url"} == {k: v for k, v in local.items() if k != "url"}
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    assert composed["url"] == "http://jaeger:16686"
    assert "jaeger" in compose
    # Every datasource file Grafana mounts in compose carries the Jaeger datasource.
    mounted = [
        COMPOSE / volume.split(":")[0]
        for volume in compose["grafana"]["volumes"]
        if "/provisioning/datasources/" in volume.split(":")[1]
    ]
    assert mounted
    assert any(jaeger_datasources_of(yaml.safe_load(path.read_text())) for path in mounted)
    # The services export their spans to that Jaeger.
    assert compose["ingest"]["environment"]["TEXTPULSE_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_trace_links_open_the_jaeger_datasource() -> None:
    """Every dashboard links to the trace search; Pipeline and Model serving to one event's trace."""
    uid = provisioned_jaeger_uid()
    with_event_search = set()
    for dashboard in dashboards():
        urls = explore_urls(dashboard)
        assert urls, f"{dashboard['title']}: no trace link"
        for url in urls:
            panes = explore_panes(url, {"${event_id:percentencode}": "my-event-1"})
            for pane in panes.values():
                assert pane["datasource"] == uid, url
                for query in pane["queries"]:
                    assert query["datasource"] == {"type": "jaeger", "uid": uid}, url
                    assert query["queryType"] == "search"
                    assert query["service"] == "textpulse-ingest"
                    if "tags" in query:
                        assert query["tags"] == f'{EVENT_ID_ATTR}="my-event-1"'
                        with_event_search.add(dashboard["uid"])
        if dashboard["uid"] in with_event_search:
            variables = {v["name"]: v for v in dashboard["templating"]["list"]}
            assert variables["event_id"]["type"] == "textbox"
    assert with_event_search == {"textpulse-pipeline", "textpulse-model-serving"}


def test_how_to_panels_name_the_lag_and_confidence_panels() -> None:
    """The how-to text names panels and dashboards in *italics*: each must exist."""
    by_title = {d["title"]: d for d in dashboards()}
    every_panel = {p["title"] for d in by_title.values() for p in d["panels"]}
    not_panels = {"Event id", "textpulse Jaeger"} | {t.removeprefix("textpulse / ") for t in by_title} | set(by_title)
    texts = [p for d in by_title.values() for p in d["panels"] if p["type"] == "text"]
    assert texts
    for panel in texts:
        content = panel["options"]["content"]
        assert "Explore" in content
        assert EVENT_ID_ATTR in content
        named = set(re.findall(r"(?<!\*)\*([^*]+)\*(?!\*)", content)) - not_panels
        assert named, content
        assert named <= every_panel, f"{panel['title']!r} names missing panels: {sorted(named - every_panel)}"
    # Where a newcomer looks first: lag on the pipeline, confidence on model serving.
    pipeline = {p["title"] for p in by_title["textpulse / Pipeline overview"]["panels"]}
    assert {"Consumer lag per topic", "Oldest unconsumed record per topic"} <= pipeline
    serving = {p["title"] for p in by_title["textpulse / Model serving"]["panels"]}
    assert {"Confidence per head", "Low-confidence share"} <= serving


def _metric_sets() -> dict[str, Any]:
    """The metric classes of the services, by name (each builds its own registry)."""
    from textpulse.inference.metrics import InferenceMetrics
    from textpulse.observability.lag_exporter import LagExporter
    from textpulse.observability.metrics import ServiceMetrics
    from textpulse.settings import KafkaSettings

    from services.index.metrics import IndexMetrics
    from services.recommend.metrics import RecommendMetrics

    return {
        "service": lambda: ServiceMetrics("contract-test", enabled=True),
        "inference": lambda: InferenceMetrics("contract-test", enabled=True),
        "index": IndexMetrics,
        "recommend": RecommendMetrics,
        "lag-exporter": lambda: LagExporter(KafkaSettings()),
    }


@pytest.mark.parametrize("kind", ["service", "inference", "index", "recommend", "lag-exporter"])
def test_service_metrics_library_matches_the_contract(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What libs/textpulse/observability, the inference client, index and recommend register is what the
    rules and panels expect."""
    from prometheus_client.metrics import MetricWrapperBase

    monkeypatch.delenv("TEXTPULSE_INDEX_METRICS_ENABLED", raising=False)
    monkeypatch.delenv("TEXTPULSE_RECOMMEND_METRICS_ENABLED", raising=False)
    metrics = _metric_sets()[kind]()
    wrappers = [v for v in vars(metrics).values() if isinstance(v, MetricWrapperBase)]
    assert wrappers
    for wrapper in wrappers:
        (family,) = wrapper.describe()
        exposed = f"{family.name}_total" if family.type == "counter" else family.name
        if family.type == "histogram":
            exposed = f"{family.name}_bucket"
        assert exposed in contract(), f"{exposed} ({family.type}) is not in deploy/prometheus/metrics-contract.yml"
        labels = frozenset(wrapper._labelnames) | TARGET_LABELS  # private: no public accessor
        if family.type == "histogram":
            labels |= {"le"}
        assert labels == contract()[exposed], f"{exposed}: labels {sorted(labels - TARGET_LABELS)}"
