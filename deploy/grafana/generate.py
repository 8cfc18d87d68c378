"""Generate the textpulse Grafana dashboards (``deploy/grafana/dashboards/*.json``).

Dashboards are code so that every panel gets the same datasource, unit and
variable conventions, and so that tests can list every PromQL expression
(:func:`panel_queries`) and evaluate it against a live Prometheus
(:func:`expand` substitutes the template variables). The JSON files are
committed; ``python deploy/grafana/generate.py --check`` fails when they are
stale.

Plain Python (standard library only): it runs without the project's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The provisioned Prometheus datasource (provisioning/datasources/prometheus.yml).
DATASOURCE_UID = "textpulse-prometheus"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": DATASOURCE_UID}

#: The provisioned Jaeger datasource (provisioning/datasources/jaeger.yml, the compose file and the
#: chart's monitoring.jaegerDatasource): the trace links open Explore on it.
JAEGER_UID = "jaeger"
#: The service whose spans start an event's trace (the HTTP request, or ingest's hop for text.in).
TRACE_ROOT_SERVICE = "textpulse-ingest"
#: Span attribute naming the event (libs/textpulse/observability/tracing.py, EVENT_ID_ATTR).
EVENT_ID_TAG = "textpulse.event_id"

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
GRID_WIDTH = 24
SCHEMA_VERSION = 39

#: Concrete values for the template variables, used by :func:`expand`. Regex
#: variables get ``.*`` (Grafana's "All"); interval variables a fixed window.
DEFAULT_VARIABLE_VALUES: dict[str, str] = {
    "env": ".*",
    "service": ".*",
    "model": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
}

# Common label filters: every textpulse series carries env and service.
ENV = 'env=~"$env"'
ENV_SVC = 'env=~"$env", service=~"$service"'


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and how its series are named in the legend."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    """A panel: kind is a Grafana panel type (timeseries, stat, bargauge)."""

    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str = ""
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    stacked: bool = False
    min_value: float | None = 0
    max_value: float | None = None
    #: Threshold turning the value red (stat/bargauge colour, timeseries line).
    red_above: float | None = None


@dataclass(frozen=True)
class TextPanel:
    """A markdown panel (no query): how-to notes for the reader, e.g. how to reach an event's trace."""

    title: str
    content: str
    width: int = GRID_WIDTH
    height: int = 5


@dataclass(frozen=True)
class Variable:
    """A query template variable (multi-select, with an "All" = ``.*`` option)."""

    name: str
    label: str
    query: str


@dataclass(frozen=True)
class TextBox:
    """A free-text template variable (not used in PromQL: it fills the trace links)."""

    name: str
    label: str


@dataclass
class Dashboard:
    """A dashboard: its panels are laid out left to right, top to bottom."""

    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: list[Panel | TextPanel] = field(default_factory=list)
    links: tuple[tuple[str, str], ...] = ()
    #: Free-text variables after the query ones (apart: ``variables`` are all PromQL, which tests run).
    textboxes: tuple[TextBox, ...] = ()

    @property
    def filename(self) -> str:
        """File name under dashboards/, derived from the uid."""
        return f"{self.uid.removeprefix('textpulse-')}.json"


@dataclass(frozen=True)
class PanelQuery:
    """One expression of one panel, as listed by :func:`panel_queries`."""

    dashboard_uid: str
    dashboard_title: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str


# ---------------------------------------------------------------- variables

VAR_ENV = Variable("env", "Environment", "label_values(up, env)")
VAR_SERVICE = Variable("service", "Service", 'label_values(textpulse_build_info{env=~"$env"}, service)')
# Models as the services name them (Triton's model names are the same), so the
# variable has values with in-process inference too, where no Triton runs.
VAR_MODEL = Variable("model", "Model", 'label_values(textpulse_inference_duration_seconds_count{env=~"$env"}, model)')
# An event id typed by the reader: the "trace of this event" link searches Jaeger for it.
VAR_EVENT_ID = TextBox("event_id", "Event id (for its trace)")


# ------------------------------------------------------------------- traces


def explore_traces_url(tags: str = "", service: str = TRACE_ROOT_SERVICE) -> str:
    """A Grafana Explore URL: the Jaeger datasource, a search by service and (logfmt) tags, last hour.

    The JSON of the pane is percent-encoded except Grafana template variables (``${...}``), which
    Grafana replaces when it renders the link.
    """
    query: dict[str, Any] = {
        "refId": "A",
        "datasource": {"type": "jaeger", "uid": JAEGER_UID},
        "queryType": "search",
        "service": service,
    }
    if tags:
        query["tags"] = tags
    panes = {"traces": {"datasource": JAEGER_UID, "queries": [query], "range": {"from": "now-1h", "to": "now"}}}
    text = json.dumps(panes, separators=(",", ":"))
    encoded = "".join(
        part if part.startswith("${") else urllib.parse.quote(part, safe="")
        for part in re.split(r"(\$\{[^}]+\})", text)
    )
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


#: Every dashboard links to the trace search (header link, top right).
TRACES_LINK = ("Traces (Jaeger, Explore)", explore_traces_url())


