"""Tokenise once: the chunk planner's tokenisation feeds the model, with the inputs the old two-pass path built.

Before, :func:`plan_chunks` tokenised every text to measure it and each chunk was
tokenised again by ``tokenizer(part, truncation=True, max_length=..., padding=True)``.
These tests keep that second call as the reference and assert that the single pass
gives the same ``input_ids``, ``attention_mask`` and ``word_ids`` for every chunk, on
short and on truncated texts, sequence and token models, right and left
truncation/padding, through the codec, the in-process backend and the Triton client
(which tokenises client-side). A small BERT-style WordPiece tokenizer is built in the
test, so no model files are needed; ``test_local_outputs_unchanged_on_the_tiny_models``
checks the real tiny models' outputs (slow).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from textpulse.ml.inference import softmax
from textpulse.ml.predictor import EncodedBatch, load_tokenizer
from textpulse.ml.tokenization import first_subtoken_positions, spans_from_tags, split_words

from .codec import Codec, plan_chunks, token_budget_chunks
from .errors import ModelMismatch
from .local import LocalBackend
from .triton import TritonBackend
from .types import Prediction, Span

MAX_LENGTH = 12
LONG = "Goldman Sachs downgrades $AAPL after the Fed holds rates steady " * 4
TEXTS = [
    "Fed holds rates steady",
    LONG,  # far over max_length: truncated
    "ok",
    "",
    "$AAPL falls 3% after Goldman Sachs downgrade",
    "stocks rally as bonds slip, café owners cheer",  # accents, punctuation, an unknown word
    "unbelievable earnings",  # words split into several word pieces
    "[CLS] a special token typed in the text",
    LONG[:70],
    "x " * (MAX_LENGTH - 2),  # exactly max_length with its special tokens: not truncated
    "x " * (MAX_LENGTH - 1),  # one over
]
WORDS = sorted({w for t in TEXTS for w in t.lower().replace(",", " , ").replace("$", " $ ").split()})


def _tokenizer_json() -> dict[str, Any]:
    """A BERT-style WordPiece tokenizer ([CLS] $A [SEP]) over the words of TEXTS, a few split in pieces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*specials, *(w for w in WORDS if w not in {"unbelievable", "earnings", "café"})]
    vocab += ["un", "##bel", "##ie", "##vable", "earn", "##ings", "cafe", "%"]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(dict.fromkeys(vocab))}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer.add_special_tokens(specials)
    # the file may carry truncation/padding left by the exporter's last call: the codec must not depend on it
    tokenizer.enable_truncation(5)
    tokenizer.enable_padding(length=7)
    loaded: dict[str, Any] = json.loads(tokenizer.to_str())
    return loaded


def version_dir(root: Path, kind: str, side: str = "right") -> Path:
    """A model version folder with only what the codec reads: config, labels, tokenizer."""
    path = root / f"{kind}-{side}" / "1"
    path.mkdir(parents=True)
    labels = ["O", "B-ORG", "I-ORG"] if kind == "token" else ["neg", "neu", "pos"]
    config = {"id2label": dict(enumerate(labels)), "textpulse": {"kind": kind, "max_length": MAX_LENGTH}}
    (path / "config.json").write_text(json.dumps(config), "utf-8")
    (path / "tokenizer.json").write_text(json.dumps(_tokenizer_json()), "utf-8")
    tokenizer_config = {
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "mask_token": "[MASK]",
        "model_max_length": 512,
        "padding_side": side,
        "truncation_side": side,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), "utf-8")
    return path


def hf(codec: Codec) -> Any:
    """transformers' fast tokenizer over the codec's files: the reference (the codec itself reads them without it)."""
    return load_tokenizer(codec.directory)


def two_pass(codec: Codec, texts: Sequence[str]) -> EncodedBatch:
    """The inputs the old path built for one chunk: the tokenizer's own truncating, padding call."""
    tokenizer = hf(codec)
    if codec.info.kind == "token":
        words = [split_words(t) for t in texts]
        encoded = tokenizer(
            [[w.text for w in ws] or [""] for ws in words],
            is_split_into_words=True,
            truncation=True,
            max_length=codec.info.max_length,
            padding=True,
            return_tensors="np",
        )
        word_ids = [encoded.word_ids(i) for i in range(len(texts))]
        return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], words, word_ids)
    encoded = tokenizer(
        list(texts), truncation=True, max_length=codec.info.max_length, padding=True, return_tensors="np"
    )
    return EncodedBatch(encoded["input_ids"], encoded["attention_mask"])


