"""README's configuration table against the settings classes (issue #23, packaging).

Every ``TEXTPULSE_*`` name in the table must be read by some settings class (env prefix + field
name, case-insensitive; there is no ``env_nested_delimiter``: the Kafka and inference settings are
their own classes with their own prefixes). A default given in a comparable form must equal the
field's default. Skipped on purpose, so the check stays robust:

- defaults written as prose (no backticks and not a number, e.g. "8080 ingest, 8081 classify …");
- fields whose default is ``None`` although the table gives a value: that value is computed
  elsewhere (the session timeout by ``consumer_options``, the group id from the service name, the
  data directory); the two a deployer most depends on have their own tests below;
- fields that are not simple scalars (lists, dicts, nested settings).

No torch: only settings modules are imported (checked at the end).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings
from textpulse.contracts.services import REGISTRY, SERVICES
from textpulse.datasets.settings import DEFAULT_DATA_DIR, DatasetSettings
from textpulse.inference.settings import InferenceSettings
from textpulse.kafka.broker import consumer_options
from textpulse.ml.settings import MLSettings
from textpulse.observability.apikey import ApiSecuritySettings
from textpulse.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[2]
#: Services whose HTTP API reads ``TEXTPULSE_<SERVICE>_API_*`` (``ApiSecuritySettings.for_service``).
API_SERVICES = tuple(spec.name for spec in REGISTRY if spec.kind == "api")
NAME = re.compile(r"`(TEXTPULSE_[A-Z0-9_<>]+|_[A-Z0-9_]+)`")
NUMBER = re.compile(r"(\d[\d_]*(?:\.\d+)?(?:e\d+)?)\s*(KiB|MiB|GiB)?")
UNITS = {None: 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
NONE_MARKS = {"–", "-", "—"}


@dataclass(frozen=True)
class Source:
    cls: type[BaseSettings]
    field: str
    info: FieldInfo


def _service_settings() -> dict[str, type[BaseSettings]]:
    found: dict[str, type[BaseSettings]] = {}
    for service in SERVICES:
        module = importlib.import_module(f"services.{service}.settings")
        classes = [
            v
            for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, BaseSettings) and v.__module__ == module.__name__
        ]
        assert len(classes) == 1, (service, classes)
        found[service] = classes[0]
    return found


def _env_map() -> dict[str, list[Source]]:
    """Environment variable name → the settings fields it sets."""
    classes: list[tuple[str, type[BaseSettings]]] = [
        (str(cls.model_config.get("env_prefix", "")), cls)
        for cls in (KafkaSettings, InferenceSettings, DatasetSettings, MLSettings, ApiSecuritySettings)
    ]
    classes += [(str(cls.model_config["env_prefix"]), cls) for cls in _service_settings().values()]
    classes += [(f"TEXTPULSE_{s.upper()}_API_", ApiSecuritySettings) for s in API_SERVICES]
    env: dict[str, list[Source]] = {}
    for prefix, cls in classes:
        # A nested delimiter would add names this map does not know: fail so the test is extended.
        assert cls.model_config.get("env_nested_delimiter") is None, cls
        for name, info in cls.model_fields.items():
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseSettings):
                continue  # read through its own class and prefix, not as one JSON variable
            alias = info.validation_alias if isinstance(info.validation_alias, str) else None
            env.setdefault((alias or prefix + name).upper(), []).append(Source(cls, name, info))
    return env


ENV = _env_map()


def _table() -> list[tuple[str, str, str]]:
    """Rows (variable, default, meaning) of the table under ``## Configuration``."""
    text = (REPO / "README.md").read_text("utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| `") and len(cells) == 3:
            rows.append((cells[0], cells[1], cells[2]))
    assert len(rows) > 20, "configuration table not found"
    return rows


def _expand(cell: str) -> list[list[str]]:
    """Names of a variable cell, one list per ``<SERVICE>`` expansion, ``_SUFFIX`` names resolved."""
    raw = NAME.findall(cell)
    assert raw, cell
    assert raw[0].startswith("TEXTPULSE_"), cell
    variants = [s.upper() for s in SERVICES] if any("<SERVICE>" in r for r in raw) else [None]
    groups = []
    for service in variants:
        names: list[str] = []
        base = ""
        for r in raw:
            if r.startswith("TEXTPULSE_"):
                full = r.replace("<SERVICE>", service or "<SERVICE>")
                base = full
            else:
                full = _with_prefix_of(base, r)
            names.append(full)
        groups.append(names)
    return groups


def _with_prefix_of(base: str, suffix: str) -> str:
    """``_SUFFIX`` after the longest env prefix of ``base`` (``TEXTPULSE_INGEST_TOPIC_IN`` + ``_TOPIC_OUT``)."""
    prefixes = sorted(
        {
            _prefix(base, source)
            for source in ENV.get(base, [])
            if base.startswith(str(source.cls.model_config.get("env_prefix", "")).upper())
        }
        | {p for p in (f"TEXTPULSE_{s.upper()}_API_" for s in API_SERVICES) if base.startswith(p)},
        key=len,
        reverse=True,
    )
    return (prefixes[0] if prefixes else "TEXTPULSE_") + suffix.lstrip("_")


