"""``make bench-recommend``: recommendation quality on the MovieLens temporal dev split, and serving latency.

Quality, in one run on the same users and candidates (every item the user did not
rate in the train part; relevant = held-out positives, rating ≥ 4):
(a) most popular, (b) item-kNN collaborative filtering, (c) EASE (closed-form
item-item, λ chosen on the inner split), (d) text-only with the pretrained
encoder, (e) text-only with the fine-tuned encoder (the latest ``recommend``
export, or ``--model-dir``), (f) the service's hybrid — its own
``Recommender`` + ``Profile`` code, weights chosen on the inner split, (g) a
LightGBM LambdaRank ranker (``textpulse.recsys.ranker``) trained on the inner
split and the inner split of its train part (the recipe of ``make recommend-model``:
``ranker.train_on_inner``) without its new-item slot, (h) the same ranker as shipped, with one
of the ten slots reserved for the best text match among items without any positive,
(i) the ranker the service serves (``ranker/`` of the fine-tuned export, loaded from its files), when
there is one. The inner split is a temporal
split of the train part (per user its latest 20 %), with its own time-honest
item text; nothing is chosen on the split that is scored.

Cold start, from the same rankings: Recall@10 on the held-out positives whose
item has no train rating at all, and on the users with ≤ 5 train positives.

The issue's targets are stated on the withheld test split, which is not in this
repository; ``--test-ratings FILE`` scores on such a file instead (train = all
shared ratings). Without it the figures are dev-split figures and say so.

Item text keeps only the tags each author wrote by their latest train rating
(``tags.csv`` covers every period; later tags would describe held-out
interactions): :func:`textpulse.recsys.evaluate.split_of`.

Serving: the recommend app on a real uvicorn server (loopback TCP), its real
Kafka consumer and the real fine-tuned encoder (latest ``recommend`` export):
10k items (MovieLens titles, genres and tags, repeated with new ids past the
~9.7k films) and 1,000 users × 60 interactions go in through the topics, the
service embeds every item; then p50/p99 of one recommendation over HTTP
(cache off, one request at a time) and, on the same state and clock, of the
scorer alone (``State.rank``: the ranker when the export ships one, else the
hybrid; the reference: HTTP / scorer p99 is the server's overhead);
a GET /health on the same server gives its floor; several rounds, medians,
with the machine's load average (the latency of a busy shared box is mostly
waiting for a core).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.table import Table
from textpulse.contracts.recs import Interaction, Item
from textpulse.recsys.data import MovieLens, load_movielens, load_ratings, tag_cutoffs
from textpulse.recsys.embed import TorchEncoder
from textpulse.recsys.evaluate import (
    Rankers,
    Split,
    cached_vectors,
    catalogue_of,
    cold_start_relevant,
    evaluate,
    evaluate_subsets,
    make_split,
    profiles_of,
    split_of,
    weights_key,
)
from textpulse.recsys.ranker import RANKER_DIR, FeatureState, RankerConfig, inner_split, load_ranker, train_on_inner
from textpulse.recsys.recommender import Recommender, RecommenderConfig
from textpulse.recsys.scoring import HybridWeights

from bench.common import REPO, console, peak_rss_mb, real_kafka, serve_uvicorn

CACHE = REPO / ".cache" / "recsys"
MODEL_REPO = REPO / ".cache" / "model-repo" / "recommend"
K = 10


def latest_model() -> Path | None:
    versions = sorted((int(p.name), p) for p in MODEL_REPO.glob("*") if p.is_dir() and p.name.isdigit())
    return versions[-1][1] if versions else None


def encode_items(directory: Path | str, texts: list[str], max_length: int) -> np.ndarray:
    encoder: TorchEncoder | None = None

    def run(batch: list[str]) -> np.ndarray:
        nonlocal encoder
        encoder = encoder or TorchEncoder(directory, max_length=max_length, threads=2)
        return encoder.encode(batch)

    return cached_vectors(run, texts, weights_key(directory, max_length), CACHE)


class HybridEval:
    """The service's scorer over one split, built once; only the config changes between grid points."""

    def __init__(self, split: Split, vectors: np.ndarray) -> None:
        self.split = split
        self.rec = Recommender(catalogue_of(split, vectors), RecommenderConfig())
        self.profiles = profiles_of(split.train)
        self.rec.fit_cf(p.positive_items() for p in self.profiles.values())
        for p in self.profiles.values():
            for item in p.positive_items():
                self.rec.count_positive(item)
        self.rec.fit_cf(p.positive_items() for p in self.profiles.values())

    def ranker(self, config: RecommenderConfig) -> Any:
        self.rec.config = config

        def rank(user: str) -> list[str]:
            return [s.item_id for s in self.rec.recommend(self.profiles.get(user), K)[0]]

        return rank

    def score(self, config: RecommenderConfig) -> dict[str, float]:
        return evaluate(self.split, self.ranker(config), K)


