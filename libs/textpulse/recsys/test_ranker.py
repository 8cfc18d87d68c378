"""EASE, the cold-start subsets and the LambdaRank ranker's features and training on small data."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from textpulse.contracts.recs import Item
from textpulse.recsys.data import Rating, temporal_split
from textpulse.recsys.evaluate import Split, cold_start_relevant
from textpulse.recsys.ranker import (
    FEATURES,
    FeatureState,
    RankerConfig,
    RankerMismatch,
    TrainedRanker,
    load_ranker,
    save_ranker,
    title_year,
    train_ranker,
)
from textpulse.recsys.scoring import EASE

DAY = 86_400.0


def test_ease_matches_the_closed_form() -> None:
    lists = [["a", "b"], ["a", "b", "c"], ["b", "c"], ["c", "d"]]
    index = {i: n for n, i in enumerate("abcde")}  # "e" has no positive: left out of the solve
    model = EASE(lam=1.0).fit(lists, index, 5)
    x = np.zeros((4, 4))
    for u, items in enumerate(lists):
        for i in items:
            x[u, index[i]] = 1
    p = np.linalg.inv(x.T @ x + np.eye(4))
    b = p / -np.diag(p)
    np.fill_diagonal(b, 0)
    assert model.used.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(model.weights, b, rtol=1e-5, atol=1e-6)
    scores = model.scores([index["a"]], n_items=5)
    np.testing.assert_allclose(scores[:4], b[0], rtol=1e-5, atol=1e-6)
    assert scores[4] == 0.0
    assert scores[index["b"]] == max(scores)  # b co-occurs with a most
    assert not EASE().scores([4], n_items=5).any()  # unfitted / unknown rows: zeros


def _items() -> dict[str, Item]:
    items = {}
    for n in range(12):
        genre = "Sci-Fi" if n < 6 else "Romance"
        items[str(n)] = Item(item_id=str(n), title=f"Film {n} ({1990 + n})", genres=[genre], tags=[genre.lower()])
    items["99"] = Item(item_id="99", title="Brand new space film", genres=["Sci-Fi"], tags=["sci-fi"])
    return items


def _vectors(ids: list[str]) -> np.ndarray:
    """Sci-Fi items (and the new '99') point one way, romance items the other."""
    out = np.zeros((len(ids), 4), dtype=np.float32)
    for row, i in enumerate(ids):
        out[row, 0 if i == "99" or int(i) < 6 else 1] = 1.0
        out[row, 2] = 0.01 * row  # distinct vectors, same side
    unit: np.ndarray = out / np.linalg.norm(out, axis=1, keepdims=True)
    return unit


def _ratings() -> list[Rating]:
    """40 users: even users like Sci-Fi (0-5), odd users romance (6-11), over days; a few dislikes."""
    rng = np.random.default_rng(3)
    out = []
    for u in range(40):
        pool = list(range(6)) if u % 2 == 0 else list(range(6, 12))
        for day, item in enumerate(rng.permutation(pool)):
            out.append(Rating(f"u{u}", str(int(item)), 4.5, 1_000_000 + (u * 10 + day) * DAY))
        other = 11 if u % 2 == 0 else 0
        out.append(Rating(f"u{u}", str(other), 1.0, 1_000_000 + (u * 10 + 7) * DAY))
    return out


def test_cold_start_subsets() -> None:
    train = [Rating("u1", "1", 5, 1), Rating("u1", "2", 4, 2), Rating("u2", "1", 2, 1)]
    test = [Rating("u1", "3", 5, 9), Rating("u1", "2", 5, 9), Rating("u2", "2", 5, 9), Rating("u3", "1", 4, 9)]
    split = Split(train, test, ["1", "2", "3"], ["", "", ""], ["", "", ""])
    subsets = cold_start_relevant(split)
    assert subsets["cold items"] == {"u1": {"3"}}  # "2" and "1" have train ratings
    # u2 has no train positive (a dislike only), u3 no train rating at all; u1 has two.
    assert subsets["users ≤5 train positives"] == {"u1": {"2", "3"}, "u2": {"2"}, "u3": {"1"}}


def test_features_of_one_user() -> None:
    items = _items()
    ids = sorted(items, key=int)
    ratings = _ratings()
    state = FeatureState(items, ids, _vectors(ids), ratings, RankerConfig(per_source=5, ease_lambda=10.0))
    got = state.features("u0")
    assert got is not None
    cand, x = got
    assert x.shape == (len(cand), len(FEATURES))
    names = {c: dict(zip(FEATURES, row, strict=True)) for c, row in zip(cand, x, strict=True)}
    seen = {state.index[r.item] for r in ratings if r.user == "u0"}
    assert not seen & set(cand.tolist())  # u0 rated every Sci-Fi film and film 11
    new = names[state.index["99"]]  # reached through text only: no train rating
    assert new["cold_item"] == 1.0
    assert math.isnan(new["item_age_days"])
    assert math.isnan(new["release_gap_years"])
    assert new["pop_log"] == 0.0
    assert new["genre_overlap"] == pytest.approx(1.0)  # every u0 positive is Sci-Fi
    assert new["tag_overlap"] == pytest.approx(1.0)
    assert new["text_match"] > 0.9
    romance = names[state.index["7"]]
    assert romance["cold_item"] == 0.0
    assert romance["genre_overlap"] == 0.0
    assert romance["pop_log"] == pytest.approx(math.log1p(20 * 1e4 / 240))  # per 10k of the 240 positives
    assert romance["user_positives_log"] == pytest.approx(math.log1p(6))
    assert romance["user_seen_log"] == pytest.approx(math.log1p(7))
    assert state.features("nobody") is None
    assert title_year("Heat (1995)") == 1995.0


def test_recent_popularity_counts_only_the_window_before_the_users_time() -> None:
    items = _items()
    ids = sorted(items, key=int)
    ratings = [
        Rating("a", "0", 5, 0.0),
        Rating("b", "1", 5, 100 * DAY),
        Rating("c", "1", 5, 400 * DAY),  # after a's time
        Rating("a", "2", 5, 200 * DAY),
    ]
    state = FeatureState(items, ids, _vectors(ids), ratings, RankerConfig(per_source=20, recent_days=150))
    got = state.features("a")
    assert got is not None
    cand, x = got
    row = dict(zip(FEATURES, x[list(cand).index(state.index["1"])], strict=True))
    per_10k = 1e4 / 4
    assert row["pop_log"] == pytest.approx(math.log1p(2 * per_10k))
    assert row["pop_before_log"] == pytest.approx(math.log1p(per_10k))  # b's, not c's (later than a's last)
    assert row["pop_recent_log"] == pytest.approx(math.log1p(per_10k))  # b's at day 100: within 150 days of 200
    assert row["item_age_days"] == pytest.approx(100.0)


def test_ranker_trains_on_small_data_and_ranks_the_users_side_first() -> None:
    items = _items()
    ids = sorted(items, key=int)
    train, held = temporal_split(_ratings(), 0.3)
    relevant: dict[str, set[str]] = {}
    for r in held:
        if r.positive:
            relevant.setdefault(r.user, set()).add(r.item)
    config = RankerConfig(
        per_source=12, n_estimators=30, min_child_samples=5, num_leaves=7, ease_lambda=10.0, valid_users=0.0
    )
    state = FeatureState(items, ids, _vectors(ids), train, config)
    trained = train_ranker(state, relevant, config)
    assert trained.info["users_with_hit"] > 0
    importances = trained.importances()
    assert set(importances) == set(FEATURES)
    assert sum(importances.values()) == pytest.approx(1.0, abs=1e-3)
    hits = 0
    for user, rel in relevant.items():
        top = trained.rank(state, user, 2)
        hits += bool(set(top) & rel)
        side = range(6) if int(user[1:]) % 2 == 0 else range(6, 12)
        assert top[0] == "99" or int(top[0]) in side, (user, top)  # at most one or two unseen left on a side
    assert hits >= 0.8 * len(relevant)
    assert trained.rank(state, "unknown", 3) == state.popular("unknown", 3)  # the fallback
    slotted = train_ranker(state, relevant, RankerConfig(**{**vars(config), "new_item_slots": 1}))
    for user in relevant:
        top = slotted.rank(state, user, 3)
        assert top[-1] == "99"  # the only item without a train rating takes the reserved slot
        assert top[:2] == [i for i in trained.rank(state, user, 3) if i != "99"][:2]  # the model's order otherwise


def test_early_stopping_on_held_out_training_users() -> None:
    items = _items()
    ids = sorted(items, key=int)
    train, held = temporal_split(_ratings(), 0.3)
    relevant = {r.user: {r.item} for r in held if r.positive}
    config = RankerConfig(
        per_source=12, n_estimators=200, min_child_samples=5, num_leaves=7, ease_lambda=10.0, valid_users=0.3
    )
    trained = train_ranker(FeatureState(items, ids, _vectors(ids), train, config), relevant, config)
    assert trained.info["valid"]["users"] == int(len(relevant) * 0.3)
    assert trained.info["users"] == len(relevant) - trained.info["valid"]["users"]
    assert 1 <= trained.info["best_iteration"] <= 200


def _small_ranker(state: FeatureState, train: list[Rating], held: list[Rating]) -> TrainedRanker:
    relevant: dict[str, set[str]] = {}
    for r in held:
        if r.positive:
            relevant.setdefault(r.user, set()).add(r.item)
    return train_ranker(state, relevant, state.config)


_SMALL = RankerConfig(
    per_source=12, n_estimators=20, min_child_samples=5, num_leaves=7, ease_lambda=10.0, valid_users=0
)


def test_serving_state_from_history_computes_the_training_features() -> None:
    """The service builds its state from profiles (positives with times) and passes the live profile:
    the same rows and features as the ratings-based training state, for every user."""
    items = _items()
    ids = sorted(items, key=int)
    ratings = _ratings()
    trained_on = FeatureState(items, ids, _vectors(ids), ratings, _SMALL)
    history: dict[str, list[tuple[str, float]]] = {}
    seen: dict[str, list[str]] = {}
    for r in ratings:
        seen.setdefault(r.user, []).append(r.item)
        if r.positive:
            history.setdefault(r.user, []).append((r.item, r.time))
    served = FeatureState.from_history(items, ids, _vectors(ids), history, _SMALL)
    for user, positives in history.items():
        a = trained_on.features(user)
        b = served.user_features(positives, seen[user])
        assert a is not None
        assert b is not None
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert served.user_features([("unknown-item", 1.0)], ["unknown-item"]) is None
    # Items deleted since the state was built are never candidates.
    cand, _ = served.user_features(history["u0"], seen["u0"], exclude=["99"]) or (np.zeros(0), None)
    assert served.index["99"] not in cand.tolist()
    inactive = np.ones(len(ids), dtype=bool)
    inactive[served.index["99"]] = False
    masked = FeatureState.from_history(items, ids, _vectors(ids), history, _SMALL, active=inactive)
    got = masked.user_features(history["u0"], seen["u0"])
    assert got is not None
    assert masked.index["99"] not in got[0].tolist()


def test_saved_ranker_loads_and_predicts_the_same(tmp_path: Path) -> None:
    items = _items()
    ids = sorted(items, key=int)
    train, held = temporal_split(_ratings(), 0.3)
    state = FeatureState(items, ids, _vectors(ids), train, _SMALL)
    trained = _small_ranker(state, train, held)
    save_ranker(trained, tmp_path / "ranker", embedding_dim=4, metrics={"dev": {}})
    loaded = load_ranker(tmp_path / "ranker", embedding_dim=4)
    assert loaded.config == trained.config
    assert loaded.importances() == trained.importances()
    for user in ("u0", "u1", "u7"):
        got = state.features(user)
        assert got is not None
        a, b = loaded.top(*got, 5), trained.top(*got, 5)
        assert [r for r, _ in a] == [r for r, _ in b]
        assert [s for _, s in a] == pytest.approx([s for _, s in b])
        assert loaded.rank(state, user, 5) == trained.rank(state, user, 5)
    meta = json.loads((tmp_path / "ranker" / "ranker.json").read_text())
    assert meta["features"] == list(FEATURES)
    with pytest.raises(RankerMismatch, match="4-d item vectors"):
        load_ranker(tmp_path / "ranker", embedding_dim=384)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "ranker", bad)
    (bad / "ranker.json").write_text(json.dumps({**meta, "features": meta["features"][:-1]}))
    with pytest.raises(RankerMismatch, match="trained on features"):
        load_ranker(bad)
    (bad / "ranker.json").write_text(json.dumps(meta))
    (bad / "model.txt").write_text("not a model")
    with pytest.raises(RankerMismatch, match=r"model\.txt"):
        load_ranker(bad)
    with pytest.raises(RankerMismatch, match=r"ranker\.json"):
        load_ranker(tmp_path / "nowhere")


def test_ease_max_items_keeps_the_most_popular() -> None:
    lists = [["a", "b"], ["a", "b", "c"], ["b", "c"], ["c", "d"], ["a", "c"]]
    index = {i: n for n, i in enumerate("abcd")}
    model = EASE(lam=1.0, max_items=3).fit(lists, index, 4)
    assert model.used.tolist() == [0, 1, 2]  # d has one positive: left out
    assert model.scores([index["d"]], n_items=4).sum() == 0.0
    assert model.scores([index["a"]], n_items=4)[index["d"]] == 0.0


def test_export_carries_the_ranker_beside_the_weights(tmp_path: Path) -> None:
    from textpulse.recsys.train import MODEL_NAME, export_embedding

    items = _items()
    ids = sorted(items, key=int)
    train, held = temporal_split(_ratings(), 0.3)
    trained = _small_ranker(FeatureState(items, ids, _vectors(ids), train, _SMALL), train, held)
    model_dir = tmp_path / "trained"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"hidden_size": 4, "textpulse": {"max_length": 16}}))
    save_ranker(trained, model_dir / "ranker", embedding_dim=4, metrics={"dev": {"ranker": {"ndcg@10": 0.5}}})
    entry = export_embedding(model_dir, tmp_path / "repo", onnx=False)  # a folder without weights
    version_dir = tmp_path / "repo" / MODEL_NAME / str(entry["version"])
    assert load_ranker(version_dir / "ranker", embedding_dim=4).config == trained.config
    assert entry["ranker"] == {"files": f"{entry['version']}/ranker", "dev": {"ranker": {"ndcg@10": 0.5}}}


def test_per_user_ranks_and_zscores_and_new_items_reached_through_text() -> None:
    items = _items()
    items["98"] = Item(item_id="98", title="Another new romance", genres=["Romance"], tags=["romance"])
    ids = sorted(items, key=int)
    vectors = _vectors(ids)
    vectors[ids.index("98")] = [0.0, 1.0, 0.0, 0.0]  # "98" is romance-side (the helper puts unknown ids there)
    # per_source 1: the text top 1 alone would hold one new item at most; new_per_source brings both.
    config = RankerConfig(per_source=1, new_per_source=2, ease_lambda=10.0)
    state = FeatureState(items, ids, vectors, _ratings(), config)
    got = state.features("u0")
    assert got is not None
    cand, x = got
    rows = {state.item_ids[c]: dict(zip(FEATURES, row, strict=True)) for c, row in zip(cand, x, strict=True)}
    assert {"98", "99"} <= set(rows)  # both new items are candidates, whatever their text rank
    for new in ("98", "99"):
        assert rows[new]["cold_item"] == 1.0
        assert not math.isnan(rows[new]["text_match"])  # text carries them: their text features are set
    col = {name: x[:, FEATURES.index(name)] for name in FEATURES}
    for source in ("ease", "knn", "text_match", "text_max", "pop_log"):
        prefix = source.removesuffix("_match").removesuffix("_log")
        best = int(np.argmax(col[source]))
        assert col[f"{prefix}_rank"][best] == 0.0  # log1p(rank 0)
        assert sorted(np.expm1(col[f"{prefix}_rank"]).round().tolist()) == list(range(len(cand)))
        z = col[f"{prefix}_z"]
        if np.ptp(col[source]) > 0:
            assert float(z.mean()) == pytest.approx(0.0, abs=1e-5)
            assert float(z.std()) == pytest.approx(1.0, abs=1e-4)
    assert rows["99"]["text_rank"] < rows["98"]["text_rank"]  # u0 likes the Sci-Fi side


def test_extra_training_cuts_add_queries() -> None:
    items = _items()
    ids = sorted(items, key=int)
    train, held = temporal_split(_ratings(), 0.3)
    relevant = {r.user: {r.item} for r in held if r.positive}
    earlier, earlier_held = temporal_split(train, 0.3)
    earlier_rel = {r.user: {r.item} for r in earlier_held if r.positive}
    config = RankerConfig(per_source=12, n_estimators=10, min_child_samples=5, num_leaves=7, ease_lambda=10.0)
    state = FeatureState(items, ids, _vectors(ids), train, config)
    one = train_ranker(state, relevant, config)
    two = train_ranker(
        state, relevant, config, more=[(FeatureState(items, ids, _vectors(ids), earlier, config), earlier_rel)]
    )
    assert two.info["set_2"]["users_with_hit"] > 0
    assert two.info["rows"] == one.info["rows"]  # the first set's counts are unchanged
    assert two.booster.num_trees() == 10


def test_transition_features_follow_what_others_liked_next() -> None:
    items = _items()
    ids = sorted(items, key=int)
    # Three users liked 2 right after 0; "a" has just liked 0: 2 is the candidate with the transition.
    ratings = [Rating(u, i, 5, t * DAY) for u in ("b", "c", "d") for t, i in enumerate(("0", "2", "4"))]
    ratings += [Rating("a", "5", 5, 0.0), Rating("a", "0", 5, 10 * DAY)]
    state = FeatureState(items, ids, _vectors(ids), ratings, RankerConfig(per_source=20, ease_lambda=10.0))
    got = state.features("a")
    assert got is not None
    cand, x = got
    rows = {state.item_ids[c]: dict(zip(FEATURES, row, strict=True)) for c, row in zip(cand, x, strict=True)}
    assert rows["2"]["trans"] == pytest.approx(1.0)  # the user's best candidate by transitions
    assert rows["2"]["trans_rank"] == 0.0
    assert rows["2"]["trans_log"] > 0.0
    assert rows["4"]["trans"] < rows["2"]["trans"]  # two positives after 0, weighted 1/2
    assert rows["2"]["trans_z"] > rows["4"]["trans_z"]
    assert all(r["trans"] == 0.0 for i, r in rows.items() if i not in {"2", "4"})


def test_recent_knn_reads_only_the_last_positives() -> None:
    items = _items()
    ids = sorted(items, key=int)
    ratings = _ratings()
    state = FeatureState(items, ids, _vectors(ids), ratings, RankerConfig(per_source=20, recent_items=1))
    positives = [("0", 1.0 * DAY), ("7", 2.0 * DAY)]  # a Sci-Fi film long ago, a romance film just now
    got = state.user_features(positives, {"0", "7"})
    assert got is not None
    cand, x = got
    col = {name: x[:, FEATURES.index(name)] for name in ("knn", "knn_recent")}
    recent = state.knn.scores([state.index["7"]], n_items=state.n)[cand]
    assert col["knn_recent"] == pytest.approx(recent / recent.max())
    romance = [j for j, c in enumerate(cand) if 6 <= int(state.item_ids[c]) <= 11 and state.item_ids[c] != "7"]
    scifi = [j for j, c in enumerate(cand) if int(state.item_ids[c]) < 6 and state.item_ids[c] != "0"]
    assert min(col["knn_recent"][romance]) > max(col["knn_recent"][scifi])  # only the last positive counts
    assert max(col["knn"][scifi]) > 0  # while the whole-history kNN still reads the Sci-Fi one
