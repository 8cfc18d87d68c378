"""Integration tests for the local Elasticsearch deployment in deploy/elasticsearch/.

They drive the real scripts (start.sh, status.sh, stop.sh) against a second
node on free ports and a temporary run dir, so a node already running on 9200
is neither touched nor needed. The official async Python client talks to it
unchanged (it refuses any server that is not Elasticsearch). What is checked
is what the index/search services rely on: an index template with explicit
mappings, bulk indexing with the client's async helper (document id = event
id, so a replay never duplicates), per-document rejections, filtered search,
a date_histogram, nested queries and aggregations, dense_vector kNN, data
surviving a clean restart and a SIGKILL, and the documented gaps of a node
assembled from Maven Central (no ILM, no data-stream management API, no
painless) so nothing is built on them by mistake.

With CI=true a missing prerequisite (Java, Maven, the scripts, the client)
fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.ci import missing
from tests.es_node import EsNode as Node
from tests.es_node import check_prerequisites, new_node

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterator

    from elasticsearch import AsyncElasticsearch

pytestmark = [pytest.mark.es, pytest.mark.timeout(300)]

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 90
TEMPLATE = "tp-test-events"
INDEX = "tp-test-events-2026.11"

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "event_id": {"type": "keyword"},
        "channel": {"type": "keyword"},
        "text": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}},
        "entities": {
            "type": "nested",
            "properties": {
                "type": {"type": "keyword"},
                "key": {"type": "keyword"},
                "start": {"type": "integer"},
                "end": {"type": "integer"},
            },
        },
        "sentiment": {"properties": {"label": {"type": "keyword"}, "score": {"type": "float"}}},
        "event_time": {"type": "date"},
        "ingest_time": {"type": "date"},
        "embedding": {"type": "dense_vector", "dims": 4, "index": True, "similarity": "cosine"},
    },
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """Start a throwaway node for this module and always stop it afterwards."""
    check_prerequisites()
    try:
        import elasticsearch  # noqa: F401 - only to report a missing client clearly
    except ImportError:
        missing(
            "an Elasticsearch deployment prerequisite",
            "the elasticsearch Python client is not installed (pip install 'elasticsearch[async]==8.19.3')",
        )
    handle = new_node(tmp_path_factory.mktemp("es-run"), "tp-test", start_timeout_s=180)
    try:
        # A start failure fails the tests here (the deploy script is what they test).
        handle.start()
        yield handle
    finally:
        handle.script("stop.sh", timeout=STOP_TIMEOUT_S)


def _client(url: str) -> AsyncElasticsearch:
    """Build an async client with retries off: a test must see the server's first answer."""
    from elasticsearch import AsyncElasticsearch

    return AsyncElasticsearch(url, request_timeout=30, max_retries=0)


def _documents(count: int) -> list[dict[str, Any]]:
    """Deterministic enriched events; the tests recompute every expected count from these."""
    base = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    docs = []
    for i in range(count):
        entities = [{"type": "ORG", "key": "acme", "start": 0, "end": 4}]
        if i % 5 == 0:
            entities.append({"type": "PER", "key": f"person-{i % 3}", "start": 10, "end": 16})
        docs.append(
            {
                "event_id": f"ev-{i:05d}",
                "channel": ("email", "chat", "social")[i % 3],
                "text": f"ACME shares {'rise' if i % 2 else 'fall'} after report {i}",
                "entities": entities,
                "sentiment": {"label": "positive" if i % 2 else "negative", "score": round(0.5 + (i % 10) / 20, 2)},
                "event_time": (base + timedelta(hours=7 * i)).isoformat(),
                "ingest_time": (base + timedelta(hours=7 * i, seconds=3)).isoformat(),
                "embedding": [1.0, (i % 10) / 10, 0.5, (i % 7) / 7],
            }
        )
    return docs


def _actions(index: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"_index": index, "_id": doc["event_id"], "_source": doc} for doc in docs]


async def _put_template(es: AsyncElasticsearch) -> None:
    await es.indices.put_index_template(
        name=TEMPLATE,
        index_patterns=[f"{TEMPLATE}-*"],
        template={"settings": {"number_of_shards": 1, "number_of_replicas": 0}, "mappings": MAPPINGS},
    )


def test_start_is_idempotent_and_status_reports(node: Node) -> None:
    """A second start.sh leaves the running node alone; status.sh reports it healthy."""
    again = node.script("start.sh")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    status = node.script("status.sh")
    assert status.returncode == 0, status.stdout
    assert "running" in status.stdout
    assert "green" in status.stdout or "yellow" in status.stdout


def test_official_client_accepts_the_server(node: Node) -> None:
    """The client's product check passes and its major version matches the server's."""
    import elasticsearch

    async def scenario() -> tuple[bool, dict[str, Any], dict[str, Any]]:
        async with _client(node.url) as es:
            alive = await es.ping()
            info = (await es.info()).body
            http = (await es.nodes.info(node_id="_local", metric="http")).body
            return alive, info, http

    alive, info, http = asyncio.run(scenario())
    assert alive
    assert info["version"]["build_flavor"] == "default"
    assert info["tagline"] == "You Know, for Search"
    server_major = int(info["version"]["number"].split(".")[0])
    assert server_major == elasticsearch.__version__[0], (info["version"]["number"], elasticsearch.__version__)
    (node_http,) = http["nodes"].values()
    bound = node_http["http"]["bound_address"]
    assert bound, "HTTP bound to no address"
    assert all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr in bound), f"HTTP bound beyond loopback: {bound}"