def _prefix(base: str, source: Source) -> str:
    return base[: len(base) - len(source.field)]


def _names_ok(names: list[str]) -> bool:
    return all(n in ENV for n in names)


def test_every_table_variable_is_a_setting() -> None:
    missing = []
    for cell, _, meaning in _table():
        groups = _expand(cell)
        # <SERVICE>: the variable must exist for at least one service (per-service fields, e.g. _DELIVERY).
        if not any(_names_ok(g) for g in groups):
            missing.append(cell)
        # Full names in the meaning column (e.g. `TEXTPULSE_INGEST_HTTP_HOST`) must exist too.
        missing += [n for n in re.findall(r"`(TEXTPULSE_[A-Z0-9_]+)`", meaning) if n not in ENV]
    assert missing == []


def test_deployer_variables_are_listed() -> None:
    listed = {n for cell, _, _ in _table() for g in _expand(cell) for n in g}
    for name in (
        "TEXTPULSE_MODEL_REPO",
        "TEXTPULSE_TRITON_URL",
        "TEXTPULSE_INDEX_ES_URL",
        "TEXTPULSE_ALERT_ALERTMANAGER_URL",
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS",
        "TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS",
    ):
        assert name in listed, name


def _scalar_types(annotation: Any) -> tuple[set[type], bool]:
    """(scalar types, optional) of a simple annotation; empty set when it is not simple."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        found: set[type] = set()
        optional = False
        for arg in get_args(annotation):
            if arg is type(None):
                optional = True
                continue
            inner, _ = _scalar_types(arg)
            if not inner:
                return set(), optional
            found |= inner
        return found, optional
    if origin is Literal:
        return {type(a) for a in get_args(annotation)}, False
    if annotation in (bool, int, float, str) or (isinstance(annotation, type) and issubclass(annotation, Path)):
        return {Path if isinstance(annotation, type) and issubclass(annotation, Path) else annotation}, False
    return set(), False


def _parse(text: str, kinds: set[type]) -> Any:
    """The value a default cell states, for a field of these types (ValueError: not comparable)."""
    if bool in kinds:
        if text in {"true", "false"}:
            return text == "true"
        raise ValueError(text)
    if kinds & {int, float}:
        match = NUMBER.fullmatch(text)
        if not match:
            raise ValueError(text)
        return float(match[1].replace("_", "")) * UNITS[match[2]]
    if Path in kinds:
        return REPO / text
    if str in kinds:
        return text
    raise ValueError(text)


def _cell_parts(default: str, count: int) -> list[str] | None:
    parts = [p.strip() for p in default.split(" / ")]
    if len(parts) == count:
        return parts
    return parts * count if len(parts) == 1 else None


def _comparable(part: str) -> str | None:
    """The literal of a default cell part, or None when it is prose."""
    if part.startswith("`") and part.endswith("`") and part.count("`") == 2:
        return part[1:-1]
    return part if NUMBER.fullmatch(part) else None


def test_table_defaults_match_the_fields() -> None:
    wrong: list[str] = []
    checked = 0
    for cell, default, _ in _table():
        for names in _expand(cell):
            parts = _cell_parts(default, len(names))
            if parts is None or not _names_ok(names):
                continue  # counts differ (a prose default) or a service without that field
            for name, part in zip(names, parts, strict=True):
                for source in ENV[name]:
                    field_default = source.info.get_default(call_default_factory=True)
                    if part in NONE_MARKS:
                        checked += 1
                        if field_default not in (None, [], (), {}):
                            wrong.append(f"{name}: table says unset, field default {field_default!r}")
                        continue
                    literal = _comparable(part)
                    kinds, _ = _scalar_types(source.info.annotation)
                    if literal is None or not kinds or field_default is None:
                        continue
                    try:
                        stated = _parse(literal, kinds)
                    except ValueError:
                        wrong.append(f"{name}: default {literal!r} is not a {sorted(k.__name__ for k in kinds)}")
                        continue
                    checked += 1
                    if stated != field_default:
                        wrong.append(f"{name}: table {stated!r}, field {field_default!r}")
    assert wrong == []
    assert checked > 60  # the comparison really ran (<SERVICE> rows count once per service)


@pytest.mark.parametrize(("flavor", "seconds"), [("apache", 8), ("tansu", 10)])
def test_session_timeout_row_states_the_effective_default(flavor: str, seconds: int) -> None:
    row = next(d for c, d, _ in _table() if "TEXTPULSE_KAFKA_SESSION_TIMEOUT_MS" in c)
    name = {"apache": "Apache Kafka", "tansu": "Tansu"}[flavor]
    assert f"{seconds} s on {name}" in row
    opts = consumer_options(KafkaSettings(flavor=flavor), group_id="g")  # type: ignore[arg-type]
    assert opts["session_timeout_ms"] == seconds * 1000


def test_data_dir_row_states_the_effective_default() -> None:
    row = next(d for c, d, _ in _table() if c == "`TEXTPULSE_DATA_DIR`")
    assert (REPO / row.strip("`")).resolve() == DEFAULT_DATA_DIR.resolve()


def test_no_torch_imported() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, __file__], capture_output=True, text=True, timeout=120, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]", out.stdout
