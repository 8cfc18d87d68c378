"""``make bench-recommend``: recommendation quality on the MovieLens temporal dev split, and serving latency.

Quality, in one run on the same users and candidates (every item the user did not
rate in the train part; relevant = held-out positives, rating ≥ 4):
(a) most popular, (b) item-kNN collaborative filtering, (c) text-only with the
pretrained encoder, (d) text-only with the fine-tuned encoder (the latest
``recommend`` export, or ``--model-dir``), (e) the shipped hybrid — the
service's own ``Recommender`` + ``Profile`` code, its weights chosen on an
inner temporal split of the train part (never on the dev split it is scored on).

The issue's targets are stated on the withheld test split, which is not in this
repository; ``--test-ratings FILE`` scores on such a file instead (train = all
shared ratings). Without it the figures are dev-split figures and say so.

Serving: 10k synthetic items (384-dim unit vectors), users with 50 positives;
p50/p99 of one recommendation through the FastAPI app (ASGI, cache off) and of
the scorer alone; several rounds, medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table
from textpulse.recsys.data import load_movielens, load_ratings, temporal_split
from textpulse.recsys.embed import TorchEncoder
from textpulse.recsys.evaluate import (
    Rankers,
    Split,
    cached_vectors,
    catalogue_of,
    evaluate,
    make_split,
    profiles_of,
    weights_key,
)
from textpulse.recsys.recommender import Recommender, RecommenderConfig
from textpulse.recsys.scoring import HybridWeights

from bench.common import REPO, console

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

    def score(self, config: RecommenderConfig) -> dict[str, float]:
        self.rec.config = config

        def rank(user: str) -> list[str]:
            return [s.item_id for s in self.rec.recommend(self.profiles.get(user), K)[0]]

        return evaluate(self.split, rank, K)


def tune(split: Split, vectors: np.ndarray) -> tuple[RecommenderConfig, list[dict[str, Any]]]:
    """Grid over the hybrid weights and half-life on an inner temporal split of ``split.train``."""
    inner_train, inner_test = temporal_split(split.train, 0.2)
    inner = Split(inner_train, inner_test, split.item_ids, split.texts, split.titles)
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


def quality(args: argparse.Namespace) -> dict[str, Any]:
    ml = load_movielens()
    if args.test_ratings:
        test = load_ratings(Path(args.test_ratings))
        ids = sorted(ml.items, key=int)
        split = Split(ml.ratings, test, ids, [ml.items[i].text() for i in ids], [ml.items[i].title for i in ids])
        split_name = f"test file {args.test_ratings}"
    else:
        split = make_split(ml, 0.2)
        split_name = "temporal dev split (per user latest 20% of the shared ratings)"
    rankers = Rankers(split, K)
    rows: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    rows["(a) most popular"] = evaluate(split, rankers.popular, K)
    rows["(b) item-kNN CF"] = evaluate(split, rankers.item_knn, K)
    pretrained = encode_items(args.base_model, split.texts, args.max_length)
    rows["(c) text-only, pretrained MiniLM"] = evaluate(split, rankers.text(pretrained), K)
    model_dir = Path(args.model_dir) if args.model_dir else latest_model()
    finetuned = None
    if model_dir is not None:
        finetuned = encode_items(model_dir, split.texts, args.max_length)
        rows[f"(d) text-only, fine-tuned ({model_dir.name})"] = evaluate(split, rankers.text(finetuned), K)
    vectors = finetuned if finetuned is not None else pretrained
    config, grid = tune(split, vectors)
    rows["(e) hybrid (shipped: text + item-kNN + popularity)"] = HybridEval(split, vectors).score(config)
    return {
        "split": split_name,
        "users": int(rows["(a) most popular"]["users"]),
        "rows": rows,
        "hybrid_config": {
            "weights": vars(config.weights),
            "half_life_days": config.half_life_days,
            "profile_items": config.profile_items,
            "tuned_on": "inner temporal split of the train part",
        },
        "hybrid_grid_top5": sorted(grid, key=lambda g: -g[f"ndcg@{K}"])[:5],
        "fine_tuned_model": str(model_dir) if model_dir else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


async def serving(n_items: int, rounds: int, requests: int) -> dict[str, Any]:
    import httpx
    from faststream.kafka import TestKafkaBroker
    from textpulse.contracts.recs import Interaction
    from textpulse.kafka import make_broker
    from textpulse.recsys.testing import HashEmbedder

    from services.recommend.app import create_app
    from services.recommend.settings import RecommendSettings

    rng = np.random.default_rng(7)
    settings = RecommendSettings(cache_size=0, cf_refresh_s=3600)
    broker = make_broker(settings.kafka, service="recommend")
    embedder = HashEmbedder(384)
    app = create_app(settings, broker=broker, embedder=embedder, restore_state=False, lag_probe=False)
    results: dict[str, list[float]] = {"http_p50_ms": [], "http_p99_ms": [], "scorer_p50_ms": [], "scorer_p99_ms": []}
    async with TestKafkaBroker(broker), app.router.lifespan_context(app):
        state = app.state.recommend
        vectors = rng.standard_normal((n_items, 384)).astype(np.float32)
        for i in range(n_items):
            state.catalogue.upsert(f"i{i}", f"Item {i}", vectors[i])
        from datetime import UTC, datetime, timedelta

        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        users = [f"u{u}" for u in range(1000)]
        popular = rng.zipf(1.3, size=200_000) % n_items
        for u, user in enumerate(users):
            for j, item in enumerate(popular[u * 60 : u * 60 + 60]):
                state.apply(
                    Interaction(
                        user_id=user,
                        item_id=f"i{item}",
                        action="like" if j % 5 else "view",
                        time=t0 + timedelta(hours=j),
                    )
                )
        await state.refresh_cf(force=True)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://recommend") as client:
            for _ in range(20):
                await client.get(f"/v1/users/{users[0]}/recommendations")
            for _ in range(rounds):
                http, scorer = [], []
                for r in range(requests):
                    user = users[int(rng.integers(len(users)))]
                    started = time.perf_counter()
                    resp = await client.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                    http.append((time.perf_counter() - started) * 1000)
                    assert resp.status_code == 200, resp.text
                    if r % 2 == 0:
                        started = time.perf_counter()
                        state.recommender.recommend(state.profiles[user], 10)
                        scorer.append((time.perf_counter() - started) * 1000)
                for name, values in (("http", http), ("scorer", scorer)):
                    q = np.percentile(values, [50, 99])
                    results[f"{name}_p50_ms"].append(float(q[0]))
                    results[f"{name}_p99_ms"].append(float(q[1]))
    medians = {k: round(statistics.median(v), 2) for k, v in results.items()}
    return {
        "items": n_items,
        "users": len(users),
        "rounds": rounds,
        "requests_per_round": requests,
        **medians,
        "per_round": {k: [round(x, 2) for x in v] for k, v in results.items()},
    }


def report(q: dict[str, Any] | None, s: dict[str, Any] | None) -> None:
    if q:
        rows = q["rows"]
        pop = rows["(a) most popular"][f"ndcg@{K}"]
        knn = rows["(b) item-kNN CF"][f"ndcg@{K}"]
        table = Table(title=f"Recall@{K} / nDCG@{K} — {q['split']}, {q['users']} users")
        for col in ("method", f"Recall@{K}", f"nDCG@{K}", "nDCG vs popular", "≥1.5× popular", "> item-kNN"):
            table.add_column(col)
        for name, m in rows.items():
            ratio = m[f"ndcg@{K}"] / pop if pop else float("nan")
            table.add_row(
                name,
                f"{m[f'recall@{K}']:.4f}",
                f"{m[f'ndcg@{K}']:.4f}",
                f"{ratio:.2f}×",
                "yes" if ratio >= 1.5 else "NO",
                "—" if name.startswith("(b)") else ("yes" if m[f"ndcg@{K}"] > knn else "NO"),
            )
        console.print(table)
        console.print(f"hybrid config: {q['hybrid_config']}")
        if "dev" in q["split"]:
            console.print(
                "[yellow]Targets are defined on the withheld test split (not in this repository); these are dev "
                "figures. Score the test split with --test-ratings FILE.[/yellow]"
            )
    if s:
        ok = s["http_p99_ms"] <= 50
        console.print(
            f"serving, {s['items']} items, {s['users']} users, cache off, median of {s['rounds']} rounds × "
            f"{s['requests_per_round']} requests: HTTP p50 {s['http_p50_ms']} ms, p99 {s['http_p99_ms']} ms "
            f"(target ≤ 50 ms: {'met' if ok else 'NOT met'}); scorer alone p50 {s['scorer_p50_ms']} ms, "
            f"p99 {s['scorer_p99_ms']} ms"
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
            s = asyncio.run(serving(args.items, args.rounds, args.requests))
    report(q, s)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"quality": q, "serving": s}, indent=2) + "\n")
    console.print(f"written {args.out}")


if __name__ == "__main__":
    main()