def test_template_bulk_replay_and_queries(node: Node) -> None:
    """Explicit mappings, async_bulk with id = event id, replay, filters, date_histogram, nested, kNN."""
    from elasticsearch.helpers import async_bulk

    docs = _documents(300)

    async def scenario() -> dict[str, Any]:
        async with _client(node.url) as es:
            await _put_template(es)
            ok, errors = await async_bulk(es, _actions(INDEX, docs), chunk_size=100, refresh="wait_for")
            replay_ok, replay_errors = await async_bulk(es, _actions(INDEX, docs), chunk_size=100, refresh="wait_for")
            out: dict[str, Any] = {"first": (ok, errors), "replay": (replay_ok, replay_errors)}
            out["count"] = (await es.count(index=f"{TEMPLATE}-*")).body["count"]
            out["mapping"] = (await es.indices.get_mapping(index=INDEX)).body[INDEX]["mappings"]
            out["filtered"] = (
                await es.search(
                    index=f"{TEMPLATE}-*",
                    query={
                        "bool": {
                            "must": [{"match": {"text": "rise"}}],
                            "filter": [
                                {"term": {"channel": "chat"}},
                                {
                                    "range": {
                                        "event_time": {"gte": "2026-11-10T00:00:00Z", "lt": "2026-11-20T00:00:00Z"}
                                    }
                                },
                            ],
                        }
                    },
                    size=0,
                    track_total_hits=True,
                )
            ).body["hits"]["total"]["value"]
            out["histogram"] = (
                await es.search(
                    index=f"{TEMPLATE}-*",
                    size=0,
                    query={"term": {"sentiment.label": "positive"}},
                    aggs={
                        "per_day": {
                            "date_histogram": {"field": "event_time", "calendar_interval": "day", "min_doc_count": 1},
                            "aggs": {"avg_score": {"avg": {"field": "sentiment.score"}}},
                        }
                    },
                )
            ).body["aggregations"]["per_day"]["buckets"]
            out["nested_hits"] = (
                await es.count(
                    index=f"{TEMPLATE}-*",
                    query={
                        "nested": {
                            "path": "entities",
                            "query": {
                                "bool": {
                                    "filter": [
                                        {"term": {"entities.type": "PER"}},
                                        {"term": {"entities.key": "person-1"}},
                                    ]
                                }
                            },
                        }
                    },
                )
            ).body["count"]
            out["nested_agg"] = (
                await es.search(
                    index=f"{TEMPLATE}-*",
                    size=0,
                    aggs={
                        "ents": {"nested": {"path": "entities"}, "aggs": {"keys": {"terms": {"field": "entities.key"}}}}
                    },
                )
            ).body["aggregations"]["ents"]["keys"]["buckets"]
            out["knn"] = (
                await es.search(
                    index=f"{TEMPLATE}-*",
                    knn={"field": "embedding", "query_vector": docs[42]["embedding"], "k": 5, "num_candidates": 50},
                    source={"includes": ["event_id", "embedding"]},
                )
            ).body["hits"]["hits"]
            return out

    out = asyncio.run(scenario())

    assert out["first"] == (300, [])
    assert out["replay"] == (300, [])
    assert out["count"] == 300, "a replay with the same ids must not add documents"

    props = out["mapping"]["properties"]
    assert out["mapping"]["dynamic"] == "strict"
    assert props["text"]["type"] == "text"
    assert props["text"]["fields"]["raw"]["type"] == "keyword"
    assert props["entities"]["type"] == "nested"
    assert props["entities"]["properties"]["key"]["type"] == "keyword"
    assert props["sentiment"]["properties"]["score"]["type"] == "float"
    assert props["event_time"]["type"] == "date"
    assert props["embedding"]["type"] == "dense_vector"

    lo, hi = datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)
    expected_filtered = sum(
        1
        for d in docs
        if "rise" in d["text"] and d["channel"] == "chat" and lo <= datetime.fromisoformat(d["event_time"]) < hi
    )
    assert out["filtered"] == expected_filtered > 0

    by_day: dict[str, list[float]] = {}
    for d in docs:
        if d["sentiment"]["label"] == "positive":
            by_day.setdefault(d["event_time"][:10], []).append(d["sentiment"]["score"])
    got = {b["key_as_string"][:10]: (b["doc_count"], b["avg_score"]["value"]) for b in out["histogram"]}
    assert set(got) == set(by_day)
    for day, scores in by_day.items():
        assert got[day][0] == len(scores)
        assert got[day][1] == pytest.approx(sum(scores) / len(scores), abs=1e-3)

    expected_person1 = sum(1 for d in docs if any(e["key"] == "person-1" for e in d["entities"]))
    assert out["nested_hits"] == expected_person1 > 0
    nested_counts = {b["key"]: b["doc_count"] for b in out["nested_agg"]}
    assert nested_counts["acme"] == 300
    assert nested_counts["person-1"] == expected_person1

    assert out["knn"], "kNN returned nothing"
    assert out["knn"][0]["_source"]["embedding"] == pytest.approx(docs[42]["embedding"])


