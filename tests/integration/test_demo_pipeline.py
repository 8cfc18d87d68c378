"""``make demo`` with the whole pipeline (ingest → classify → NER → route, alert) on the embedded Tansu."""

from __future__ import annotations

from pathlib import Path

import pytest
from textpulse.demo import run_demo

from tests.conftest import missing
from tests.support.inference import build_tiny_repo, tiny_repo_from_env

pytestmark = [pytest.mark.tansu, pytest.mark.slow]


@pytest.fixture(scope="module")
def tiny_repo() -> Path:
    try:
        return build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("tiny model repository (datasets + base model)", repr(exc))
        raise


@pytest.mark.timeout(900)
async def test_demo_pipeline_on_tansu(tiny_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every replayed event is enriched; every support message is routed; counts add up."""
    monkeypatch.setenv("TEXTPULSE_MODEL_REPO", str(tiny_repo))
    assert await run_demo(events=60, rate=0, linger_s=0, live=False, pipeline=True)
