"""The recommend service on FastStream's in-memory ``TestKafkaBroker`` (no broker process, bag-of-words encoder)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from textpulse.contracts.events import encode
from textpulse.contracts.recs import Interaction, Item
from textpulse.kafka import make_broker
from textpulse.kafka.broker import raw_decoder
from textpulse.kafka.dlq import H_REASON
from textpulse.observability.apikey import ApiSecuritySettings

from services.recommend.app import create_app
from services.recommend.settings import RecommendSettings
from tests.support.recommend_ranker import tiny_ranker
from tests.support.recsys import HashEmbedder

T0 = datetime(2024, 1, 1, tzinfo=UTC)
ITEMS = [
    Item(item_id="s1", title="Star Voyage", genres=["Sci-Fi"], tags=["space", "aliens", "starship"]),
    Item(item_id="s2", title="Galaxy Raiders", genres=["Sci-Fi"], tags=["space", "starship", "battle"]),
    Item(item_id="s3", title="Orbit", genres=["Sci-Fi"], tags=["space", "astronaut"]),
    Item(item_id="r1", title="Paris Hearts", genres=["Romance"], tags=["love", "wedding"]),
    Item(item_id="r2", title="Summer Kiss", genres=["Romance"], tags=["love", "beach"]),
    Item(item_id="r3", title="Wedding Bells", genres=["Romance", "Comedy"], tags=["love", "wedding", "family"]),
]


@dataclass
class Harness:
    broker: KafkaBroker
    app: Any
    settings: RecommendSettings
    recs: list[Any] = field(default_factory=list)
    profiles: list[Any] = field(default_factory=list)
    dlq: list[Any] = field(default_factory=list)

    async def items(self, *items: Item) -> None:
        for item in items:
            await self.broker.publish(encode(item), self.settings.topic_items, key=item.item_id.encode())

    async def act(self, user: str, item: str, action: str = "like", day: int = 0) -> None:
        i = Interaction(user_id=user, item_id=item, action=action, time=T0 + timedelta(days=day))  # type: ignore[arg-type]
        await self.broker.publish(encode(i), self.settings.topic_interactions, key=user.encode())


@asynccontextmanager
async def harness(api_security: ApiSecuritySettings | None = None, **overrides: Any) -> AsyncIterator[Harness]:
    """Not a fixture: the lifespan must be entered and left in the same task."""
    settings = RecommendSettings(cf_refresh_s=3600, **overrides)
    broker = make_broker(settings.kafka, service="recommend")
    app = create_app(
        settings,
        broker=broker,
        embedder=HashEmbedder(),
        restore_state=False,
        lag_probe=False,
        api_security=api_security or ApiSecuritySettings.model_validate({}),
    )
    h = Harness(broker, app, settings)

    @broker.subscriber(settings.topic_out, decoder=raw_decoder)
    async def recs(msg: KafkaMessage) -> None:
        h.recs.append(msg.raw_message)

    @broker.subscriber(settings.topic_profiles, decoder=raw_decoder)
    async def profiles(msg: KafkaMessage) -> None:
        h.profiles.append(msg.raw_message)

    @broker.subscriber(settings.topic_dlq, decoder=raw_decoder)
    async def dlq(msg: KafkaMessage) -> None:
        h.dlq.append(msg.raw_message)

    async with TestKafkaBroker(broker), app.router.lifespan_context(app):
        yield h


async def test_interactions_in_recommendations_out() -> None:
    async with harness() as h:
        await h.items(*ITEMS)
        await h.act("alice", "s1", day=1)
        await h.act("alice", "s2", day=2)
        await h.act("alice", "r1", "view", day=3)
        assert len(h.profiles) == 3
        last = orjson.loads(h.recs[-1].value)
        assert h.recs[-1].key == b"alice"
        ids = [i["item_id"] for i in last["items"]]
        assert ids[0] == "s3"  # the one unseen space film, from its text alone (no interactions)
        assert not {"s1", "s2", "r1"} & set(ids)
        assert last["popular_fallback"] is False
        assert last["model"] == {"name": "hash-bow", "version": "1"}
        assert last["items"][0]["reason"].startswith("similar to ")
        profile = orjson.loads(h.profiles[-1].value)
        assert [p["item_id"] for p in profile["positives"]] == ["s1", "s2"]
        assert profile["seen"] == ["s1", "s2", "r1"]


async def test_bad_records_are_dead_lettered_with_reason() -> None:
    async with harness() as h:
        await h.items(*ITEMS[:2])
        await h.broker.publish(b"{not json", h.settings.topic_items, key=b"x")
        await h.broker.publish(b'{"user_id": "u"}', h.settings.topic_interactions, key=b"u")
        await h.broker.publish(orjson.dumps({"item_id": "z", "title": ""}), h.settings.topic_items, key=b"z")
        assert len(h.dlq) == 3
        reasons = [dict(r.headers)[H_REASON].decode() for r in h.dlq]
        assert reasons[0].startswith("invalid item")
        assert reasons[1].startswith("invalid interaction")
        assert h.dlq[0].value == b"{not json"


async def test_http_api_unknown_user_popular_cache_and_metrics() -> None:
    async with (
        harness() as h,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://recommend") as client,
    ):
        assert (await client.get("/v1/users/nobody/recommendations")).status_code == 503  # empty catalogue
        await h.items(*ITEMS)
        for user, item in (("a", "r1"), ("b", "r1"), ("b", "r2"), ("c", "r1"), ("c", "r2"), ("a", "s1")):
            await h.act(user, item)
        await h.app.state.recommend.refresh_cf(force=True)
        resp = await client.get("/v1/users/nobody/recommendations", params={"k": 2})
        assert resp.status_code == 200
        body = resp.json()
        assert body["popular_fallback"] is True
        assert [i["item_id"] for i in body["items"]] == ["r1", "r2"]
        resp = await client.get("/v1/users/a/recommendations", params={"k": 3})
        first = resp.json()
        assert first["popular_fallback"] is False
        assert not {"r1", "s1"} & {i["item_id"] for i in first["items"]}
        again = (await client.get("/v1/users/a/recommendations", params={"k": 3})).json()
        assert again == first  # served from the cache
        assert (await client.get("/v1/users/a/recommendations", params={"k": 0})).status_code == 422
        assert (await client.get("/v1/users/a/recommendations", params={"k": 101})).status_code == 422
        assert (await client.get("/v1/users/a%20b/recommendations")).status_code == 422
        assert (await client.get("/health")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'textpulse_recommend_cache_requests_total{result="hit",service="recommend"} 1.0' in metrics
        assert "textpulse_recommend_candidates_scored_total" in metrics
        assert "textpulse_recommend_request_seconds_bucket" in metrics


async def test_deleted_item_and_encoder_outage() -> None:
    async with harness() as h:
        await h.items(*ITEMS)
        await h.broker.publish(None, h.settings.topic_items, key=b"s3")
        await h.act("alice", "s1")
        ids = [i["item_id"] for i in orjson.loads(h.recs[-1].value)["items"]]
        assert "s3" not in ids
        assert len(h.app.state.recommend.catalogue) == 5


def test_recommend_asyncapi_in_sync(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from textpulse.cli import app as cli
    from typer.testing import CliRunner

    from tests.conftest import REPO

    out = tmp_path / "recommend.json"
    result = CliRunner().invoke(cli, ["asyncapi", "recommend", "--out", str(out)])
    assert result.exit_code == 0, result.output
    fresh = orjson.loads(out.read_bytes())
    committed = orjson.loads((REPO / "docs/asyncapi/recommend.json").read_bytes())
    hint = "run: textpulse asyncapi recommend --out docs/asyncapi/recommend.json"
    assert fresh["channels"] == committed["channels"], hint
    assert fresh["components"]["schemas"]["Recommendations"] == committed["components"]["schemas"]["Recommendations"]
    assert {"recommend.recs_scores", "recommend.profiles", "recommend.dlq"} <= set(fresh["channels"])


def test_exactly_once_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="at_least_once"):
        create_app(RecommendSettings(delivery="exactly_once"), embedder=HashEmbedder())


async def test_recommendations_api_requires_the_key_when_configured() -> None:
    key = "recommend-secret-key-7"
    async with harness(ApiSecuritySettings.model_validate({"keys": key})) as h:
        await h.items(*ITEMS)
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            path = "/v1/users/u1/recommendations?k=3"
            assert (await client.get(path)).status_code == 401
            assert (await client.get(path, headers={"X-API-Key": "wrong"})).status_code == 401
            assert (await client.get(path, headers={"Authorization": f"Bearer {key}"})).status_code == 200
            assert (await client.get("/health")).status_code == 200


def _lists(metrics: str, scorer: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("textpulse_recommend_lists_total{") and f'scorer="{scorer}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_ranker_serves_known_users_and_falls_back_for_the_others(tmp_path: Path) -> None:
    ranker_dir = tiny_ranker(tmp_path / "ranker", HashEmbedder().dim)
    async with (
        harness(ranker_dir=ranker_dir) as h,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=h.app), base_url="http://recommend") as client,
    ):
        state = h.app.state.recommend
        assert state.ranker is not None
        await h.items(*ITEMS)
        for user, item, day in (("alice", "s1", 1), ("alice", "s2", 2), ("bob", "r1", 1), ("carol", "s1", 3)):
            await h.act(user, item, day=day)
        await state.refresh_cf(force=True)  # the ranker's item-side state (the harness skips the start-up replay)
        body = (await client.get("/v1/users/alice/recommendations", params={"k": 4})).json()
        assert body["popular_fallback"] is False
        ids = [i["item_id"] for i in body["items"]]
        assert not {"s1", "s2"} & set(ids)
        # The served list is the shared feature function + the model, on the service's state.
        profile = state.profiles["alice"]
        got = state.ranker_state.user_features([(p.item_id, p.time) for p in profile.positives], profile.seen)
        assert ids == [state.ranker_state.item_ids[row] for row, _ in state.ranker.top(*got, 4)]
        stranger = (await client.get("/v1/users/stranger/recommendations", params={"k": 2})).json()
        assert stranger["popular_fallback"] is True
        # A user whose only positive arrived after the ranker's state was built: the hybrid scorer.
        await h.items(Item(item_id="n1", title="New Orbit", genres=["Sci-Fi"], tags=["space"]))
        await h.act("dave", "n1", day=4)
        dave = (await client.get("/v1/users/dave/recommendations", params={"k": 2})).json()
        assert dave["popular_fallback"] is False
        assert state.rank(state.profiles["dave"], 2)[1] == "hybrid"
        assert state.rank(state.profiles["alice"], 2)[1] == "ranker"
        metrics = (await client.get("/metrics")).text
        assert _lists(metrics, "ranker") >= 1
        assert _lists(metrics, "popular") == 1
        await state.refresh_cf(force=True)
        assert state.rank(state.profiles["dave"], 2)[1] == "ranker"  # once the state has n1


async def test_without_a_ranker_the_hybrid_serves() -> None:
    async with harness() as h:
        assert h.app.state.recommend.ranker is None  # the test encoder has no export, so no ranker
        await h.items(*ITEMS)
        await h.act("alice", "s1")
        metrics = h.app.state.recommend.metrics
        assert metrics.lists.labels("recommend", "hybrid")._value.get() == 1


async def test_a_ranker_that_does_not_fit_the_encoder_fails_start_up(tmp_path: Path) -> None:
    from textpulse.recsys.ranker import RankerMismatch

    ranker_dir = tiny_ranker(tmp_path / "ranker", HashEmbedder().dim + 1)
    with pytest.raises(RankerMismatch, match="item vectors"):
        async with harness(ranker_dir=ranker_dir):
            pass
    with pytest.raises(FileNotFoundError, match="RANKER_DIR"):
        async with harness(ranker_dir=tmp_path / "missing"):
            pass


async def test_a_restart_embeds_only_new_or_changed_items(tmp_path: Path) -> None:
    """With ``vector_cache_dir`` the vectors survive a restart: the replayed catalogue is not embedded again."""
    async with harness(vector_cache_dir=tmp_path) as h:
        await h.items(*ITEMS)
        assert len(h.app.state.recommend.catalogue) == len(ITEMS)
    async with harness(vector_cache_dir=tmp_path) as h:
        embedder = h.app.state.recommend.embedder
        await h.items(*ITEMS)
        assert embedder.calls == 0
        changed = ITEMS[0].model_copy(update={"title": "Star Voyage II"})
        await h.items(changed)
        assert embedder.calls == 1
        assert len(h.app.state.recommend.catalogue) == len(ITEMS)


async def test_new_item_slots_setting_overrides_the_rankers_own(tmp_path: Path) -> None:
    ranker_dir = tiny_ranker(tmp_path / "ranker", HashEmbedder().dim)
    async with harness(ranker_dir=ranker_dir) as h:
        shipped = h.app.state.recommend.ranker
        assert shipped is not None
    async with harness(ranker_dir=ranker_dir, new_item_slots=2) as h:
        ranker = h.app.state.recommend.ranker
        assert ranker is not None
        assert ranker.config.new_item_slots == 2
        assert ranker.config.n_estimators == shipped.config.n_estimators  # only the slots change
        await h.items(*ITEMS, Item(item_id="n1", title="New Orbit", genres=["Sci-Fi"], tags=["space"]))
        for user, item, day in (("alice", "s1", 1), ("alice", "s2", 2), ("bob", "s1", 1), ("bob", "s3", 2)):
            await h.act(user, item, day=day)
        await h.items(Item(item_id="n2", title="Orbit Two", genres=["Sci-Fi"], tags=["space"]))
        await h.app.state.recommend.refresh_cf(force=True)
        items, scorer, _ = h.app.state.recommend.rank(h.app.state.recommend.profiles["alice"], 3)
        assert scorer == "ranker"
        # n2 has no positive from anyone: it reaches the list through one of the two reserved slots.
        assert "n2" in [i.item_id for i in items]