def test_rejected_document_is_reported_and_others_indexed(node: Node) -> None:
    """A mapping error is a per-item failure with a reason; the rest of the bulk lands."""
    from elasticsearch.helpers import async_bulk

    index = f"{TEMPLATE}-rejects"
    good = _documents(3)
    bad = {"event_id": "ev-bad", "not_in_mapping": 1}
    actions = [
        *_actions(index, good[:2]),
        {"_index": index, "_id": "ev-bad", "_source": bad},
        *_actions(index, good[2:]),
    ]

    async def scenario() -> tuple[int, list[Any], int]:
        async with _client(node.url) as es:
            await _put_template(es)
            ok, errors = await async_bulk(es, actions, raise_on_error=False, refresh="wait_for")
            assert isinstance(errors, list), errors
            count = (await es.count(index=index)).body["count"]
            return ok, errors, count

    ok, errors, count = asyncio.run(scenario())
    assert (ok, count) == (3, 3)
    assert len(errors) == 1
    item = errors[0]["index"]
    assert item["_id"] == "ev-bad"
    assert item["status"] == 400
    assert item["error"]["type"] == "strict_dynamic_mapping_exception"
    assert "not_in_mapping" in item["error"]["reason"]


def test_known_gaps_of_the_maven_assembly(node: Node) -> None:
    """Pin what this node lacks (modules not on Maven Central), as README.md says.

    If this fails because a feature now works, a module was added: update
    deploy/elasticsearch/README.md and the services that work around the gap.
    """
    from elasticsearch import ApiError

    async def status_of(call: Awaitable[object]) -> int:
        try:
            await call
        except ApiError as exc:
            return int(exc.meta.status)
        return 200

    async def scenario() -> dict[str, Any]:
        async with _client(node.url) as es:
            await es.indices.put_index_template(
                name="tp-test-ds",
                index_patterns=["tp-test-ds-*"],
                data_stream={},
                template={
                    "settings": {"number_of_replicas": 0},
                    "mappings": {"properties": {"@timestamp": {"type": "date"}}},
                },
            )
            created = (await es.index(index="tp-test-ds-a", document={"@timestamp": "2026-11-29T00:00:00Z"})).body
            return {
                "ds_auto_create_index": created["_index"],
                "ds_rollover": (await es.indices.rollover(alias="tp-test-ds-a")).body["rolled_over"],
                "ds_get": await status_of(es.indices.get_data_stream(name="tp-test-ds-a")),
                "ds_delete": await status_of(es.indices.delete_data_stream(name="tp-test-ds-a")),
                "ilm": await status_of(
                    es.ilm.put_lifecycle(
                        name="tp-test", policy={"phases": {"delete": {"min_age": "7d", "actions": {"delete": {}}}}}
                    )
                ),
                "painless": await status_of(
                    es.search(index="tp-test-ds-a", size=0, aggs={"s": {"sum": {"script": {"source": "1"}}}})
                ),
                "delete_by_query": await status_of(es.delete_by_query(index="tp-test-ds-a", query={"match_all": {}})),
            }

    out = asyncio.run(scenario())
    # Data streams are created and rolled over by the server itself ...
    assert out["ds_auto_create_index"].startswith(".ds-tp-test-ds-a-")
    assert out["ds_rollover"] is True
    # ... but their management API (data-streams module), ILM (x-pack), painless and reindex modules are absent.
    assert out["ds_get"] in (400, 405)
    assert out["ds_delete"] in (400, 405)
    assert out["ilm"] == 400
    assert out["painless"] == 400
    assert out["delete_by_query"] == 400


def test_data_survives_restart_and_kill(node: Node) -> None:
    """Acknowledged bulk writes survive a clean stop and a SIGKILL (translog replay on start)."""
    from elasticsearch.helpers import async_bulk

    index = f"{TEMPLATE}-durable"
    docs = _documents(50)

    async def write() -> None:
        async with _client(node.url) as es:
            await _put_template(es)
            # No refresh: acknowledged writes are durable through the translog alone.
            ok, _ = await async_bulk(es, _actions(index, docs))
            assert ok == len(docs)

    async def count() -> int:
        async with _client(node.url) as es:
            await es.indices.refresh(index=index)
            return int((await es.count(index=index)).body["count"])

    asyncio.run(write())
    node.stop()
    assert node.script("status.sh").returncode == 1
    restart_s = node.start()
    assert asyncio.run(count()) == len(docs)

    node.stop("--kill")
    kill_restart_s = node.start()
    assert asyncio.run(count()) == len(docs)
    logger.info("restart %.1fs, restart after SIGKILL %.1fs", restart_s, kill_restart_s)
