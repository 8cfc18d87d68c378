"""The recommend service's state and its protocol: catalogue, profiles, CF refresh, outputs before commit.

Per consumed batch (both input topics, one consumer group):

1. catalogue records are applied first (new / changed items are embedded, a
   null value deletes the item), so interactions in the same batch can use them;
2. interactions update the profiles of their users;
3. the changed profiles are written to the compacted ``recs.profiles`` and,
   for each changed user, the new top-k to ``recs.scores``; both acknowledged
   (the top-k comes from the LambdaRank ranker shipped with the encoder when
   there is one and the user has a positive in it, else from the hybrid scorer,
   else popularity: :meth:`State.recommend`);
4. the handler returns and the batch is committed.

A crash before 3 replays the batch into the restored state; a profile update is
idempotent (a positive is keyed by item and time, ``seen`` is a set), so a
replay does not count twice. Unreadable records go to ``dlq.recommend`` with
the reason in headers. When the encoder is unavailable the batch waits and is
retried, then redelivered (nothing is committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from cachetools import LRUCache
from pydantic import ValidationError
from textpulse.contracts import DeadLetterReason, encode, utcnow
from textpulse.contracts.errors import ErrorCode, FieldError, error, validation_errors
from textpulse.contracts.errors import reason as reason_of
from textpulse.contracts.recs import Interaction, Item, Recommendations, ScoredItem, UserProfileState
from textpulse.inference.codec import resolve_version
from textpulse.inference.errors import BackendUnavailable, InputRejected, ModelMismatch
from textpulse.kafka.admin import client_options, topic_partitions
from textpulse.kafka.dlq import DeadLetters
from textpulse.kafka.writer import OutRecord, RecordWriter
from textpulse.recsys.embed import Embedder
from textpulse.recsys.profile import Profile
from textpulse.recsys.ranker import RANKER_DIR, FeatureState, TrainedRanker, load_ranker
from textpulse.recsys.recommender import Recommender, Scored
from textpulse.recsys.scoring import Catalogue
from textpulse.recsys.vector_cache import VectorCache
from textpulse.settings import KafkaSettings

from .metrics import RecommendMetrics
from .settings import RecommendSettings

log = logging.getLogger(__name__)
SERVICE = "recommend"


def find_ranker(settings: RecommendSettings, embedder: Embedder) -> TrainedRanker | None:
    """The ranker shipped with the encoder's export (``<model>/<version>/ranker/``), if any.

    Absent → None (the service serves the hybrid scorer, as before). Present but not servable
    (other features, format, embedding size, unreadable) → :class:`RankerMismatch` at start-up,
    rather than silently serving the fallback. ``ranker_dir`` names a folder that must exist.
    """
    if not settings.ranker:
        return None
    if settings.ranker_dir is not None:
        path = settings.ranker_dir
        if not path.is_dir():
            msg = f"TEXTPULSE_RECOMMEND_RANKER_DIR={path} is not a folder"
            raise FileNotFoundError(msg)
    else:
        if embedder.model.name != settings.model_name:
            return None  # the pretrained base encoder (or a test's): no ranker was trained on its vectors
        try:
            version_dir = resolve_version(settings.inference.model_repo, settings.model_name, embedder.model.version)
        except ModelMismatch:
            return None  # a Triton model without a local copy of its folder
        path = version_dir / RANKER_DIR
        if not path.exists():
            log.info("no ranker shipped with the encoder: serving the hybrid scorer", extra={"path": str(path)})
            return None
    ranker = load_ranker(path, embedding_dim=embedder.dim)
    if settings.new_item_slots is not None:
        # A product choice over the same trees: the booster does not depend on the slots.
        ranker = dataclasses.replace(
            ranker, config=dataclasses.replace(ranker.config, new_item_slots=settings.new_item_slots)
        )
    log.info(
        "serving the LambdaRank ranker",
        extra={"path": str(path), "trees": ranker.booster.num_trees(), "new_item_slots": ranker.config.new_item_slots},
    )
    return ranker


class State:
    """Catalogue, profiles and the scorers; one event loop owns it (no locks needed)."""

    def __init__(
        self,
        settings: RecommendSettings,
        embedder: Embedder,
        metrics: RecommendMetrics,
        ranker: TrainedRanker | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        # The embedder is started first, so its dimension is known.
        self.catalogue = Catalogue(embedder.dim)
        model = embedder.model
        self.vectors = VectorCache(settings.vector_cache_dir, model.name, model.version, embedder.dim)
        # The catalogue changed since the vectors were last saved (hashing every text is skipped otherwise).
        self._vectors_stale = False
        if loaded := self.vectors.load():
            log.info("item vectors loaded", extra={"vectors": loaded, "path": str(self.vectors.path)})
        self.recommender = Recommender(self.catalogue, settings.recommender_config())
        self.profiles: dict[str, Profile] = {}
        #: Item metadata (genres, tags, title): features of the ranker.
        self.items: dict[str, Item] = {}
        self.ranker = ranker
        #: The ranker's item-side state (EASE, item-kNN, popularity over time), rebuilt with item-kNN.
        self.ranker_state: FeatureState | None = None
        #: Items deleted since ``ranker_state`` was built: never ranked, although its snapshot has them.
        self._removed: set[str] = set()
        # (user, k) → (validity key, list); the key check drops a stale entry, the LRU bounds memory.
        self.cache: LRUCache[tuple[str, int], tuple[tuple[int, int, int], Recommendations]] | None = (
            LRUCache(maxsize=settings.cache_size) if settings.cache_size else None
        )
        self.cf_version = 0
        self._cf_dirty = False

    # -- catalogue -------------------------------------------------------------

    async def upsert_items(self, items: Sequence[Item]) -> None:
        """Embed and store ``items`` (raises BackendUnavailable / InputRejected from the encoder)."""
        if not items:
            return
        texts = [i.text() for i in items]
        vectors: list[Any] = [self.vectors.get(t) for t in texts]
        missing = [n for n, v in enumerate(vectors) if v is None]
        if missing:
            fresh = await self.embedder.embed([texts[n] for n in missing])
            for n, vec in zip(missing, fresh, strict=True):
                vectors[n] = vec
                self.vectors.put(texts[n], vec)
        for item, vec in zip(items, vectors, strict=True):
            self.catalogue.upsert(item.item_id, item.title, vec)
            self.items[item.item_id] = item
            self._removed.discard(item.item_id)
        # The CF models and the ranker's state are indexed by catalogue row: rebuild them to include these.
        self._cf_dirty = self._vectors_stale = True
        self.metrics.embedded.labels(SERVICE).inc(len(missing))  # embedded now, not found in the cache
        self.metrics.catalogue_items.labels(SERVICE).set(len(self.catalogue))

    def save_vectors(self) -> None:
        """Keep the vectors of the current catalogue for the next start (no-op without a cache dir or a change)."""
        if self.vectors.path is None or not self._vectors_stale:
            return
        self._vectors_stale = False
        try:
            if self.vectors.save(keep=[item.text() for item in self.items.values()]):
                log.debug("item vectors saved", extra={"vectors": len(self.vectors)})
        except OSError as exc:  # a full or read-only disk costs the next start a re-embedding, nothing else
            log.warning("item vectors not saved", extra={"path": str(self.vectors.path), "error": repr(exc)})

    def delete_item(self, item_id: str) -> None:
        if self.catalogue.remove(item_id):
            self.items.pop(item_id, None)
            self._removed.add(item_id)
            self._cf_dirty = self._vectors_stale = True
            self.metrics.catalogue_items.labels(SERVICE).set(len(self.catalogue))

    # -- profiles --------------------------------------------------------------

    def profile(self, user_id: str) -> Profile:
        p = self.profiles.get(user_id)
        if p is None:
            s = self.settings
            p = self.profiles[user_id] = Profile(user_id, max_positives=s.max_positives, max_seen=s.max_seen)
            self.metrics.profiles.labels(SERVICE).set(len(self.profiles))
        return p

    def apply(self, interaction: Interaction) -> bool:
        changed = self.profile(interaction.user_id).apply(interaction)
        if changed and interaction.is_positive():
            self.recommender.count_positive(interaction.item_id)
            self._cf_dirty = True
        return changed

    def restore_profile(self, state: UserProfileState) -> None:
        s = self.settings
        profile = Profile.from_state(state, max_positives=s.max_positives, max_seen=s.max_seen)
        old = self.profiles.get(state.user_id)
        if old is not None:
            for p in old.positives:
                self.recommender.counts[p.item_id] -= 1
        for p in profile.positives:
            self.recommender.count_positive(p.item_id)
        self.profiles[state.user_id] = profile
        self._cf_dirty = True

    # -- CF --------------------------------------------------------------------

    async def refresh_cf(self, *, force: bool = False) -> bool:
        """Rebuild item-kNN, popularity and the ranker's state from the profiles, in a thread (the loop serves)."""
        if not (force or self._cf_dirty):
            return False
        self._cf_dirty = False
        started = time.perf_counter()
        snapshot = [p.positive_items() for p in self.profiles.values()]
        await asyncio.to_thread(self.recommender.fit_cf, snapshot)
        if self.ranker is not None:
            cat = self.catalogue
            # Copies taken on the loop: the thread must not see the catalogue or profiles change under it.
            history = {u: [(p.item_id, p.time) for p in prof.positives] for u, prof in self.profiles.items()}
            removed = set(self._removed)
            self.ranker_state = await asyncio.to_thread(
                FeatureState.from_history,
                dict(self.items),
                list(cat.ids),
                cat.vectors.copy(),
                history,
                self.ranker.config,
                cat.active.copy(),
            )
            self._removed -= removed
        self.cf_version += 1
        self.metrics.cf_refresh_seconds.labels(SERVICE).observe(time.perf_counter() - started)
        self.metrics.profiles.labels(SERVICE).set(len(self.profiles))
        return True

    # -- recommendations -------------------------------------------------------

    def recommend(self, user_id: str, k: int, source: str) -> tuple[Recommendations, bool]:
        """Top ``k`` for ``user_id`` (popular items for an unknown user); returns (result, cache hit)."""
        started = time.perf_counter()
        profile = self.profiles.get(user_id)
        key = (self.catalogue.version, self.cf_version, profile.interactions if profile else -1)
        cached = self.cache.get((user_id, k)) if self.cache is not None else None
        if cached is not None and cached[0] == key:
            self.metrics.cache.labels(SERVICE, "hit").inc()
            self.metrics.request_seconds.labels(SERVICE, source).observe(time.perf_counter() - started)
            return cached[1], True
        self.metrics.cache.labels(SERVICE, "miss").inc()
        items, scorer, candidates = self.rank(profile, k)
        self.metrics.candidates.labels(SERVICE, source).inc(candidates)
        self.metrics.lists.labels(SERVICE, scorer).inc()
        if scorer == "popular":
            self.metrics.fallbacks.labels(SERVICE).inc()
        result = Recommendations(
            user_id=user_id,
            items=[ScoredItem(item_id=s.item_id, score=s.score, reason=s.reason) for s in items],
            model=self.embedder.model,
            popular_fallback=scorer == "popular",
            generated_at=utcnow(),
        )
        if self.cache is not None:
            self.cache[(user_id, k)] = (key, result)
        self.metrics.request_seconds.labels(SERVICE, source).observe(time.perf_counter() - started)
        return result, False

    def rank(self, profile: Profile | None, k: int) -> tuple[list[Scored], str, int]:
        """(items, scorer, candidates scored): the ranker when it knows a positive of the user, else the fallbacks."""
        if self.ranker is not None and self.ranker_state is not None and profile is not None:
            got = self.ranker_state.user_features(
                [(p.item_id, p.time) for p in profile.positives], profile.seen, self._removed
            )
            if got is not None:
                state, cat = self.ranker_state, self.catalogue
                top = self.ranker.top(*got, k)
                return (
                    [
                        Scored(
                            state.item_ids[row],
                            round(score, 6),
                            self.recommender.reason(profile, cat.index[state.item_ids[row]]),
                        )
                        for row, score in top
                    ],
                    "ranker",
                    len(got[0]),
                )
        # Unknown users, users none of whose positives the ranker's state has yet, or no ranker shipped.
        items, fallback = self.recommender.recommend(profile, k)
        return items, "popular" if fallback else "hybrid", self.recommender.stats.candidates