def old_lengths(codec: Codec, texts: Sequence[str]) -> list[int]:
    """The old planner's lengths: a separate untruncated pass with special tokens."""
    tokenizer = hf(codec)
    if codec.info.kind == "token":
        words = [[w.text for w in split_words(t)] or [""] for t in texts]
        ids = tokenizer(words, is_split_into_words=True, truncation=False, padding=False, verbose=False)
    else:
        ids = tokenizer(list(texts), truncation=False, padding=False, verbose=False)
    return [len(row) for row in ids["input_ids"]]


def assert_same(got: EncodedBatch, want: EncodedBatch) -> None:
    assert got.input_ids.dtype == np.int64
    assert got.attention_mask.dtype == np.int64
    np.testing.assert_array_equal(got.input_ids, want.input_ids)
    np.testing.assert_array_equal(got.attention_mask, want.attention_mask)
    assert got.word_ids == want.word_ids
    assert got.words == want.words


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("kind", ["sequence", "token"])
def test_planned_chunks_feed_the_model_what_two_passes_did(tmp_path: Path, kind: str, side: str) -> None:
    codec = Codec(version_dir(tmp_path, kind, side), "m")
    assert old_lengths(codec, TEXTS) == codec.tokenize(TEXTS).lengths
    truncated: list[int] = []
    plan = plan_chunks(codec, TEXTS, max_rows=3, max_tokens=40, on_truncate=lambda _m, n: truncated.append(n))
    assert plan.chunks == token_budget_chunks(old_lengths(codec, TEXTS), 3, 40, MAX_LENGTH)
    assert len(plan.chunks) > 1
    assert truncated == [sum(n > MAX_LENGTH for n in old_lengths(codec, TEXTS))]
    assert truncated[0] >= 3  # LONG, LONG[:70] and the one-over text
    for chunk in plan.chunks:
        assert_same(codec.batch(plan.tokenized, chunk), two_pass(codec, [TEXTS[i] for i in chunk]))
    # one padded batch of everything, and single texts (no padding at all)
    assert_same(codec.encode(TEXTS), two_pass(codec, TEXTS))
    for text in TEXTS:
        assert_same(codec.encode([text]), two_pass(codec, [text]))
    # planning does not change the tokenised rows: a second batch of the same rows is the same
    assert_same(codec.batch(plan.tokenized, plan.chunks[0]), codec.batch(plan.tokenized, plan.chunks[0]))


