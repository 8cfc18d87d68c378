"""Grafana's trace links in the dashboards, decoded, for the dashboard and chart tests.

The dashboards open Explore on the Jaeger datasource through URLs such as
``/explore?schemaVersion=1&orgId=1&panes=<percent-encoded JSON>`` (dashboard header links, markdown
links in text panels). These helpers find them and decode the pane JSON, so a test can check the
datasource uid they name against the provisioned one.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

GRAFANA = REPO / "deploy" / "grafana"
#: The local provisioning file of the Jaeger datasource (the reference for compose and the chart).
JAEGER_PROVISIONING = GRAFANA / "provisioning" / "datasources" / "jaeger.yml"

# An Explore URL ends at the markdown link's ")" or the JSON string's quote.
_EXPLORE_RE = re.compile(r"/explore\?[^\s)\"]+")
# Grafana template variables (left unencoded so that Grafana replaces them), e.g. ${event_id:percentencode}.
_TEMPLATE_VAR_RE = re.compile(r"\$\{[^}]+\}")


def jaeger_datasources(path: Path) -> list[dict[str, Any]]:
    """The ``type: jaeger`` entries of a Grafana datasource provisioning file."""
    return jaeger_datasources_of(yaml.safe_load(path.read_text()))


def jaeger_datasources_of(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [ds for ds in doc.get("datasources", []) if ds.get("type") == "jaeger"]


def provisioned_jaeger_uid() -> str:
    (datasource,) = jaeger_datasources(JAEGER_PROVISIONING)
    return str(datasource["uid"])


def explore_urls(dashboard: dict[str, Any]) -> list[str]:
    """Every Explore URL of a dashboard: header links and links in text panels."""
    urls = [link["url"] for link in dashboard.get("links", []) if "/explore?" in link.get("url", "")]
    for panel in dashboard["panels"]:
        if panel["type"] == "text":
            urls += _EXPLORE_RE.findall(panel["options"]["content"])
    return urls


def explore_panes(url: str, variables: dict[str, str] | None = None) -> dict[str, Any]:
    """The decoded ``panes`` of an Explore URL, template variables replaced (default ``x``) as Grafana would."""
    query = urllib.parse.urlsplit(url).query
    raw = _TEMPLATE_VAR_RE.sub(lambda m: (variables or {}).get(m.group(0), "x"), query)
    params = urllib.parse.parse_qs(raw, strict_parsing=True)
    assert params.get("schemaVersion") == ["1"], url
    (panes,) = params["panes"]
    decoded: dict[str, Any] = json.loads(panes)
    return decoded