@dataclass
class Outputs:
    profiles: RecordWriter
    recs: RecordWriter
    dead_letters: DeadLetters


class Processor:
    """Applies consumed batches to :class:`State` and writes the outputs before the batch is committed."""

    def __init__(self, state: State, outputs: Outputs, settings: RecommendSettings) -> None:
        self.state = state
        self.outputs = outputs
        self.settings = settings
        self.metrics = state.metrics

    async def handle(self, records: Sequence[Any]) -> None:
        s = self.settings
        items = [r for r in records if r.topic == s.topic_items]
        interactions = [r for r in records if r.topic != s.topic_items]
        for topic, recs in ((s.topic_items, items), (s.topic_interactions, interactions)):
            if recs:
                self.metrics.received.labels(SERVICE, topic).inc(len(recs))
                self.metrics.batch_size.labels(SERVICE, topic).observe(len(recs))
        started = time.perf_counter()
        if items:
            await self._items(items)
        if interactions:
            await self._interactions(interactions)
        self.metrics.handler_duration.labels(SERVICE, "all").observe(time.perf_counter() - started)

    async def _dead_letter(
        self,
        rec: Any,
        category: DeadLetterReason,
        reason: str,
        exc: BaseException | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        await self.outputs.dead_letters.send(rec, category, reason, exc, errors=errors)

    async def _items(self, records: Sequence[Any]) -> None:
        latest: dict[str, tuple[Any, Item | None]] = {}
        for rec in records:
            if rec.value is None:
                key = (rec.key or b"").decode("utf-8", "replace")
                if key:
                    latest[key] = (rec, None)
                else:
                    await self._dead_letter(
                        rec,
                        DeadLetterReason.INVALID_RECORD,
                        "tombstone without key",
                        errors=[error(ErrorCode.EMPTY_VALUE)],
                    )
                continue
            try:
                item = Item.model_validate_json(rec.value)
            except ValidationError as exc:
                errs = validation_errors(exc)
                await self._dead_letter(
                    rec, DeadLetterReason.INVALID_RECORD, f"invalid item: {reason_of(errs)}", exc, errs
                )
                continue
            latest[item.item_id] = (rec, item)
        upserts = [(rec, item) for rec, item in latest.values() if item is not None]
        for item_id, (_, item) in latest.items():
            if item is None:
                self.state.delete_item(item_id)
        await self._embed(upserts)
        self.metrics.processed.labels(SERVICE, self.settings.topic_items).inc(len(records))

    async def _embed(self, upserts: Sequence[tuple[Any, Item]]) -> None:
        """Embed with retries while the encoder is unavailable; a rejected item alone is dead-lettered."""
        deadline = time.monotonic() + self.settings.unavailable_max_wait_s
        delay = 0.5
        while True:
            try:
                await self.state.upsert_items([item for _, item in upserts])
                return
            except InputRejected:
                break
            except BackendUnavailable:
                if time.monotonic() > deadline:
                    raise
                log.warning("encoder unavailable; retrying the batch", extra={"wait_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        for rec, item in upserts:
            try:
                await self.state.upsert_items([item])
            except InputRejected as exc:
                await self._dead_letter(rec, DeadLetterReason.MODEL_REJECTED, f"encoder rejected the item: {exc}", exc)

    async def _interactions(self, records: Sequence[Any]) -> None:
        changed: dict[str, None] = {}
        for rec in records:
            try:
                interaction = Interaction.model_validate_json(rec.value or b"")
            except ValidationError as exc:
                errs = validation_errors(exc)
                await self._dead_letter(
                    rec, DeadLetterReason.INVALID_RECORD, f"invalid interaction: {reason_of(errs)}", exc, errs
                )
                continue
            if self.state.apply(interaction):
                changed[interaction.user_id] = None
        if changed:
            await self.outputs.profiles.write(
                [
                    OutRecord(
                        encode(self.state.profiles[u].to_state()), u.encode(), {"content-type": "application/json"}
                    )
                    for u in changed
                ]
            )
        if changed and self.settings.publish_on_change:
            recs = [self.state.recommend(u, self.settings.top_k, "stream")[0] for u in changed]
            await self.outputs.recs.write(
                [OutRecord(encode(r), r.user_id.encode(), {"content-type": "application/json"}) for r in recs]
            )
        self.metrics.processed.labels(SERVICE, self.settings.topic_interactions).inc(len(records))


async def read_topic(
    settings: KafkaSettings,
    topic: str,
    on_batch: Callable[[Sequence[Any]], Awaitable[None]],
    timeout_s: float,
) -> int:
    """Read ``topic`` from the beginning to its current end, batch by batch; returns the records read."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    count = 0
    try:
        async with asyncio.timeout(timeout_s):
            tps = await topic_partitions(consumer, topic)
            if not tps:
                msg = f"topic {topic!r} does not exist (create it: textpulse topics create)"
                raise RuntimeError(msg)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=1000)
                records = [rec for tp_records in batch.values() for rec in tp_records]
                if records:
                    await on_batch(records)
                    count += len(records)
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return count


async def restore(settings: RecommendSettings, state: State) -> dict[str, int]:
    """Load the whole catalogue and every profile, then build item-kNN and popularity."""

    async def on_items(records: Sequence[Any]) -> None:
        latest: dict[str, Item | None] = {}
        for rec in records:
            key = (rec.key or b"").decode("utf-8", "replace")
            if rec.value is None:
                latest[key] = None
                continue
            try:
                item = Item.model_validate_json(rec.value)
            except ValidationError:
                continue  # dead-lettered when the consumer group first read it
            latest[item.item_id] = item
        for item_id, item in latest.items():
            if item is None:
                state.delete_item(item_id)
        await state.upsert_items([i for i in latest.values() if i is not None])

    async def on_profiles(records: Sequence[Any]) -> None:
        for rec in records:
            if rec.value is None:
                state.profiles.pop((rec.key or b"").decode("utf-8", "replace"), None)
                continue
            try:
                state.restore_profile(UserProfileState.model_validate_json(rec.value))
            except ValidationError:
                log.warning("unreadable profile record skipped", extra={"offset": rec.offset})

    items = await read_topic(settings.kafka, settings.topic_items, on_items, settings.restore_timeout_s)
    profiles = await read_topic(settings.kafka, settings.topic_profiles, on_profiles, settings.restore_timeout_s)
    await state.refresh_cf(force=True)
    state.metrics.profiles.labels(SERVICE).set(len(state.profiles))
    return {"item_records": items, "profile_records": profiles}
