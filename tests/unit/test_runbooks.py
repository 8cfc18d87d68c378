"""Every alert links its runbook: a ``runbook_url`` annotation into docs/runbooks.md, whose section exists.

Alerts are read from every rule file of deploy/prometheus/rules, so a new rule file or alert
is covered without editing this test. The URL scheme is
``https://github.com/textpulse/textpulse/blob/main/docs/runbooks.md#<alertname in lower case>``
(GitHub's anchor of a ``## <AlertName>`` heading); the chart swaps the part before ``#``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.conftest import REPO

RULES = REPO / "deploy" / "prometheus" / "rules"
RUNBOOKS = REPO / "docs" / "runbooks.md"
#: Where runbook_url points (also monitoring.prometheusRule.runbookBaseUrl's default in the chart).
RUNBOOK_BASE = "https://github.com/textpulse/textpulse/blob/main/docs/runbooks.md"


def alert_rules() -> dict[str, dict[str, Any]]:
    """Alert name → rule, over every rule file."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text()).get("groups", []):
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["alert"] not in found, f"{path.name}: alert {rule['alert']} defined twice"
                    found[rule["alert"]] = rule
    return found


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def runbook_sections() -> list[str]:
    return re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.MULTILINE)


def test_every_alert_has_a_runbook_url_to_its_section() -> None:
    alerts = alert_rules()
    assert alerts
    anchors = {github_anchor(h): h for h in runbook_sections()}
    for name, rule in alerts.items():
        url = rule.get("annotations", {}).get("runbook_url")
        assert url == f"{RUNBOOK_BASE}#{name.lower()}", f"{name}: runbook_url {url!r}"
        assert anchors.get(name.lower()) == name, f"{name}: no '## {name}' section in docs/runbooks.md"


def test_no_runbook_section_without_an_alert() -> None:
    assert set(runbook_sections()) - set(alert_rules()) == set(), "runbook sections of alerts that no longer exist"


def test_anchor_rule() -> None:
    assert github_anchor("TextpulseTargetDown") == "textpulsetargetdown"
    assert github_anchor("Lag: in seconds") == "lag-in-seconds"
