"""The committed AsyncAPI documents are generated from the contracts and kept in sync."""

from __future__ import annotations

import json

from textpulse.cli import app
from typer.testing import CliRunner

from tests.conftest import REPO


def test_ingest_asyncapi_in_sync(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "ingest.json"
    result = CliRunner().invoke(app, ["asyncapi", "ingest", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fresh = json.loads(out.read_text())
    committed = json.loads((REPO / "docs/asyncapi/ingest.json").read_text())
    hint = "run: textpulse asyncapi ingest --out docs/asyncapi/ingest.json"
    assert fresh["channels"] == committed["channels"], hint
    assert fresh["operations"] == committed["operations"], hint
    for name in ("TextEvent", "Channel"):
        assert fresh["components"]["schemas"][name] == committed["components"]["schemas"][name], hint
    assert {"ingest.text_in", "ingest.text_raw", "ingest.dlq"} <= set(fresh["channels"])
    props = fresh["components"]["schemas"]["TextEvent"]["properties"]
    assert props["schema_version"]["description"]


def test_cli_help_and_topics() -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--help"]).exit_code == 0
    listed = runner.invoke(app, ["topics", "list"])
    names = [json.loads(line)["name"] for line in listed.output.splitlines()]
    assert "text.raw" in names
    assert "dlq.ingest" in names