def follow_an_event(where: str) -> TextPanel:
    """The how-to panel: from an event id to its trace, and where lag and confidence are."""
    trace_link = explore_traces_url(f'{EVENT_ID_TAG}="${{event_id:percentencode}}"')
    return TextPanel(
        "Follow one event: trace, lag, confidence",
        "**Trace of an event**: type its id in *Event id* above, then open "
        f"[its trace]({trace_link}) (Explore, datasource *textpulse Jaeger*, search service `{TRACE_ROOT_SERVICE}`, "
        f'tag `{EVENT_ID_TAG}="<id>"`, open the trace). Or Explore → textpulse Jaeger → Search → '
        f'Service `{TRACE_ROOT_SERVICE}`, Tags `{EVENT_ID_TAG}="<id>"` → Run query. '
        "Each service's hop is a `process <topic>` span of that trace (docs/tracing.md).\n\n"
        f"{where}",
    )


# --------------------------------------------------------------- dashboards


def pipeline_overview() -> Dashboard:
    """Throughput, lag, latency, errors and DLQ of every stage of the pipeline."""
    return Dashboard(
        uid="textpulse-pipeline",
        title="textpulse / Pipeline overview",
        description="Throughput per stage, consumer lag, end-to-end latency, errors and dead letters.",
        variables=(VAR_ENV, VAR_SERVICE),
        textboxes=(VAR_EVENT_ID,),
        panels=[
            follow_an_event(
                "**Lag**: *Consumer lag per topic* (records) and *Oldest unconsumed record per topic* "
                "(seconds) below. **Model confidence**: dashboard *textpulse / Model serving*, panels "
                "*Confidence per head* and *Low-confidence share*."
            ),
            Panel(
                "Targets down",
                "none",
                (Query(f"sum(1 - up{{{ENV}}})", "down"),),
                "Scrape targets (services, Triton, Kafka, Prometheus, Alertmanager) not answering.",
                kind="stat",
                width=6,
                height=4,
                red_above=1,
            ),
            Panel(
                "Events accepted",
                "ops",
                (
                    Query(
                        f'sum(env_channel_outcome:textpulse_ingest_events:rate1m{{{ENV}, outcome="accepted"}})',
                        "accepted/s",
                    ),
                ),
                "Events accepted by ingest per second, all channels.",
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "Consumer lag",
                "short",
                (Query(f"sum(env_service:textpulse_consumer_lag:sum{{{ENV_SVC}}})", "records"),),
                "Records not yet consumed, summed over every consumer group and partition (each partition once: "
                "the lag exporter's measure, else each replica's for the partitions it holds).",
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "p99 end-to-end latency",
                "s",
                (
                    Query(
                        "max(env_service:textpulse_end_to_end_latency_seconds:histogram_quantile5m"
                        f'{{{ENV_SVC}, quantile="0.99"}})',
                        "p99",
                    ),
                ),
                "Worst p99 over the selected stages of event ingest time -> output written (target 500 ms).",
                kind="stat",
                width=6,
                height=4,
                red_above=0.5,
            ),
            Panel(
                "Throughput per stage",
                "ops",
                (
                    Query(
                        f"sum by (service) (env_service:textpulse_messages_processed:rate1m{{{ENV_SVC}}})",
                        "{{service}}",
                    ),
                ),
                "Records fully handled (output written) per second by each service.",
            ),
            Panel(
                "Ingest outcomes",
                "ops",
                (
                    Query(
                        f"sum by (channel, outcome) (env_channel_outcome:textpulse_ingest_events:rate1m{{{ENV}}})",
                        "{{channel}} {{outcome}}",
                    ),
                ),
                "Events per second by channel and outcome (accepted, rejected, duplicate, dlq).",
                stacked=True,
            ),
            Panel(
                "Consumer lag per topic",
                "short",
                (
                    Query(
                        f"sum by (service, topic) (env_service_topic:textpulse_consumer_lag:sum{{{ENV_SVC}}})",
                        "{{service}} <- {{topic}}",
                    ),
                ),
                "Records behind, per consuming service and topic (end offset - committed offset), each partition "
                "once; from the lag exporter, so it stays while a service is down.",
            ),
            Panel(
                "Oldest unconsumed record per topic",
                "s",
                (
                    Query(
                        "max by (service, topic) "
                        f"(env_service_topic:textpulse_consumer_group_lag_seconds:max{{{ENV_SVC}}})",
                        "{{service}} <- {{topic}}",
                    ),
                ),
                "Lag in seconds: age of the oldest record a service has not consumed yet, worst partition "
                "(textpulse lag-exporter; 0 when caught up, growing by the clock while the consumers are down).",
                red_above=600,
            ),
            Panel(
                "End-to-end latency percentiles",
                "s",
                (
                    Query(
                        "max by (service, quantile) "
                        f"(env_service:textpulse_end_to_end_latency_seconds:histogram_quantile5m{{{ENV_SVC}}})",
                        "{{service}} p{{quantile}}",
                    ),
                ),
                "p50 / p95 / p99 of event ingest time -> output written, per service (5 m window).",
                red_above=0.5,
            ),
            Panel(
                "Handler latency p99",
                "s",
                (
                    Query(
                        "max by (service) "
                        "(env_service:textpulse_handler_duration_seconds:histogram_quantile5m"
                        f'{{{ENV_SVC}, quantile="0.99"}})',
                        "{{service}}",
                    ),
                ),
                "p99 time to handle one consumed batch or record, per service.",
            ),
            Panel(
                "Mean consumed batch size",
                "short",
                (Query(f"max by (service) (env_service:textpulse_batch_size:mean5m{{{ENV_SVC}}})", "{{service}}"),),
                "Records per consumed batch (5 m mean).",
            ),
            Panel(
                "Error ratio per stage",
                "percentunit",
                (
                    Query(
                        f"max by (service) (env_service:textpulse_messages_failed:ratio_rate5m{{{ENV_SVC}}})",
                        "{{service}}",
                    ),
                ),
                "Failed / received records (5 m); alert TextpulseHandlerErrorRatioHigh above 5%. "
                "Break down by reason in Explore with textpulse_messages_failed_total.",
                red_above=0.05,
            ),
            Panel(
                "Dead-lettered per stage",
                "ops",
                (Query(f"sum by (service) (env_service:textpulse_dlq_messages:rate5m{{{ENV_SVC}}})", "{{service}}"),),
                "Records sent to a dead-letter topic per second (0 when none); alert above 0.1/s.",
                red_above=0.1,
            ),
            Panel(
                "Dead letters by reason",
                "ops",
                (
                    Query(
                        f"sum by (service, reason) (env_service_reason:textpulse_dlq_messages:rate5m{{{ENV_SVC}}})",
                        "{{service}} {{reason}}",
                    ),
                ),
                "Why records were dead-lettered (empty until the first dead letter).",
                stacked=True,
            ),
            Panel(
                "Kafka broker: messages in per topic",
                "ops",
                (
                    Query(
                        "sum by (topic) "
                        f'(rate(kafka_server_brokertopicmetrics_messagesin_total{{{ENV}, topic!=""}}'
                        "[$__rate_interval]))",
                        "{{topic}}",
                    ),
                ),
                "Records appended per second per topic, from the broker's JMX exporter.",
            ),
            Panel(
                "HTTP requests by status",
                "reqps",
                (
                    Query(
                        "sum by (service, status) "
                        f"(env_service_route_status:textpulse_http_requests:rate1m{{{ENV_SVC}}})",
                        "{{service}} {{status}}",
                    ),
                ),
                "Requests per second to the services' HTTP APIs (ingest, health, metrics, search).",
                stacked=True,
            ),
            Panel(
                "HTTP p99 latency by route",
                "s",
                (
                    Query(
                        "max by (service, route) "
                        "(env_service_route:textpulse_http_request_duration_seconds:histogram_quantile5m"
                        f'{{{ENV_SVC}, quantile="0.99"}})',
                        "{{service}} {{route}}",
                    ),
                ),
                "p99 HTTP request duration per service and route (5 m window).",
            ),
            *index_and_recommend_panels(),
        ],
    )


