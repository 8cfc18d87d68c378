"""The in-process backend and the codec on the tiny exported models (real tokenizers and weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.ci import missing
from tests.support.inference import build_tiny_repo, tiny_repo_from_env
from textpulse.ml.predictor import Predictor

from .backend import HeadSpec
from .codec import Codec
from .errors import ModelMismatch
from .local import LocalBackend

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TEXTS = [
    "$AAPL falls 3% after Goldman Sachs downgrade",
    "Fed holds rates steady",
    "I want to transfer money to my savings account, what is my balance at Bank of America?",
    "ok",
]


@pytest.fixture(scope="module")
def repo() -> Path:
    try:
        return build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("the tiny model repository", f"cannot be built (make test-models): {exc}")


@pytest.mark.parametrize("name", ["sentiment", "intent", "ner"])
def test_codec_matches_predictor(repo: Path, name: str) -> None:
    predictor = Predictor(repo / name)
    codec = Codec(predictor.directory, name)
    assert list(codec.info.labels) == predictor.labels
    ours, theirs = codec.encode(TEXTS), predictor.encode(TEXTS)
    np.testing.assert_array_equal(ours.input_ids, theirs.input_ids)
    np.testing.assert_array_equal(ours.attention_mask, theirs.attention_mask)
    logits = predictor.logits(ours.input_ids, ours.attention_mask)
    if codec.info.kind == "token":
        expected = predictor.decode_entities(TEXTS, theirs, logits)
        got = codec.decode_tokens(TEXTS, ours, logits)
        assert [[(s.type, s.start, s.end, s.surface) for s in row] for row in got] == [
            [(e["entity"], e["start"], e["end"], e["text"]) for e in row] for row in expected
        ]
    else:
        expected_seq = predictor.decode_sequence(logits)
        got_seq = codec.decode_sequence(logits)
        assert [p.label for p in got_seq] == [e["label"] for e in expected_seq]
        assert all(p.model.name == name for p in got_seq)


async def test_local_backend_batches_and_preserves_order(repo: Path) -> None:
    backend = LocalBackend(repo, batch_size=2, threads=1)
    await backend.start(["sentiment", "ner"])
    try:
        many = [TEXTS[i % len(TEXTS)] for i in range(9)]
        preds = await backend.classify("sentiment", many)
        single = [(await backend.classify("sentiment", [t]))[0] for t in many]
        assert [p.label for p in preds] == [p.label for p in single]
        for a, b in zip(preds, single, strict=True):
            assert abs(a.score - b.score) < 1e-4
        assert preds[0].model.version == backend.info("sentiment").version
        spans = await backend.tag("ner", many)
        for text, row in zip(many, spans, strict=True):
            for span in row:
                assert text[span.start : span.end] == span.surface
        with pytest.raises(ModelMismatch):
            await backend.tag("sentiment", ["x"])
    finally:
        await backend.close()


async def test_classify_heads_is_one_pass_that_matches_the_predictor(repo: Path) -> None:
    """Multi-head ``finance``: every head from one forward pass, equal to Predictor.predict's heads."""
    passes: list[int] = []
    backend = LocalBackend(repo, batch_size=8, threads=1, observe=lambda _m, _s, n: passes.append(n))
    await backend.start(["finance", "support"], [HeadSpec("finance", "topic"), HeadSpec("support", "sentiment")])
    try:
        info = backend.info("finance")
        assert info.primary_head == "sentiment"
        assert [h.output for h in info.heads().values()] == ["logits", "logits_topic"]
        heads = await backend.classify_heads("finance", TEXTS, ["sentiment", "topic"])
        assert passes == [len(TEXTS)]  # one forward pass answered both heads
        expected = Predictor(repo / "finance").predict(TEXTS)
        assert [p.label for p in heads["sentiment"]] == [e["label"] for e in expected]
        assert [p.label for p in heads["topic"]] == [e["heads"]["topic"]["label"] for e in expected]
        for got, want in zip(heads["topic"], expected, strict=True):
            assert abs(got.score - want["heads"]["topic"]["score"]) < 1e-4
            assert set(got.scores) == set(info.head("topic").labels)
        assert [p.label for p in await backend.classify("finance", TEXTS)] == [p.label for p in heads["sentiment"]]
        support = await backend.classify_heads("support", TEXTS, ["clinc150", "sentiment"])
        primary = backend.info("support").head(None)
        assert primary.name == "clinc150"
        assert primary.oos_label == "oos"
        assert backend.info("support").head("sentiment").oos_threshold is None
        assert all(not p.out_of_scope for p in support["sentiment"])
        assert all(p.out_of_scope == (p.label == "oos") for p in support["clinc150"])
        with pytest.raises(ModelMismatch, match="no head 'intent'"):
            await backend.classify_heads("support", TEXTS, ["intent"])
    finally:
        await backend.close()


async def test_start_fails_on_a_missing_head_with_one_line(repo: Path) -> None:
    backend = LocalBackend(repo, threads=1)
    try:
        with pytest.raises(ModelMismatch, match=r"support:intent: model 'support' v1 has no head 'intent'") as err:
            await backend.start(["support"], [HeadSpec("support", "intent")])
        assert "\n" not in str(err.value)
    finally:
        await backend.close()


async def test_local_backend_missing_model_fails_fast(tmp_path: Path) -> None:
    with pytest.raises(ModelMismatch, match="not found"):
        await LocalBackend(tmp_path).start(["sentiment"])
