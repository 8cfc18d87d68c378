"""Token-budget batching (codec.token_budget_chunks / plan_chunks) and the truncation count."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from .backend import ModelInfo
from .codec import Tokenized, plan_chunks, token_budget_chunks
from .metrics import InferenceMetrics

lengths_st = st.lists(st.integers(min_value=0, max_value=600), max_size=300)


@given(
    lengths=lengths_st,
    max_rows=st.integers(1, 128),
    max_tokens=st.integers(1, 8192),
    max_length=st.none() | st.integers(1, 512),
)
def test_every_index_once_and_budget_respected(
    lengths: list[int], max_rows: int, max_tokens: int, max_length: int | None
) -> None:
    chunks = token_budget_chunks(lengths, max_rows, max_tokens, max_length)
    flat = [i for chunk in chunks for i in chunk]
    assert sorted(flat) == list(range(len(lengths)))  # every text exactly once, none dropped
    cap = max_length if max_length is not None else max(lengths, default=1)
    for chunk in chunks:
        assert chunk
        assert len(chunk) <= max_rows
        padded = max(max(1, min(lengths[i], cap)) for i in chunk)
        assert padded <= max(1, cap)  # never padded past the model's max length
        # rows x longest row under the budget, except a single row that alone exceeds it
        assert len(chunk) * padded <= max_tokens or len(chunk) == 1


@given(lengths=lengths_st, max_rows=st.integers(1, 64), max_tokens=st.integers(1, 4096))
def test_results_scattered_by_index_restore_the_order(lengths: list[int], max_rows: int, max_tokens: int) -> None:
    texts = [f"text-{i}" for i in range(len(lengths))]
    results: list[str | None] = [None] * len(texts)
    for chunk in token_budget_chunks(lengths, max_rows, max_tokens, 128):
        for index, value in zip(chunk, [texts[i].upper() for i in chunk], strict=True):
            results[index] = value
    assert results == [t.upper() for t in texts]


def test_sorted_by_length_so_short_texts_share_a_chunk() -> None:
    lengths = [60, 5, 60, 6, 7, 60]
    assert token_budget_chunks(lengths, max_rows=64, max_tokens=130, max_length=64) == [[1, 3, 4], [0, 2], [5]]
    # the budget counts padded tokens of truncated texts at max_length, not their full length
    assert token_budget_chunks([500, 500], max_rows=8, max_tokens=128, max_length=64) == [[0, 1]]
    assert token_budget_chunks([], max_rows=8, max_tokens=128) == []
    with pytest.raises(ValueError, match="must be >= 1"):
        token_budget_chunks([1], max_rows=0, max_tokens=10)


@dataclass
class _Codec:
    """Whitespace 'tokenizer' with [CLS]/[SEP]: tokens = words + 2 (before truncation)."""

    info: ModelInfo

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        lengths = [len(text.split()) + 2 for text in texts]
        return Tokenized([None] * len(texts), lengths)


@pytest.mark.parametrize("kind", ["sequence", "token"])
def test_plan_counts_truncated_texts_and_keeps_them(kind: Any) -> None:
    codec = _Codec(ModelInfo("sentiment", "1", kind, ("a", "b"), max_length=8))
    texts = ["one two", "w " * 20, "three", "x " * 7, "y " * 6]  # 4, 22, 3, 9, 8 tokens
    seen: list[tuple[str, int]] = []
    plan = plan_chunks(codec, texts, max_rows=2, max_tokens=100, on_truncate=lambda m, n: seen.append((m, n)))  # type: ignore[arg-type]
    assert seen == [("sentiment", 2)]  # 22 and 9 tokens > max_length 8; exactly 8 is not truncated
    assert sorted(i for c in plan.chunks for i in c) == list(range(len(texts)))
    assert plan.chunks[0] == [2, 0]  # shortest first
    assert plan.tokenized.lengths == [4, 22, 3, 9, 8]  # the plan keeps its one tokenisation for the batches
    plan_chunks(codec, texts[:1], max_rows=2, on_truncate=lambda m, n: seen.append((m, n)))  # type: ignore[arg-type]
    assert seen == [("sentiment", 2)]  # nothing truncated: no call


def test_metrics_watch_counts_truncations_of_the_backend() -> None:
    class _Backend:
        name = "local"
        on_truncate: Any = None

    metrics, backend = InferenceMetrics("ner", enabled=True), _Backend()
    metrics.watch(backend)  # type: ignore[arg-type]
    backend.on_truncate("ner", 3)
    backend.on_truncate("ner", 2)
    text = generate_latest(metrics.registry).decode()
    assert 'textpulse_inference_truncated_texts_total{model="ner",service="ner"} 5.0' in text


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_local_backend_truncates_long_texts_counts_them_and_answers_all() -> None:
    from tests.ci import missing
    from tests.support.inference import build_tiny_repo, tiny_repo_from_env

    from .local import LocalBackend

    try:
        repo = build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("the tiny model repository", f"cannot be built (make test-models): {exc}")
    metrics = InferenceMetrics("classify", enabled=True)
    backend = LocalBackend(repo, batch_size=3, max_batch_tokens=64, threads=1)
    metrics.watch(backend)
    await backend.start(["sentiment"])
    try:
        limit = backend.info("sentiment").max_length
        texts = ["Fed holds rates steady", "$AAPL " * (limit * 2), "ok", "stocks rally " * limit, "bonds"]
        preds = await backend.classify("sentiment", texts)
        alone = [(await backend.classify("sentiment", [t]))[0] for t in texts]
    finally:
        await backend.close()
    assert [p.label for p in preds] == [p.label for p in alone]  # order restored, long texts kept
    text = generate_latest(metrics.registry).decode()
    # 2 truncated texts in the batch call, then 1 each in the two single calls that hold them
    assert 'textpulse_inference_truncated_texts_total{model="sentiment",service="classify"} 4.0' in text


def test_settings_default_budget_is_the_backends_default() -> None:
    from .codec import DEFAULT_MAX_BATCH_TOKENS
    from .settings import InferenceSettings

    assert InferenceSettings.model_fields["inference_max_batch_tokens"].default == DEFAULT_MAX_BATCH_TOKENS