def index_and_recommend_panels() -> list[Panel]:
    """The two stages off the enrichment path: Elasticsearch indexing and recommendations."""
    index = 'env=~"$env", service="index"'
    rec = 'env=~"$env", service="recommend"'
    return [
        Panel(
            "Index: documents by family and outcome",
            "ops",
            (
                Query(
                    f"sum by (family, outcome) (rate(textpulse_index_documents_total{{{index}}}[$__rate_interval]))",
                    "{{family}} {{outcome}}",
                ),
            ),
            "Documents per second written to Elasticsearch (indexed), refused by it (rejected, dead-lettered) "
            "or invalid, per family (events, alerts, routes).",
            stacked=True,
        ),
        Panel(
            "Index: bulk write p95 and retries",
            "s",
            (
                Query(
                    "histogram_quantile(0.95, sum by (family, le) "
                    f"(rate(textpulse_index_bulk_duration_seconds_bucket{{{index}}}[$__rate_interval])))",
                    "{{family}} p95",
                ),
                Query(
                    f"sum(rate(textpulse_index_bulk_retries_total{{{index}}}[$__rate_interval])) "
                    f"or sum(rate(textpulse_index_bulk_duration_seconds_count{{{index}}}[$__rate_interval])) * 0",
                    "retries/s",
                ),
            ),
            "p95 time to write one consumed batch to Elasticsearch (retries included), and bulk passes "
            "retried per second (Elasticsearch down, 429, 5xx; 0 while healthy).",
        ),
        Panel(
            "Recommend: request latency",
            "s",
            (
                Query(
                    "histogram_quantile(0.5, sum by (source, le) "
                    f"(rate(textpulse_recommend_request_seconds_bucket{{{rec}}}[$__rate_interval])))",
                    "{{source}} p50",
                ),
                Query(
                    "histogram_quantile(0.95, sum by (source, le) "
                    f"(rate(textpulse_recommend_request_seconds_bucket{{{rec}}}[$__rate_interval])))",
                    "{{source}} p95",
                ),
            ),
            "Time to produce one recommendation list, by source (http API, stream), cache hits included.",
        ),
        Panel(
            "Recommend: cache hit rate and fallbacks",
            "percentunit",
            (
                Query(
                    f'sum(rate(textpulse_recommend_cache_requests_total{{{rec}, result="hit"}}[$__rate_interval])) '
                    f"/ sum(rate(textpulse_recommend_cache_requests_total{{{rec}}}[$__rate_interval]))",
                    "cache hit rate",
                ),
                Query(
                    f"sum(rate(textpulse_recommend_popular_fallbacks_total{{{rec}}}[$__rate_interval])) "
                    f"/ sum(rate(textpulse_recommend_request_seconds_count{{{rec}}}[$__rate_interval]))",
                    "popularity fallback share",
                ),
            ),
            "Share of lookups answered from the cache, and share of lists served from popularity "
            "(users without a profile).",
            max_value=1,
        ),
        Panel(
            "Recommend: catalogue, profiles, candidates scored",
            "short",
            (
                Query(f"sum(textpulse_recommend_catalogue_items{{{rec}}})", "catalogue items"),
                Query(f"sum(textpulse_recommend_profiles{{{rec}}})", "profiles in memory"),
                Query(
                    f"sum(rate(textpulse_recommend_candidates_scored_total{{{rec}}}[$__rate_interval]))",
                    "candidates scored/s",
                ),
            ),
            "Active catalogue items, user profiles held in memory, and catalogue items scored per second.",
        ),
        Panel(
            "Recommend: item-kNN refresh and embeddings",
            "s",
            (
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(textpulse_recommend_cf_refresh_seconds_bucket{{{rec}}}[$__rate_interval])))",
                    "refresh p95",
                ),
                Query(
                    f"sum(rate(textpulse_recommend_items_embedded_total{{{rec}}}[$__rate_interval]))",
                    "items embedded/s",
                ),
            ),
            "p95 time to rebuild item-kNN and popularity, and catalogue items embedded per second.",
        ),
    ]


