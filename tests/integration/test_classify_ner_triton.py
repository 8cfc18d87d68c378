"""classify/NER against a real tritonserver (started by deploy/triton/start.sh) over the tiny models.

- Triton and the in-process backend agree: same labels, logits within 1e-3.
- The client refuses a model that does not match (fail fast at start-up).
- Triton stopped in the middle of a replay and started again: every event is
  in ``text.enriched`` exactly once after de-duplication by id, none missing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from textpulse.contracts import EnrichedEvent
from textpulse.inference import ModelMismatch
from textpulse.inference.local import LocalBackend
from textpulse.inference.triton import TritonBackend
from textpulse.settings import KafkaSettings

from tests.conftest import REPO, missing
from tests.helpers import read_all
from tests.integration.test_classify_ner_kafka import (
    by_id,
    check_enriched,
    classify_settings,
    model_repo,
    ner_settings,
    produce,
    replay_events,
    serving,
    wait_for_count,
)
from tests.support.servers import TRITON_DEPLOY, TritonServer

pytestmark = [pytest.mark.triton, pytest.mark.slow]

__all__ = ["model_repo"]  # the session fixture, re-exported for this module

#: what classify + NER start by default (multi-head finance, support; ner) and the single-task models
MODELS = ("finance", "support", "sentiment", "topic", "intent", "ner")


class Triton(TritonServer):
    """The shared harness, plus start/stop as the outage test uses them."""

    def start(self) -> None:
        proc = self.run("start.sh")
        if proc.returncode != 0:
            missing("tritonserver", f"deploy/triton/start.sh failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")

    def stop(self) -> None:
        self.run("stop.sh")


@pytest.fixture(scope="module")
def triton(model_repo: Path) -> Iterator[Triton]:
    if not (TRITON_DEPLOY / "start.sh").is_file():
        missing("tritonserver", "deploy/triton/start.sh is absent")
    server = Triton.on_free_ports(model_repo, MODELS, REPO / ".run" / "triton-classify-ner-tests")
    fetched = server.run("fetch.sh")
    if fetched.returncode != 0:
        missing("tritonserver", f"deploy/triton/fetch.sh failed: {fetched.stderr[-1500:]}")
    server.start()
    yield server
    server.stop()


TEXTS = [
    "$AAPL falls 3% after Goldman Sachs downgrade",
    "Fed holds rates steady as inflation cools",
    "what is my current account balance",
    "Bullish on $NVDA into earnings, guidance looks strong and demand is accelerating at Microsoft and Apple",
    "ok",
]


@pytest.mark.timeout(600)
async def test_triton_and_in_process_agree(triton: Triton, model_repo: Path) -> None:
    local = LocalBackend(model_repo, threads=1)
    remote = TritonBackend(triton.url, model_repo, timeout_s=30)
    await local.start(MODELS)
    await remote.start(MODELS)
    try:
        texts = [e.text for e in replay_events(40, support_every=0)] + TEXTS
        for model in MODELS:
            assert remote.info(model).labels == local.info(model).labels
            assert remote.info(model).version == local.info(model).version
            expected, batch = local.logits(model, texts)
            got, _ = await remote.logits(model, texts)
            mask = batch.attention_mask.astype(bool)
            if got.ndim == 3:
                np.testing.assert_allclose(got[mask], expected[mask], atol=1e-3)
            else:
                np.testing.assert_allclose(got, expected, atol=1e-3)
        for model in ("sentiment", "topic", "intent"):
            ours = await remote.classify(model, texts)
            theirs = await local.classify(model, texts)
            assert [p.label for p in ours] == [p.label for p in theirs]
            assert all(p.model.name == model for p in ours)
        for model, heads in {"finance": ["sentiment", "topic"], "support": ["clinc150", "sentiment"]}.items():
            # one request for exactly these outputs; the same labels and scores as in-process
            remote_heads = await remote.classify_heads(model, texts, heads)
            local_heads = await local.classify_heads(model, texts, heads)
            assert list(remote_heads) == heads
            for head in heads:
                assert [p.label for p in remote_heads[head]] == [p.label for p in local_heads[head]]
                for a, b in zip(remote_heads[head], local_heads[head], strict=True):
                    assert abs(a.score - b.score) < 1e-3
                    assert a.out_of_scope == b.out_of_scope
        spans_remote = await remote.tag("ner", texts)
        spans_local = await local.tag("ner", texts)
        assert [[(s.type, s.start, s.end) for s in r] for r in spans_remote] == [
            [(s.type, s.start, s.end) for s in r] for r in spans_local
        ]
    finally:
        await local.close()
        await remote.close()


async def test_triton_client_fails_fast_on_mismatch(triton: Triton, model_repo: Path, tmp_path: Path) -> None:
    remote = TritonBackend(triton.url, model_repo, timeout_s=10)
    with pytest.raises(ModelMismatch, match="not ready"):
        await remote.start(["no-such-model"])
    await remote.close()
    # labels on disk that disagree with the served output shape
    import shutil

    fake_repo = tmp_path / "repo"
    shutil.copytree(model_repo / "sentiment", fake_repo / "sentiment")
    version = max((p for p in (fake_repo / "sentiment").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    (version / "id2label.json").write_text('{"0": "a", "1": "b"}')
    wrong = TritonBackend(triton.url, fake_repo, timeout_s=10)
    with pytest.raises(ModelMismatch, match="2 labels"):
        await wrong.start(["sentiment"])
    await wrong.close()


@pytest.mark.kafka
@pytest.mark.timeout(600)
async def test_stop_triton_mid_replay_every_event_once(
    triton: Triton, kafka_settings: KafkaSettings, kafka_topics: dict[str, str], model_repo: Path
) -> None:
    from services.classify.app import create_app as create_classify
    from services.ner.app import create_app as create_ner

    events = replay_events(300)
    os.environ["TEXTPULSE_TRITON_URL"] = triton.url
    try:
        classify = create_classify(classify_settings(kafka_settings, kafka_topics, model_repo, kafka_batch_records=32))
        ner = create_ner(ner_settings(kafka_settings, kafka_topics, model_repo, kafka_batch_records=32))
    finally:
        del os.environ["TEXTPULSE_TRITON_URL"]
    async with serving(classify), serving(ner):
        backend = classify.state.backend
        assert backend is not None
        assert backend.name == "triton"
        await produce(kafka_settings, kafka_topics["text.raw"], events)
        seen = await wait_for_count(kafka_settings, kafka_topics["text.enriched"], 30, timeout_s=180)
        assert 30 <= seen < len(events), seen
        await asyncio.to_thread(triton.stop)
        stopped_at = await wait_for_count(kafka_settings, kafka_topics["text.enriched"], 0, 1)
        await asyncio.sleep(3)
        await asyncio.to_thread(triton.start)
        records = await read_all(kafka_settings, kafka_topics["text.enriched"], expect=len(events), timeout_s=300)
        waited = classify.state.metrics.inference_unavailable.labels("classify")._value.get()
    assert stopped_at < len(events), "the replay finished before Triton was stopped"
    enriched = by_id(records, EnrichedEvent)
    check_enriched(events, enriched)
    # check_enriched: sentiment on every event, from finance (social/news/review) or support
    assert waited > 0, "classify never saw Triton unavailable"
