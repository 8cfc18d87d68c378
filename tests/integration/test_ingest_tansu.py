"""The same code on the embedded Tansu broker: the demo path."""

from __future__ import annotations

import orjson
import pytest
from textpulse.demo import run_demo
from textpulse.settings import KafkaSettings

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from tests.helpers import read_all, running
from tests.ingest_cases import JSON, ev, js

pytestmark = [pytest.mark.tansu]


@pytest.mark.timeout(120)
async def test_ingest_on_tansu(tansu_settings: KafkaSettings, tansu_topics: dict[str, str]) -> None:
    settings = IngestSettings(
        kafka=tansu_settings,
        topic_in=tansu_topics["text.in"],
        topic_out=tansu_topics["text.raw"],
        topic_dlq=tansu_topics["dlq.ingest"],
        group_id=f"g-{tansu_topics['text.in']}",
    )
    assert not settings.kafka.use_idempotence
    async with running(create_app(settings)) as client:
        resp = await client.post(
            "/v1/events/batch", content=js([ev(id=f"t-{i}") for i in range(10)]), headers={"content-type": JSON}
        )
        assert resp.json()["accepted"] == 10
        records = await read_all(tansu_settings, tansu_topics["text.raw"], expect=10)
    assert sorted(orjson.loads(r.value)["id"] for r in records) == sorted(f"t-{i}" for i in range(10))


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_demo_runs_on_tansu() -> None:
    assert await run_demo(events=60, rate=0, linger_s=0, live=False)