def model_serving() -> Dashboard:
    """Triton's server-side view and the services' client-side view of inference."""
    model = 'env=~"$env", model=~"$model"'
    client = 'env=~"$env", service=~"$service", model=~"$model"'
    svc = 'env=~"$env", service=~"$service"'
    return Dashboard(
        uid="textpulse-model-serving",
        title="textpulse / Model serving",
        description="Triton queue and compute time, server batch size and request rate; "
        "the services' inference latency, batch size, errors, circuit breaker state and rejected inputs.",
        variables=(VAR_ENV, VAR_SERVICE, VAR_MODEL),
        textboxes=(VAR_EVENT_ID,),
        panels=[
            follow_an_event(
                "**Model confidence**: *Confidence per head* and *Low-confidence share* (model health, "
                "below). **Lag**: dashboard *textpulse / Pipeline overview*, panels *Consumer lag per topic* "
                "and *Oldest unconsumed record per topic*."
            ),
            Panel(
                "Triton requests per model",
                "reqps",
                (
                    Query(f"sum by (model) (env_model:nv_inference_request_success:rate1m{{{model}}})", "{{model}} ok"),
                    Query(
                        f"sum by (model) (env_model:nv_inference_request_failure:rate1m{{{model}}})",
                        "{{model}} failed",
                    ),
                ),
                "Inference requests per second answered by Triton, successful and failed.",
            ),
            Panel(
                "Triton server batch size",
                "short",
                (Query(f"max by (model) (env_model:nv_inference_batch_size:mean5m{{{model}}})", "{{model}}"),),
                "Requests per model execution (nv_inference_count / nv_inference_exec_count, 5 m): "
                "how well dynamic batching groups requests.",
            ),
            Panel(
                "Triton queue time per request",
                "µs",
                (Query(f"max by (model) (env_model:nv_inference_queue_duration_us:mean5m{{{model}}})", "{{model}}"),),
                "Mean time a request waits in Triton's scheduler queue (5 m).",
            ),
            Panel(
                "Triton compute time per request",
                "µs",
                (
                    Query(
                        f"max by (model) (env_model:nv_inference_compute_infer_duration_us:mean5m{{{model}}})",
                        "{{model}}",
                    ),
                ),
                "Mean model execution (infer) time per request (5 m).",
            ),
            Panel(
                "Client inference latency",
                "s",
                (
                    Query(
                        "max by (service, model, backend, quantile) "
                        "(env_service_model_backend:textpulse_inference_duration_seconds:histogram_quantile5m"
                        f"{{{client}}})",
                        "{{service}} {{model}} {{backend}} p{{quantile}}",
                    ),
                ),
                "p50 / p95 / p99 of one inference call as seen by the services (Triton or in-process).",
            ),
            Panel(
                "Client inference calls",
                "ops",
                (
                    Query(
                        "sum by (service, model, backend) "
                        f"(env_service_model_backend:textpulse_inference_requests:rate1m{{{client}}})",
                        "{{service}} {{model}} {{backend}}",
                    ),
                ),
                "Inference calls per second made by the services.",
            ),
            Panel(
                "Client batch size",
                "short",
                (
                    Query(
                        "max by (service, model) "
                        f"(env_service_model:textpulse_inference_batch_size:mean5m{{{client}}})",
                        "{{service}} {{model}}",
                    ),
                ),
                "Texts per inference call sent by the services (5 m mean).",
            ),
            Panel(
                "Client inference errors",
                "ops",
                (
                    Query(
                        "sum by (service, model, backend) "
                        f"(env_service_model_backend:textpulse_inference_errors:rate5m{{{client}}})",
                        "{{service}} {{model}} {{backend}}",
                    ),
                ),
                "Inference errors per second seen by the services (0 when none); by kind in Explore "
                "with textpulse_inference_errors_total.",
                red_above=0.05,
            ),
            Panel(
                "Open circuits",
                "none",
                (Query(f'sum(textpulse_inference_circuit_state{{{svc}, state="open"}})', "open"),),
                "Services whose inference circuit breaker is open: calls refused for triton_breaker_reset_s "
                "after triton_breaker_failures consecutive failures (the batch waits, nothing is lost).",
                kind="stat",
                width=6,
                height=8,
                red_above=1,
            ),
            Panel(
                "Circuit breaker state",
                "none",
                (
                    Query(
                        f"max by (service, backend, state) (textpulse_inference_circuit_state{{{svc}}})",
                        "{{service}} {{backend}} {{state}}",
                    ),
                ),
                "1 marks the current state per service and backend: closed (calls go through), open (refused), "
                "half_open (trial calls). The in-process backend has no breaker and reports closed.",
                width=18,
                max_value=1,
            ),
            Panel(
                "Backend unavailable and rejected inputs",
                "ops",
                (
                    Query(
                        f"sum by (service) (env_service:textpulse_inference_unavailable:rate5m{{{svc}}})",
                        "{{service}} unavailable",
                    ),
                    Query(
                        f"sum by (service) (env_service:textpulse_inference_rejected:rate5m{{{svc}}})",
                        "{{service}} rejected",
                    ),
                ),
                "Batches per second that waited for an unavailable backend (circuit open, server down), and "
                "inputs per second the model rejected (dead-lettered). 0 while healthy.",
                width=24,
                red_above=0.05,
            ),
            *triton_resource_panels(model),
            *model_health_panels(),
        ],
    )