def tune(inner: Split, vectors: np.ndarray) -> tuple[RecommenderConfig, list[dict[str, Any]]]:
    """Grid over the hybrid weights and half-life on the inner temporal split (``vectors``: its item text)."""
    ev = HybridEval(inner, vectors)
    grid = []
    # text > 0 throughout: a text weight of 0 would make new items (no interactions) unrecommendable.
    for text in (0.25, 0.5, 1.0, 2.0):
        for pop in (0.0, 0.15):
            for half_life in (30.0, 3650.0):
                for items in (50, 200):
                    config = RecommenderConfig(
                        HybridWeights(text=text, cf=1.0, pop=pop), half_life_days=half_life, profile_items=items
                    )
                    grid.append(
                        {
                            "text": text,
                            "cf": 1.0,
                            "pop": pop,
                            "half_life_days": half_life,
                            "profile_items": items,
                            **ev.score(config),
                        }
                    )
    best = max(grid, key=lambda g: g[f"ndcg@{K}"])
    weights = HybridWeights(text=best["text"], cf=1.0, pop=best["pop"])
    return RecommenderConfig(weights, half_life_days=best["half_life_days"], profile_items=best["profile_items"]), grid


EASE_LAMBDAS = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0)


def tune_ease(inner: Split) -> tuple[float, list[dict[str, float]]]:
    """EASE's λ with the best nDCG@10 on the inner temporal split."""
    rankers = Rankers(inner, K)
    grid = [{"lambda": lam, **evaluate(inner, rankers.ease(rankers.fit_ease(lam)), K)} for lam in EASE_LAMBDAS]
    return max(grid, key=lambda g: g[f"ndcg@{K}"])["lambda"], grid


