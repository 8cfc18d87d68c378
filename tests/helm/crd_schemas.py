"""JSON schemas of the custom resources the chart renders (KEDA, Prometheus Operator).

kubernetes-validate ships the built-in kinds only. These cover the fields the
chart writes, with the types and required keys of the upstream CRDs
(keda.sh/v1alpha1 ScaledObject and TriggerAuthentication of KEDA 2.x,
monitoring.coreos.com/v1 ServiceMonitor and PrometheusRule), closed with additionalProperties so a
misspelt field fails here instead of being pruned silently by the API server.
"""

from __future__ import annotations

from typing import Any

_META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}},
}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": _META,
            "spec": spec,
        },
    }


_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["scaleTargetRef", "triggers"],
        "properties": {
            "scaleTargetRef": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"},
                    "apiVersion": {"type": "string"},
                },
            },
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["type", "metadata"],
                    "properties": {
                        "type": {"enum": ["kafka", "cpu"]},
                        "metricType": {"enum": ["Utilization", "AverageValue"]},
                        # KEDA trigger metadata is map[string]string: a bare number or bool is rejected.
                        "metadata": _STR_MAP,
                        "authenticationRef": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}},
                        },
                    },
                    "if": {"properties": {"type": {"const": "kafka"}}},
                    "then": {
                        "properties": {
                            "metadata": {"required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"]}
                        }
                    },
                    "else": {"required": ["metricType"], "properties": {"metadata": {"required": ["value"]}}},
                },
            },
        },
    },
)

TRIGGER_AUTHENTICATION = _resource(
    "keda.sh/v1alpha1",
    "TriggerAuthentication",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "secretTargetRef": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["parameter", "name", "key"],
                    "properties": {
                        "parameter": {"enum": ["sasl", "username", "password", "tls", "ca", "cert", "key"]},
                        "name": {"type": "string", "minLength": 1},
                        "key": {"type": "string", "minLength": 1},
                    },
                },
            }
        },
    },
)

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "endpoints"],
        "properties": {
            "jobLabel": {"type": "string"},
            "selector": {
                "type": "object",
                "properties": {"matchLabels": _STR_MAP},
                "required": ["matchLabels"],
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                    },
                },
            },
        },
    },
)

#: The operator's Duration pattern (Prometheus durations: 1h30m, 5m, 0).
_DURATION = {
    "type": "string",
    "pattern": "^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$",
}

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["groups"],
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "interval": _DURATION,
                        "query_offset": _DURATION,
                        "limit": {"type": "integer"},
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["expr"],
                                # Exactly one of record / alert, as the operator's admission webhook checks.
                                "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
                                "properties": {
                                    "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                    "alert": {"type": "string", "minLength": 1},
                                    # IntOrString in the CRD; a PromQL string here.
                                    "expr": {"type": "string", "minLength": 1},
                                    "for": _DURATION,
                                    "keep_firing_for": _DURATION,
                                    "labels": _STR_MAP,
                                    "annotations": _STR_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)

CRD_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
}