def triton_resource_panels(model: str) -> list[Panel]:
    """Triton's scheduler backlog and its GPUs (the nv_gpu_* series exist only where Triton sees a GPU)."""
    return [
        Panel(
            "Triton pending requests",
            "short",
            (Query(f"sum by (model) (env_model:nv_inference_pending_request_count:sum{{{model}}})", "{{model}}"),),
            "Requests Triton has received but not finished (scheduler queue plus executing), per model.",
            width=8,
        ),
        Panel(
            "Triton GPU utilisation",
            "percentunit",
            (Query('max by (instance, gpu_uuid) (nv_gpu_utilization{env=~"$env"})', "{{instance}} {{gpu_uuid}}"),),
            "Utilisation (0 to 1) of each GPU of each Triton server; no data on a CPU-only server.",
            width=8,
            max_value=1,
        ),
        Panel(
            "Triton GPU memory used",
            "percentunit",
            (
                Query(
                    'sum by (instance, gpu_uuid) (nv_gpu_memory_used_bytes{env=~"$env"}) '
                    '/ sum by (instance, gpu_uuid) (nv_gpu_memory_total_bytes{env=~"$env"})',
                    "{{instance}} {{gpu_uuid}}",
                ),
            ),
            "Share of each GPU's memory in use (models, instances, batches); alert TritonGpuMemoryHigh above 90%.",
            width=8,
            max_value=1,
            red_above=0.9,
        ),
    ]


def model_health_panels() -> list[Panel]:
    """Per model, version and head: label mix, confidence, drift against the export-time reference, failures."""
    health = 'env=~"$env", service=~"$service", model=~"$model"'
    return [
        Panel(
            "Label mix per head",
            "percentunit",
            (
                Query(
                    "max by (model, version, head, label) "
                    f"(env_service_model_version_head_label:textpulse_model_predictions:ratio_rate5m{{{health}}})",
                    "{{model}} v{{version}} {{head}}: {{label}}",
                ),
            ),
            "Share of each predicted label among a head's predictions (5 m); compare with the training "
            "mix in the version's reference.json. NER: entity types of the model's spans.",
            max_value=1,
        ),
        Panel(
            "Predictions per head",
            "ops",
            (
                Query(
                    "sum by (model, version, head) "
                    f"(env_service_model_version_head_label:textpulse_model_predictions:rate5m{{{health}}})",
                    "{{model}} v{{version}} {{head}}",
                ),
            ),
            "Predictions per second by model, served version and head (NER: entities found by the model; "
            "cashtag rule matches under model rules).",
            stacked=True,
        ),
        Panel(
            "Confidence per head",
            "percentunit",
            (
                Query(
                    "max by (model, version, head, quantile) "
                    f"(env_service_model_version_head:textpulse_model_confidence:histogram_quantile5m{{{health}}})",
                    "{{model}} v{{version}} {{head}} p{{quantile}}",
                ),
                Query(
                    "max by (model, version, head) "
                    f"(env_service_model_version_head:textpulse_model_confidence:mean5m{{{health}}})",
                    "{{model}} v{{version}} {{head}} mean",
                ),
            ),
            "Winning label's softmax probability (NER: span mean): p10, median and mean over 5 m.",
            max_value=1,
        ),
        Panel(
            "Low-confidence share",
            "percentunit",
            (
                Query(
                    "max by (model, version, head) "
                    "(env_service_model_version_head:textpulse_model_confidence_below_half:ratio_rate5m"
                    f"{{{health}}})",
                    "{{model}} v{{version}} {{head}}",
                ),
            ),
            "Share of predictions with confidence at most 0.5 (5 m): unfamiliar input shows here first.",
            max_value=1,
        ),
        Panel(
            "Drift (PSI) per head",
            "none",
            (
                Query(
                    "max by (model, version, head, signal) "
                    f"(env_service_model_version_head_signal:textpulse_model_drift_psi:max{{{health}}})",
                    "{{model}} v{{version}} {{head}} {{signal}}",
                ),
            ),
            "Population stability index of the last predictions' label mix and confidence histogram against "
            "the dev-split reference saved at export (0.1 moderate, 0.25 significant: TextpulseModelDrift). "
            "No series for model versions exported without reference.json; NaN while the window is short.",
            red_above=0.25,
        ),
        Panel(
            "Failed records in classify and NER",
            "ops",
            (
                Query(
                    "sum by (service, reason) (env_service_reason:textpulse_messages_failed:rate5m"
                    '{env=~"$env", service=~"classify|ner"})',
                    "{{service}} {{reason}}",
                ),
                Query(
                    "sum by (service) (env_service:textpulse_messages_failed:rate5m"
                    '{env=~"$env", service=~"classify|ner"})',
                    "{{service}} all",
                ),
            ),
            "Records per second that failed in the enrichment services, by reason: poison and model_rejected "
            "(dead-lettered), inference_unavailable and error (the batch is redelivered). 0 while healthy.",
            red_above=0.05,
        ),
    ]


