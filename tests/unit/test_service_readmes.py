"""Every service README has one layout, and its facts agree with the registry (issue #24).

``services/<name>/README.md`` opens with its title (``# <name> — …``) and one paragraph saying what
the service is for, then the same sections in the same order (:data:`SECTIONS`); the sections a
service needs beyond those (design notes, metrics, figures) come after them. What the registry
knows is checked where a reader looks for it:

- **Topics**: the default name of every input and output topic, the DLQ topic, each consumer group,
  and the setting that names each of them (as its environment suffix, e.g. ``TOPIC_IN``);
- **Guarantee**: a service honouring ``delivery=exactly_once`` shows how to turn it on
  (``TEXTPULSE_<NAME>_DELIVERY=exactly_once``); one built with ``kit.Service(exactly_once=False)``
  says so (read from ``app.py``'s source, as ``test_service_registry.py`` does: no import);
- **HTTP**: the port and the ops routes (an ``api`` service also its ``/v1/`` routes);
- **Wiring**: the kit it is built on; **Settings**: the env prefix and the top-level configuration table.
"""

from __future__ import annotations

import re

import pytest
from textpulse.contracts.services import REGISTRY, SERVICES, ServiceSpec

from tests.conftest import REPO

#: The sections every service README has, in this order, before any other ``## `` section.
SECTIONS = ("Topics", "Guarantee", "HTTP", "Wiring", "Settings")
OPS_ROUTES = ("/health", "/ready", "/metrics")
CONFIG_TABLE = "../../README.md#configuration"
KIT = "libs/textpulse/kit.py"


def _readme(directory: str) -> str:
    return (REPO / "services" / directory / "README.md").read_text("utf-8")


def _sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(text before the first ``## ``, [(heading, body)] of the ``## `` sections), code blocks ignored."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line[3:].strip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(heading, "\n".join(body)) for heading, body in sections]


def _check_layout(text: str, name: str) -> dict[str, str]:
    """The title, one purpose paragraph and :data:`SECTIONS` first and in order; returns their bodies."""
    preamble, sections = _sections(text)
    lines = preamble.strip().splitlines()
    assert re.fullmatch(rf"# {re.escape(name)}( — .+)?", lines[0]), f"title: {lines[0]!r}"
    paragraphs = [p for p in "\n".join(lines[1:]).split("\n\n") if p.strip()]
    assert len(paragraphs) == 1, f"{name}: one purpose paragraph before '## {SECTIONS[0]}', found {len(paragraphs)}"
    headings = [heading for heading, _ in sections]
    assert tuple(headings[: len(SECTIONS)]) == SECTIONS, f"{name}: sections {headings}"
    assert len(set(headings)) == len(headings), f"{name}: a section twice: {headings}"
    bodies = dict(sections)
    for heading in SECTIONS:
        assert bodies[heading].strip(), f"{name}: empty '## {heading}'"
    return bodies


def _honours_exactly_once(spec: ServiceSpec) -> bool:
    source = (REPO / "services" / spec.name / "app.py").read_text("utf-8")
    return "exactly_once=False" not in source


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_layout(spec: ServiceSpec) -> None:
    _check_layout(_readme(spec.name), spec.name)


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_topics_groups_and_settings_agree_with_the_registry(spec: ServiceSpec) -> None:
    topics = _check_layout(_readme(spec.name), spec.name)["Topics"]
    missing = [
        f"{use.topic} ({use.setting})"
        for use in (*spec.inputs, *spec.outputs)
        # A ``_prefix`` setting names a family: ``support.queue.<queue>`` shows its prefix.
        if f"`{use.topic}" not in topics or use.setting.upper() not in topics
    ]
    missing += [group for group in spec.groups if f"`{group}`" not in topics]
    missing += [name for name in (f"`{spec.dlq.name}`", "TOPIC_DLQ", "GROUP_ID") if name not in topics]
    assert missing == [], f"services/{spec.name}/README.md '## Topics' misses {missing}"


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_guarantee_says_which_delivery_modes(spec: ServiceSpec) -> None:
    guarantee = _check_layout(_readme(spec.name), spec.name)["Guarantee"]
    assert "at-least-once" in guarantee.lower()
    if _honours_exactly_once(spec):
        assert f"{spec.env_prefix}DELIVERY=exactly_once" in guarantee, spec.name
    else:
        assert "exactly_once=False" in guarantee, f"{spec.name}: say that the kit runs it at-least-once only"


@pytest.mark.parametrize("spec", REGISTRY, ids=SERVICES)
def test_http_wiring_and_settings(spec: ServiceSpec) -> None:
    bodies = _check_layout(_readme(spec.name), spec.name)
    http = bodies["HTTP"]
    assert re.search(rf"\b{spec.port}\b", http), f"{spec.name}: port {spec.port}"
    assert [route for route in OPS_ROUTES if route not in http] == []
    assert ("/v1/" in http) == (spec.kind == "api"), f"{spec.name} is an {spec.kind} service"
    assert f"python -m {spec.module}" in http
    assert KIT in bodies["Wiring"]
    assert "kit.Service" in bodies["Wiring"]
    assert f"`{spec.env_prefix}`" in bodies["Settings"]
    assert CONFIG_TABLE in bodies["Settings"]


def test_the_example_has_the_layout_too() -> None:
    """The service to copy shows the layout to copy (it is not registered: its facts come from its settings)."""
    from services._example.settings import ExampleSettings

    bodies = _check_layout(_readme("_example"), "_example")
    fields = ExampleSettings.model_fields
    for setting in ("topic_in", "topic_out", "topic_dlq"):
        assert f"`{fields[setting].default}`" in bodies["Topics"], setting
    assert "`textpulse-example`" in bodies["Topics"]
    assert str(fields["http_port"].default) in bodies["HTTP"]
    assert KIT in bodies["Wiring"]
    assert "`TEXTPULSE_EXAMPLE_`" in bodies["Settings"]