def quality(args: argparse.Namespace) -> dict[str, Any]:
    ml = load_movielens()
    if args.test_ratings:
        split = split_of(ml, ml.ratings, load_ratings(Path(args.test_ratings)))
        split_name = f"test file {args.test_ratings}"
    else:
        split = make_split(ml, 0.2)
        split_name = "temporal dev split (per user latest 20% of the shared ratings)"
    # Every choice (EASE λ, hybrid weights, the ranker's training) is made on this inner split of the
    # train part, whose item text keeps only the tags written in *its* train part (split_of): with the
    # outer text, tags of the inner held-out period would leak into the choices.
    inner = inner_split(ml, split)
    subsets = cold_start_relevant(split)
    rankers = Rankers(split, K)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    started = time.perf_counter()
    rows["(a) most popular"] = evaluate_subsets(split, rankers.popular, subsets, K)
    rows["(b) item-kNN CF"] = evaluate_subsets(split, rankers.item_knn, subsets, K)
    lam, ease_grid = tune_ease(inner)
    rows[f"(c) EASE (λ {lam:g})"] = evaluate_subsets(split, rankers.ease(rankers.fit_ease(lam)), subsets, K)
    pretrained = encode_items(args.base_model, split.texts, args.max_length)
    rows["(d) text-only, pretrained MiniLM"] = evaluate_subsets(split, rankers.text(pretrained), subsets, K)
    model_dir = Path(args.model_dir) if args.model_dir else latest_model()
    finetuned = None
    if model_dir is not None:
        finetuned = encode_items(model_dir, split.texts, args.max_length)
        rows[f"(e) text-only, fine-tuned ({model_dir.name})"] = evaluate_subsets(
            split, rankers.text(finetuned), subsets, K
        )
    encoder = model_dir if model_dir is not None else args.base_model
    vectors = finetuned if finetuned is not None else pretrained
    inner_vectors = encode_items(encoder, inner.texts, args.max_length)
    config, grid = tune(inner, inner_vectors)
    rows["(f) hybrid (text + item-kNN + popularity)"] = evaluate_subsets(
        split, HybridEval(split, vectors).ranker(config), subsets, K
    )
    rconfig = RankerConfig(ease_lambda=lam, new_item_slots=1)  # as make recommend-model ships it
    # The recipe of make recommend-model (its earlier training cuts embedded by the same encoder).
    trained = train_on_inner(
        ml, inner, inner_vectors, rconfig, encode=lambda texts: encode_items(encoder, texts, args.max_length)
    )
    state = FeatureState(ml.items_as_of(tag_cutoffs(split.train)), split.item_ids, vectors, split.train, rconfig)
    unslotted = dataclasses.replace(trained, config=dataclasses.replace(rconfig, new_item_slots=0))
    rows["(g) LambdaRank ranker (LightGBM), no new-item slot"] = evaluate_subsets(
        split, lambda user: unslotted.rank(state, user, K), subsets, K
    )
    rows["(h) ranker + 1 slot for the best new item by text (the recipe shipped)"] = evaluate_subsets(
        split, lambda user: trained.rank(state, user, K), subsets, K
    )
    if model_dir is not None and (model_dir / RANKER_DIR).is_dir():
        # The file the service loads (trained by make recommend-model with its default EASE λ).
        shipped = load_ranker(model_dir / RANKER_DIR, embedding_dim=int(vectors.shape[1]))
        shipped_state = FeatureState(
            ml.items_as_of(tag_cutoffs(split.train)), split.item_ids, vectors, split.train, shipped.config
        )
        rows[f"(i) shipped ranker ({model_dir.name}/{RANKER_DIR}, served)"] = evaluate_subsets(
            split, lambda user: shipped.rank(shipped_state, user, K), subsets, K
        )
    return {
        "split": split_name,
        "users": int(rows["(a) most popular"]["all"]["users"]),
        "subsets": {name: len(rel) for name, rel in subsets.items()},
        "rows": rows,
        "ease_lambda": lam,
        "ease_grid": ease_grid,
        "hybrid_config": {
            "weights": vars(config.weights),
            "half_life_days": config.half_life_days,
            "profile_items": config.profile_items,
            "tuned_on": "inner temporal split of the train part",
        },
        "hybrid_grid_top5": sorted(grid, key=lambda g: -g[f"ndcg@{K}"])[:5],
        "ranker": {
            "config": {k: v for k, v in vars(rconfig).items() if k != "extra"},
            "trained_on": "inner temporal split of the train part",
            "training": trained.info,
            "importances_gain": trained.importances(),
        },
        "fine_tuned_model": str(model_dir) if model_dir else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


def catalogue_items(ml: MovieLens, n_items: int) -> list[Item]:
    """``n_items`` MovieLens items as published (every tag), repeated with new ids past the ~9.7k movies."""
    base = [ml.items[i] for i in sorted(ml.items, key=int)]
    out = []
    for n in range(n_items):
        item = base[n % len(base)]
        copy = n // len(base)
        out.append(item if copy == 0 else item.model_copy(update={"item_id": f"{item.item_id}-{copy}"}))
    return out


def serving_interactions(items: list[Item], users: int, per_user: int, seed: int = 7) -> list[Interaction]:
    """``per_user`` interactions per user over Zipf-popular items, one an hour; every fifth a view."""
    rng = np.random.default_rng(seed)
    picks = rng.zipf(1.3, size=users * per_user) % len(items)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        Interaction(
            event_id=f"bench-{u}-{j}",
            user_id=f"u{u}",
            item_id=items[int(picks[u * per_user + j])].item_id,
            action="like" if j % 5 else "view",
            time=t0 + timedelta(hours=j),
        )
        for u in range(users)
        for j in range(per_user)
    ]