def financial_sentiment() -> Dashboard:
    """Sentiment and topic mix of the financial stream and the alert service's activity."""
    return Dashboard(
        uid="textpulse-financial-sentiment",
        title="textpulse / Financial sentiment",
        description="Sentiment and topics over time, negative share, alerts by detector. Entities are "
        "never Prometheus labels: top entities by negative share come from Elasticsearch "
        "(index service) and from the alerts themselves (Alertmanager, label entity).",
        variables=(VAR_ENV, VAR_SERVICE),
        links=(
            (
                "Financial alerts in Alertmanager",
                "http://127.0.0.1:9093/#/alerts?filter=%7Bsource%3D%22textpulse-alert%22%7D",
            ),
        ),
        panels=[
            Panel(
                "Negative share",
                "percentunit",
                (Query(f"max(env_service:textpulse_sentiment_negative:ratio_rate5m{{{ENV_SVC}}})", "negative"),),
                "Share of negative (or Bearish) sentiment predictions over 5 minutes.",
                kind="stat",
                width=6,
                height=4,
                max_value=1,
            ),
            Panel(
                "Open alerts",
                "short",
                (Query(f"sum(env_service_detector:textpulse_alerts_open:sum{{{ENV_SVC}}})", "open"),),
                "Financial alerts currently firing, all detectors.",
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "Alerts fired (1 h)",
                "short",
                (Query(f"sum(env_service_detector:textpulse_alerts_fired:increase1h{{{ENV_SVC}}})", "fired"),),
                "Alerts fired over the last hour, all detectors.",
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "Alert detection delay p95",
                "s",
                (
                    Query(
                        "max(env_service_detector:textpulse_alert_detection_delay_seconds:histogram_quantile1h"
                        f'{{{ENV_SVC}, quantile="0.95"}})',
                        "p95",
                    ),
                ),
                "Event time of the burst -> alert fired, p95 over the last hour.",
                kind="stat",
                width=6,
                height=4,
            ),
            Panel(
                "Sentiment over time",
                "ops",
                (
                    Query(
                        "sum by (label) "
                        f'(env_service_task_label:textpulse_model_predictions:rate5m{{{ENV_SVC}, task="sentiment"}})',
                        "{{label}}",
                    ),
                ),
                "Sentiment predictions per second by label, stacked. Sentiment per topic or per entity "
                "is a cross-tab of event fields: query it in Elasticsearch, not here.",
                stacked=True,
            ),
            Panel(
                "Negative share over time",
                "percentunit",
                (
                    Query(
                        f"max by (service) (env_service:textpulse_sentiment_negative:ratio_rate5m{{{ENV_SVC}}})",
                        "{{service}}",
                    ),
                ),
                "Share of negative (or Bearish) sentiment predictions (5 m).",
                max_value=1,
            ),
            Panel(
                "Topics over time (top 10)",
                "ops",
                (
                    Query(
                        "topk(10, sum by (label) "
                        f'(env_service_task_label:textpulse_model_predictions:rate5m{{{ENV_SVC}, task="topic"}}))',
                        "{{label}}",
                    ),
                ),
                "Topic predictions per second, the ten busiest topics.",
                stacked=True,
            ),
            Panel(
                "Entity mentions by type",
                "ops",
                (
                    Query(
                        "sum by (label) "
                        f'(env_service_task_label:textpulse_model_predictions:rate5m{{{ENV_SVC}, task="entity_type"}})',
                        "{{label}}",
                    ),
                ),
                "Entities found per second by type (ORG, PER, LOC, ...). Which entities: the top "
                "entities by negative share are in Elasticsearch and in the alerts (Alertmanager link above).",
                stacked=True,
            ),
            Panel(
                "Alerts fired per detector (1 h)",
                "short",
                (
                    Query(
                        f"sum by (detector) (env_service_detector:textpulse_alerts_fired:increase1h{{{ENV_SVC}}})",
                        "{{detector}}",
                        instant=True,
                    ),
                ),
                "Alerts fired in the last hour by detector (negative surge, volume spike, reversal).",
                kind="bargauge",
            ),
            Panel(
                "Alert lifecycle",
                "short",
                (
                    Query(
                        f"sum by (detector) (env_service_detector:textpulse_alerts_open:sum{{{ENV_SVC}}})",
                        "{{detector}} open",
                    ),
                    Query(
                        f"sum by (detector) (env_service_detector:textpulse_alerts_resolved:increase1h{{{ENV_SVC}}})",
                        "{{detector}} resolved (1 h)",
                    ),
                ),
                "Open alerts and alerts resolved over the last hour, by detector.",
            ),
            Panel(
                "Detection delay by detector",
                "s",
                (
                    Query(
                        "max by (detector, quantile) "
                        "(env_service_detector:textpulse_alert_detection_delay_seconds:histogram_quantile1h"
                        f"{{{ENV_SVC}}})",
                        "{{detector}} p{{quantile}}",
                    ),
                ),
                "p50 / p95 time from the first event of a burst to its alert (1 h window).",
                width=24,
            ),
        ],
    )