@pytest.mark.parametrize("kind", ["sequence", "token"])
def test_padding_settings_from_tokenizer_json_as_transformers_reads_them(tmp_path: Path, kind: str) -> None:
    """Without pad token and sides in tokenizer_config.json, the codec takes tokenizer.json's, as transformers does."""
    path = version_dir(tmp_path, kind)
    config = json.loads((path / "tokenizer_config.json").read_text("utf-8"))
    for key in ("pad_token", "padding_side", "truncation_side"):
        del config[key]
    (path / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")
    tokenizer = json.loads((path / "tokenizer.json").read_text("utf-8"))
    tokenizer["padding"]["direction"] = "Left"
    tokenizer["truncation"]["direction"] = "Left"
    (path / "tokenizer.json").write_text(json.dumps(tokenizer), "utf-8")
    codec = Codec(path, "m")
    reference = hf(codec)
    assert (codec.tokenizer.pad_token, codec.tokenizer.pad_token_id) == (reference.pad_token, reference.pad_token_id)
    assert (codec.tokenizer.padding_side, codec.tokenizer.truncation_side) == ("left", "left")
    assert (reference.padding_side, reference.truncation_side) == ("left", "left")
    assert_same(codec.encode(TEXTS), two_pass(codec, TEXTS))
    assert codec.tokenize([LONG]).lengths[0] > MAX_LENGTH  # the file's truncation (5) is not the codec's


def test_a_tokenizer_without_padding_token_fails_at_load(tmp_path: Path) -> None:
    path = version_dir(tmp_path, "sequence")
    config = json.loads((path / "tokenizer_config.json").read_text("utf-8"))
    del config["pad_token"]
    (path / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")
    tokenizer = json.loads((path / "tokenizer.json").read_text("utf-8"))
    tokenizer["padding"] = None  # nor a padding token in the tokenizer's own file
    (path / "tokenizer.json").write_text(json.dumps(tokenizer), "utf-8")
    with pytest.raises(ModelMismatch, match="no padding token"):
        Codec(path, "m")


def fake_logits(ids: np.ndarray, mask: np.ndarray, kind: str, labels: int = 3) -> np.ndarray:
    """Deterministic logits that depend on every input id and mask value (so any change in inputs shows)."""
    weights = np.arange(1, labels + 1, dtype=np.float32)
    if kind == "token":
        token: np.ndarray = ((ids * mask)[..., None] % 5).astype(np.float32) * weights
        return token
    sequence: np.ndarray = (((ids * mask).sum(axis=1, keepdims=True) % 11).astype(np.float32) * weights) / 10
    return sequence


class RecordingPredictor:
    """Stands in for the in-process model: records the inputs of each forward pass."""

    #: not "onnx": the backend runs its chunks one at a time, so the recorded order is the plan's
    #: (the streams layout is checked on real ONNX graphs in tests/ml/test_onnx_runtime.py)
    runtime = "torch"

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.inputs: list[tuple[np.ndarray, np.ndarray]] = []

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.inputs.append((input_ids, attention_mask))
        return fake_logits(input_ids, attention_mask, self.kind)

    def all_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        return {"logits": self.logits(input_ids, attention_mask)}


def expected(codec: Codec, texts: Sequence[str], chunks: Sequence[Sequence[int]]) -> tuple[list[Any], list[Any]]:
    """Inputs and decoded results of the old path, chunk by chunk, scattered back in text order."""
    inputs: list[Any] = []
    results: list[Any] = [None] * len(texts)
    for chunk in chunks:
        part = [texts[i] for i in chunk]
        batch = two_pass(codec, part)
        inputs.append((batch.input_ids, batch.attention_mask))
        logits = fake_logits(batch.input_ids, batch.attention_mask, codec.info.kind)
        decoded = (
            codec.decode_tokens(part, batch, logits) if codec.info.kind == "token" else codec.decode_sequence(logits)
        )
        for index, value in zip(chunk, decoded, strict=True):
            results[index] = value
    return inputs, results


def assert_inputs(got: Sequence[tuple[np.ndarray, np.ndarray]], want: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    assert len(got) == len(want)
    for (ids, mask), (want_ids, want_mask) in zip(got, want, strict=True):
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_array_equal(mask, want_mask)


@pytest.mark.parametrize("kind", ["sequence", "token"])
async def test_local_backend_inputs_and_outputs_unchanged(tmp_path: Path, kind: str) -> None:
    codec = Codec(version_dir(tmp_path, kind), "m")
    backend = LocalBackend(tmp_path, batch_size=3, max_batch_tokens=40)
    predictor = RecordingPredictor(kind)
    backend._codecs["m"], backend._predictors["m"] = codec, predictor  # type: ignore[assignment]
    try:
        got = await (backend.tag("m", TEXTS) if kind == "token" else backend.classify("m", TEXTS))
    finally:
        await backend.close()
    chunks = token_budget_chunks(old_lengths(codec, TEXTS), 3, 40, MAX_LENGTH)
    want_inputs, want = expected(codec, TEXTS, chunks)
    assert_inputs(predictor.inputs, want_inputs)
    assert got == want


@pytest.mark.parametrize("kind", ["sequence", "token"])
async def test_triton_client_inputs_and_outputs_unchanged(tmp_path: Path, kind: str) -> None:
    """The Triton client tokenises client-side: the tensors it sends are the old path's, chunk by chunk."""
    codec = Codec(version_dir(tmp_path, kind), "m")
    codec.info = replace(codec.info, max_batch_size=3)
    backend = TritonBackend("fake:1", tmp_path, batch_size=8, max_batch_tokens=40)
    backend._codecs["m"] = codec
    sent: list[tuple[np.ndarray, np.ndarray]] = []

    async def outputs(
        _model: str, input_ids: np.ndarray, attention_mask: np.ndarray, names: Sequence[str]
    ) -> dict[str, np.ndarray]:
        sent.append((input_ids, attention_mask))
        return {name: fake_logits(input_ids, attention_mask, kind) for name in names}

    backend._outputs = outputs  # type: ignore[method-assign,assignment]
    got = await (backend.tag("m", TEXTS) if kind == "token" else backend.classify("m", TEXTS))
    chunks = token_budget_chunks(old_lengths(codec, TEXTS), 3, 40, MAX_LENGTH)  # rows capped by max_batch_size
    want_inputs, want = expected(codec, TEXTS, chunks)
    assert_inputs(sent, want_inputs)
    assert got == want


def per_row_sequence(codec: Codec, logits: np.ndarray, head: str | None = None) -> list[Prediction]:
    """The decoding before it was vectorised: one argmax and one float() per row and label."""
    spec, out = codec.info.head(head), []
    for row in softmax(np.asarray(logits, dtype=np.float32)):
        best = int(row.argmax())
        label = spec.labels[best]
        if spec.oos_label and spec.oos_threshold is not None and row[best] < spec.oos_threshold:
            label = spec.oos_label
        scores = {name: float(p) for name, p in zip(spec.labels, row, strict=True)}
        out.append(Prediction(label, float(row[best]), scores, codec.info.ref, out_of_scope=label == spec.oos_label))
    return out


def per_word_tokens(codec: Codec, texts: Sequence[str], batch: EncodedBatch, logits: np.ndarray) -> list[list[Span]]:
    """The token decoding before it was vectorised: one argmax per word."""
    probs, out = softmax(np.asarray(logits, dtype=np.float32)), []
    for index, text in enumerate(texts):
        words = (batch.words or [])[index]
        positions = first_subtoken_positions((batch.word_ids or [])[index])
        tags, scores = [], []
        for word_index in range(len(words)):
            position = positions.get(word_index)
            if position is None or position >= probs.shape[1]:
                tags.append("O")
                scores.append(1.0)
                continue
            best = int(probs[index, position].argmax())
            tags.append(codec.info.labels[best])
            scores.append(float(probs[index, position, best]))
        spans = spans_from_tags(words, tags, scores, text)
        out.append([Span(s["entity"], s["start"], s["end"], s["text"], float(s["score"])) for s in spans])
    return out


def test_decoding_is_the_per_row_decoding(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    sequence = Codec(version_dir(tmp_path, "sequence"), "m")
    logits = rng.normal(0, 2, (64, 3)).astype(np.float32)
    logits[:4] = [[0, 0, 0], [1, 1, 0], [5, 0, 0], [-1, -1, -1]]  # ties: the first label wins in both
    assert sequence.decode_sequence(logits) == per_row_sequence(sequence, logits)
    # an oos head: thresholds at and around the very scores, so float32-vs-threshold rounding would show
    probs = softmax(logits).max(axis=-1)
    for threshold in (0.5, float(probs[10]), float(np.float32(probs[11])) + 1e-12, float(np.median(probs))):
        sequence.info = replace(sequence.info, oos_label="neu", oos_threshold=threshold)
        got = sequence.decode_sequence(logits)
        assert got == per_row_sequence(sequence, logits)
        assert any(p.out_of_scope for p in got)
    token = Codec(version_dir(tmp_path, "token"), "m")
    batch = token.encode(TEXTS)
    logits = rng.normal(0, 2, (*batch.input_ids.shape, 3)).astype(np.float32)
    assert token.decode_tokens(TEXTS, batch, logits) == per_word_tokens(token, TEXTS, batch, logits)
    assert any(token.decode_tokens(TEXTS, batch, logits))  # some spans, so the comparison means something


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_local_outputs_unchanged_on_the_tiny_models() -> None:
    """Real tokenizers and weights: every head's predictions equal the two-pass path's, chunk for chunk."""
    from tests.ci import missing
    from tests.support.inference import build_tiny_repo, tiny_repo_from_env
    from textpulse.ml.predictor import Predictor

    try:
        repo = build_tiny_repo(tiny_repo_from_env())
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        missing("the tiny model repository", f"cannot be built (make test-models): {exc}")
    texts = [*TEXTS, "$TSLA " * 80, "Apple and Microsoft report earnings in New York"]
    backend = LocalBackend(repo, batch_size=4, max_batch_tokens=96, threads=1)
    await backend.start(["finance", "ner"])
    try:
        heads = await backend.classify_heads("finance", texts, ["sentiment", "topic"])
        spans = await backend.tag("ner", texts)
    finally:
        await backend.close()
    for name in ("finance", "ner"):
        predictor = Predictor(repo / name, threads=1)
        codec = Codec(predictor.directory, name)
        chunks = token_budget_chunks(old_lengths(codec, texts), 4, 96, codec.info.max_length)
        for chunk in chunks:
            part = [texts[i] for i in chunk]
            batch = two_pass(codec, part)
            outputs = predictor.all_logits(batch.input_ids, batch.attention_mask)
            if name == "ner":
                assert [spans[i] for i in chunk] == codec.decode_tokens(part, batch, outputs["logits"])
                continue
            for head in ("sentiment", "topic"):
                want = codec.decode_sequence(outputs[codec.info.head(head).output], head)
                assert [heads[head][i] for i in chunk] == want