def _processed(metrics_text: str, topic: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("textpulse_messages_processed_total{") and f'topic="{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer
    from textpulse.kafka.admin import client_options
    from textpulse.settings import KafkaSettings

    producer = AIOKafkaProducer(**client_options(KafkaSettings(bootstrap_servers=bootstrap)), acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from textpulse.kafka.admin import client_options
    from textpulse.settings import KafkaSettings

    admin = AIOKafkaAdminClient(**client_options(KafkaSettings(bootstrap_servers=bootstrap)))
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def serving(n_items: int, rounds: int, requests: int, users: int = 1000, per_user: int = 60) -> dict[str, Any]:
    """HTTP latency of the real recommend app on a real uvicorn server, fed through real Kafka.

    The app (``services.recommend.app.create_app``, in-process encoder = the latest
    ``recommend`` export) runs on uvicorn in a thread of this process (``bench.common.serve_uvicorn``)
    with the real broker; the catalogue and interactions go in through its topics, the encoder
    embeds every item. Requests go over loopback TCP with httpx, one at a time. The reference on
    the same clock: the scorer alone (``Recommender.recommend``) on the same state, between requests.
    """
    from textpulse.contracts.topics import ITEMS, RECS_PROFILES, RECS_SCORES, USER_INTERACTIONS, TopicSpec, dlq
    from textpulse.inference.settings import InferenceSettings
    from textpulse.kafka.admin import create_topics
    from textpulse.settings import KafkaSettings

    from services.recommend.app import create_app
    from services.recommend.settings import RecommendSettings

    if latest_model() is None:
        msg = f"no exported 'recommend' model in {MODEL_REPO.relative_to(REPO)}: run `make recommend-model` first"
        raise SystemExit(msg)
    items = catalogue_items(load_movielens(), n_items)
    interactions = serving_interactions(items, users, per_user)
    specs: list[TopicSpec] = [ITEMS, USER_INTERACTIONS, RECS_SCORES, RECS_PROFILES, dlq("recommend")]
    tag = f"bench-recommend-{uuid.uuid4().hex[:6]}"
    names = {spec.name: f"{tag}.{spec.name}" for spec in specs}
    with real_kafka() as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        asyncio.run(create_topics(kafka, specs, rename=names))
        settings = RecommendSettings(
            kafka=kafka,
            inference=InferenceSettings(model_repo=MODEL_REPO.parent),
            allow_base_model=False,  # the fine-tuned export or nothing
            topic_items=names[ITEMS.name],
            topic_interactions=names[USER_INTERACTIONS.name],
            topic_out=names[RECS_SCORES.name],
            topic_profiles=names[RECS_PROFILES.name],
            topic_dlq=names[dlq("recommend").name],
            group_id=f"{tag}-recommend",
            cache_size=0,  # every request scores the catalogue
            cf_refresh_s=2.0,  # item-kNN rebuilt soon after the load, then unchanged while measuring
            publish_on_change=False,  # loading 60k interactions would otherwise score ~60k lists first
        )
        rss_before_mb = psutil.Process().memory_info().rss / 2**20
        app = create_app(settings, lag_probe=False)
        try:
            with serve_uvicorn(app, startup_timeout_s=300) as url:
                load_s = _load_through_kafka(url, bootstrap, settings, items, interactions)
                time.sleep(3 * settings.cf_refresh_s)  # item-kNN rebuilt after the last interaction
                load_before = os.getloadavg()[0]
                results = _measure(url, app.state.recommend, rounds, requests)
                load_after = os.getloadavg()[0]
                # The app runs in this process, so these include the benchmark's own client and data
                # (measured before the app): an upper bound for the service with this catalogue.
                rss_mb = psutil.Process().memory_info().rss / 2**20
                lists = {
                    scorer: app.state.recommend.metrics.lists.labels("recommend", scorer)._value.get()
                    for scorer in ("ranker", "hybrid", "popular")
                }
                model = app.state.recommend.embedder.model
        finally:
            asyncio.run(_delete_topics(bootstrap, list(names.values())))
    medians = {k: round(statistics.median(v), 2) for k, v in results.items()}
    return {
        "items": n_items,
        "users": users,
        "interactions": len(interactions),
        "encoder": f"{model.name} version {model.version}",
        "load_seconds": round(load_s, 1),
        "rounds": rounds,
        "requests_per_round": requests,
        **medians,
        "http_over_scorer_p99": round(medians["http_p99_ms"] / medians["scorer_p99_ms"], 2),
        "scorer": "LambdaRank ranker" if app.state.recommend.ranker is not None else "hybrid (no ranker shipped)",
        "lists_by_scorer": lists,
        "load_average_1m": [round(load_before, 1), round(load_after, 1)],
        "rss_mib": {
            "before_app": round(rss_before_mb),
            "after_measuring": round(rss_mb),
            "peak": round(peak_rss_mb(os.getpid())),  # of the whole run: the quality part's too unless skipped
            "torch_imported": "torch" in sys.modules,
        },
        "per_round": {k: [round(x, 2) for x in v] for k, v in results.items()},
    }


def _load_through_kafka(
    url: str, bootstrap: str, settings: Any, items: list[Item], interactions: list[Interaction]
) -> float:
    """Produce the catalogue, then the interactions; wait until the service processed all; seconds taken."""
    import httpx
    from textpulse.contracts.events import encode

    started = time.perf_counter()
    asyncio.run(_produce(bootstrap, settings.topic_items, [(i.item_id, encode(i)) for i in items]))
    asyncio.run(_produce(bootstrap, settings.topic_interactions, [(r.user_id, encode(r)) for r in interactions]))
    deadline = time.monotonic() + 900
    with httpx.Client(base_url=url, timeout=30) as client:
        while True:
            text = client.get("/metrics").text
            done_items = _processed(text, settings.topic_items)
            done = _processed(text, settings.topic_interactions)
            if done_items >= len(items) and done >= len(interactions):
                return time.perf_counter() - started
            if time.monotonic() > deadline:
                msg = f"recommend processed {done_items}/{len(items)} items, {done}/{len(interactions)} interactions"
                raise TimeoutError(msg)
            time.sleep(1)


def _measure(url: str, state: Any, rounds: int, requests: int) -> dict[str, list[float]]:
    """Per round, p50/p99 of sequential HTTP requests and of the scorer alone on the same state."""
    import httpx

    rng = np.random.default_rng(11)
    results: dict[str, list[float]] = {
        f"{name}_{q}_ms": [] for name in ("http", "scorer", "health") for q in ("p50", "p99")
    }
    user_ids = sorted(state.profiles)
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(20):
            client.get(f"/v1/users/{user_ids[0]}/recommendations")
        for _ in range(rounds):
            http, scorer, health = [], [], []
            for r in range(requests):
                user = user_ids[int(rng.integers(len(user_ids)))]
                started = time.perf_counter()
                resp = client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                http.append((time.perf_counter() - started) * 1000)
                if resp.status_code != 200 or resp.json()["popular_fallback"]:
                    msg = f"{user}: {resp.status_code} {resp.text[:200]}"
                    raise RuntimeError(msg)
                if r % 2 == 0:
                    started = time.perf_counter()
                    state.rank(state.profiles[user], 10)  # the service's scorer: the ranker when shipped
                    scorer.append((time.perf_counter() - started) * 1000)
                else:  # the server's floor: a request that does no work, same socket and middleware
                    started = time.perf_counter()
                    client.get("/health")
                    health.append((time.perf_counter() - started) * 1000)
            for name, values in (("http", http), ("scorer", scorer), ("health", health)):
                q = np.percentile(values, [50, 99])
                results[f"{name}_p50_ms"].append(float(q[0]))
                results[f"{name}_p99_ms"].append(float(q[1]))
    return results


def report(q: dict[str, Any] | None, s: dict[str, Any] | None) -> None:
    if q:
        rows = q["rows"]
        pop = rows["(a) most popular"]["all"][f"ndcg@{K}"]
        cf_names = [n for n in rows if n.startswith(("(b)", "(c)"))]
        best_cf = max(rows[n]["all"][f"ndcg@{K}"] for n in cf_names)
        table = Table(title=f"Recall@{K} / nDCG@{K} — {q['split']}, {q['users']} users")
        for col in ("method", f"Recall@{K}", f"nDCG@{K}", "nDCG vs popular", "vs best of kNN/EASE"):
            table.add_column(col)
        for name, m in rows.items():
            a = m["all"]
            table.add_row(
                name,
                f"{a[f'recall@{K}']:.4f}",
                f"{a[f'ndcg@{K}']:.4f}",
                f"{a[f'ndcg@{K}'] / pop:.2f}×" if pop else "—",
                f"{a[f'ndcg@{K}'] / best_cf:.2f}×" if best_cf else "—",
            )
        console.print(table)
        subsets = list(q["subsets"])
        cold = Table(title=f"Cold start: Recall@{K} of the full top {K} on each subset (vs most popular)")
        cold.add_column("method")
        for sub in subsets:
            cold.add_column(f"{sub} ({q['subsets'][sub]} users)")
        for name, m in rows.items():
            cells = []
            for sub in subsets:
                r = m[sub][f"recall@{K}"]
                base = rows["(a) most popular"][sub][f"recall@{K}"]
                cells.append(f"{r:.4f} ({r / base:.1f}×)" if base else f"{r:.4f} (popular 0)")
            cold.add_row(name, *cells)
        console.print(cold)
        console.print(f"EASE λ (inner split): {q['ease_lambda']:g}; hybrid config: {q['hybrid_config']}")
        console.print(f"ranker feature importances (gain share): {q['ranker']['importances_gain']}")
        console.print(f"ranker training (inner split): {q['ranker']['training']}")
        if "dev" in q["split"]:
            console.print(
                "[yellow]Targets are defined on the withheld test split (not in this repository); these are dev "
                "figures. Score the test split with --test-ratings FILE.[/yellow]"
            )
    if s:
        ok = s["http_p99_ms"] <= 50
        console.print(
            f"serving (uvicorn on loopback, real Kafka, encoder {s['encoder']}, scorer {s['scorer']}: lists "
            f"{s['lists_by_scorer']}), {s['items']} items, "
            f"{s['users']} users × {s['interactions'] // s['users']} interactions (loaded through Kafka in "
            f"{s['load_seconds']} s), cache off, median of {s['rounds']} rounds × {s['requests_per_round']} "
            f"requests: HTTP p50 {s['http_p50_ms']} ms, p99 {s['http_p99_ms']} ms (target ≤ 50 ms: "
            f"{'met' if ok else 'NOT met'}); reference, scorer alone on the same state: p50 {s['scorer_p50_ms']} ms, "
            f"p99 {s['scorer_p99_ms']} ms; HTTP / scorer p99 {s['http_over_scorer_p99']}×; the server's floor "
            f"(GET /health, same run): p50 {s['health_p50_ms']} ms, p99 {s['health_p99_ms']} ms; load average "
            f"{s['load_average_1m'][0]} → {s['load_average_1m'][1]} on {os.cpu_count()} CPUs"
        )
        rss = s["rss_mib"]
        caveat = (
            " (includes the quality run: use --skip-quality for the service alone)" if rss["torch_imported"] else ""
        )
        console.print(
            f"memory of this process (the app runs in it): {rss['before_app']} MiB before the app, "
            f"{rss['after_measuring']} MiB after loading and measuring, peak {rss['peak']} MiB"
            f"{caveat}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="Fine-tuned model folder (default: latest export of 'recommend').")
    parser.add_argument("--base-model", default=None, help="Pretrained encoder (default: bundled MiniLM).")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--test-ratings", help="Score on this ratings file (train = all shared ratings).")
    parser.add_argument("--items", type=int, default=10_000, help="Catalogue size of the serving benchmark.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--out", default=str(REPO / ".run" / "bench-recommend.json"))
    args = parser.parse_args()
    if args.base_model is None:
        from textpulse.ml.settings import default_base_model

        args.base_model = default_base_model()
    q = None if args.skip_quality else quality(args)
    if args.skip_serving:
        s = None
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):  # as the service runs (RecommendSettings.blas_threads)
            s = serving(args.items, args.rounds, args.requests)
    report(q, s)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"quality": q, "serving": s}, indent=2) + "\n")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