def customer_service() -> Dashboard:
    """Routing of support conversations: queues, priorities, human triage, intents."""
    return Dashboard(
        uid="textpulse-customer-service",
        title="textpulse / Customer service",
        description="Routes per queue and priority, human-triage rate and reasons, intents.",
        variables=(VAR_ENV, VAR_SERVICE),
        panels=[
            Panel(
                "Routed",
                "ops",
                (Query(f"sum(env_service_queue_priority:textpulse_routes:rate5m{{{ENV_SVC}}})", "routed/s"),),
                "Support events routed per second, all queues.",
                kind="stat",
                width=8,
                height=4,
            ),
            Panel(
                "Human-triage share",
                "percentunit",
                (Query(f"max(env_service:textpulse_triage:ratio_rate5m{{{ENV_SVC}}})", "triage"),),
                "Share of routed events sent to human triage (5 m).",
                kind="stat",
                width=8,
                height=4,
                max_value=1,
            ),
            Panel(
                "Routed (1 h)",
                "short",
                (Query(f"sum(increase(textpulse_routes_total{{{ENV_SVC}}}[1h]))", "routed"),),
                "Support events routed over the last hour, all queues.",
                kind="stat",
                width=8,
                height=4,
            ),
            Panel(
                "Routes per queue",
                "ops",
                (
                    Query(
                        f"sum by (queue) (env_service_queue_priority:textpulse_routes:rate5m{{{ENV_SVC}}})",
                        "{{queue}}",
                    ),
                ),
                "Events routed per second to each queue (support.queue.<name>).",
                stacked=True,
            ),
            Panel(
                "Routes per priority",
                "ops",
                (
                    Query(
                        f"sum by (priority) (env_service_queue_priority:textpulse_routes:rate5m{{{ENV_SVC}}})",
                        "{{priority}}",
                    ),
                ),
                "Events routed per second by priority.",
                stacked=True,
            ),
            Panel(
                "Human-triage share over time",
                "percentunit",
                (Query(f"max by (service) (env_service:textpulse_triage:ratio_rate5m{{{ENV_SVC}}})", "{{service}}"),),
                "Share of routed events sent to human triage (5 m).",
                max_value=1,
            ),
            Panel(
                "Triage reasons",
                "ops",
                (
                    Query(
                        f"sum by (reason) (env_service_reason:textpulse_triage:rate5m{{{ENV_SVC}}})",
                        "{{reason}}",
                    ),
                ),
                "Why events went to human triage (out of scope, low confidence, ...), per second.",
                stacked=True,
            ),
            Panel(
                "Queue x priority (1 h)",
                "short",
                (
                    Query(
                        f"sum by (queue, priority) (increase(textpulse_routes_total{{{ENV_SVC}}}[1h]))",
                        "{{queue}} {{priority}}",
                        instant=True,
                    ),
                ),
                "Events routed over the last hour per queue and priority.",
                kind="bargauge",
            ),
            Panel(
                "Intents (top 10)",
                "ops",
                (
                    Query(
                        "topk(10, sum by (label) "
                        f'(env_service_task_label:textpulse_model_predictions:rate5m{{{ENV}, task="intent"}}))',
                        "{{label}}",
                    ),
                ),
                "Intent predictions per second, the ten most frequent (all services).",
            ),
        ],
    )


def dashboards() -> list[Dashboard]:
    """Every dashboard, in file order."""
    return [pipeline_overview(), model_serving(), financial_sentiment(), customer_service()]


# ---------------------------------------------------------------- rendering


def _thresholds(red_above: float | None) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {"mode": "absolute", "steps": steps}


def _field_defaults(panel: Panel) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _thresholds(panel.red_above)}
    if panel.min_value is not None:
        defaults["min"] = panel.min_value
    if panel.max_value is not None:
        defaults["max"] = panel.max_value
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 25 if panel.stacked else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "line" if panel.red_above is not None else "off"},
        }
    return defaults


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["lastNotNull"], "fields": "", "values": False}
    if panel.kind == "stat":
        return {
            "reduceOptions": reduce,
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        }
    if panel.kind == "bargauge":
        return {
            "reduceOptions": reduce,
            "displayMode": "gradient",
            "orientation": "horizontal",
            "showUnfilled": True,
        }
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _target(query: Query, ref_id: str) -> dict[str, Any]:
    return {
        "datasource": dict(DATASOURCE),
        "refId": ref_id,
        "expr": query.expr,
        "legendFormat": query.legend or "__auto",
        "range": not query.instant,
        "instant": query.instant,
    }


def _variable(var: Variable | TextBox) -> dict[str, Any]:
    if isinstance(var, TextBox):
        return {
            "name": var.name,
            "label": var.label,
            "type": "textbox",
            "query": "",
            "current": {"selected": False, "text": "", "value": ""},
            "options": [],
            "hide": 0,
        }
    return {
        "name": var.name,
        "label": var.label,
        "type": "query",
        "datasource": dict(DATASOURCE),
        "definition": var.query,
        "query": var.query,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def render(dashboard: Dashboard) -> dict[str, Any]:
    """Build the Grafana JSON model of a dashboard (ids from 1, grid laid out in order)."""
    variables: list[Variable | TextBox] = [*dashboard.variables, *dashboard.textboxes]
    panels: list[dict[str, Any]] = []
    x = y = row_height = 0
    for panel_id, panel in enumerate(dashboard.panels, start=1):
        if x + panel.width > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        gridpos = {"h": panel.height, "w": panel.width, "x": x, "y": y}
        x += panel.width
        row_height = max(row_height, panel.height)
        if isinstance(panel, TextPanel):
            panels.append(
                {
                    "id": panel_id,
                    "type": "text",
                    "title": panel.title,
                    "gridPos": gridpos,
                    "options": {"mode": "markdown", "content": panel.content},
                }
            )
            continue
        panels.append(
            {
                "id": panel_id,
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "datasource": dict(DATASOURCE),
                "gridPos": gridpos,
                "fieldConfig": {"defaults": _field_defaults(panel), "overrides": []},
                "options": _options(panel),
                "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
            }
        )
    return {
        "id": None,
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["textpulse", "generated"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {"title": title, "type": "link", "url": url, "targetBlank": True, "icon": "external link"}
            for title, url in (*dashboard.links, TRACES_LINK)
        ],
        "templating": {"list": [_variable(v) for v in variables]},
        "panels": panels,
    }


def dumps(dashboard: Dashboard) -> str:
    """Stable JSON text of a dashboard (what the committed file must equal)."""
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"


def panel_queries() -> list[PanelQuery]:
    """Every PromQL expression of every dashboard panel, with where it comes from."""
    return [
        PanelQuery(dashboard.uid, dashboard.title, panel["id"], panel["title"], target["refId"], target["expr"])
        for dashboard in dashboards()
        for panel in render(dashboard)["panels"]
        for target in panel.get("targets", ())
    ]


_VARIABLE_RE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand(expr: str, values: dict[str, str] | None = None) -> str:
    """Replace Grafana template variables with concrete values to run an expression.

    Defaults: every regex variable ``.*`` (Grafana's "All"), ``$__rate_interval``
    ``1m``, ``$__range`` ``1h``. An unknown variable raises ``KeyError`` so a new
    variable cannot silently reach Prometheus unexpanded.
    """
    merged = {**DEFAULT_VARIABLE_VALUES, **(values or {})}
    return _VARIABLE_RE.sub(lambda m: merged[m.group(1) or m.group(2)], expr)


def write_all(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """Write every dashboard's JSON file; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for dashboard in dashboards():
        path = directory / dashboard.filename
        path.write_text(dumps(dashboard), encoding="utf-8")
        paths.append(path)
    return paths


def stale_files(directory: Path = DASHBOARDS_DIR) -> list[str]:
    """Names of dashboard files that are missing or differ from the generated text."""
    stale = []
    expected = {d.filename: dumps(d) for d in dashboards()}
    for name, text in expected.items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    stale.extend(sorted(p.name for p in directory.glob("*.json") if p.name not in expected))
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line: write the dashboards, ``--check`` to verify them, ``--list`` the queries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    parser.add_argument("--list", action="store_true", help="print every panel expression (expanded)")
    args = parser.parse_args(argv)
    if args.list:
        sys.stdout.writelines(
            f"{q.dashboard_uid}\t{q.panel_id}\t{q.panel_title}\t{expand(q.expr)}\n" for q in panel_queries()
        )
        return 0
    if args.check:
        stale = stale_files()
        if stale:
            sys.stderr.write(f"stale dashboards (run python deploy/grafana/generate.py): {', '.join(stale)}\n")
            return 1
        sys.stdout.write(f"{len(dashboards())} dashboards up to date\n")
        return 0
    for path in write_all():
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
