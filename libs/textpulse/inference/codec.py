"""Pre- and post-processing shared by both backends: text → ids, logits → labels/spans.

Mirrors :class:`textpulse.ml.predictor.Predictor` (``encode``,
``decode_sequence``, ``decode_entities``) without loading weights, so the
Triton client needs only the tokenizer and label files of the model version
the server reports. ``test_codec.py`` checks it agrees with the Predictor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textpulse.ml.inference import softmax
from textpulse.ml.predictor import EncodedBatch, load_tokenizer
from textpulse.ml.settings import offline_hub
from textpulse.ml.tokenization import first_subtoken_positions, spans_from_tags, split_words

from .backend import ModelInfo
from .errors import ModelMismatch
from .types import Prediction, Span


def version_dirs(model_root: Path) -> list[Path]:
    """Numeric version folders of a model, oldest first."""
    if not model_root.is_dir():
        return []
    return sorted((p for p in model_root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def resolve_version(model_repo: Path, name: str, version: str | None = None) -> Path:
    """``<repo>/<name>/<version>`` (latest when ``version`` is None); ModelMismatch when absent."""
    root = model_repo / name
    if version is not None:
        path = root / version
        if (path / "config.json").is_file():
            return path
        msg = f"model {name!r} version {version} has no files under {path} (is TEXTPULSE_MODEL_REPO right?)"
        raise ModelMismatch(msg)
    versions = version_dirs(root)
    if not versions:
        msg = f"model {name!r} not found in {model_repo} (run `make models` or set TEXTPULSE_MODEL_REPO)"
        raise ModelMismatch(msg)
    return versions[-1]


class Codec:
    """Tokenizer and labels of one model version."""

    def __init__(self, version_dir: Path, name: str) -> None:
        offline_hub()
        config = json.loads((version_dir / "config.json").read_text("utf-8"))
        meta: dict[str, Any] = dict(config.get("textpulse") or {})
        id2label_path = version_dir / "id2label.json"
        raw = json.loads(id2label_path.read_text("utf-8")) if id2label_path.is_file() else config["id2label"]
        labels = tuple(str(raw[str(i)]) for i in range(len(raw)))
        kind = meta.get("kind", "sequence")
        if kind not in {"sequence", "token"}:
            msg = f"{version_dir}: unknown model kind {kind!r}"
            raise ModelMismatch(msg)
        self.directory = version_dir
        self.info = ModelInfo(
            name=name,
            version=version_dir.name,
            kind=kind,
            labels=labels,
            oos_label=meta.get("oos_label"),
            oos_threshold=meta.get("oos_threshold"),
            max_length=int(meta.get("max_length", 128)),
            task=meta.get("task"),
            extra_heads=tuple(
                (str(head), tuple(str(label) for label in head_labels))
                for head, head_labels in dict(meta.get("extra_heads") or {}).items()
            ),
        )
        try:  # torch-free: AutoTokenizer would import torch (~500 MB) into ONNX Runtime services
            self.tokenizer = load_tokenizer(version_dir)
        except FileNotFoundError as exc:
            raise ModelMismatch(str(exc)) from exc

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Tokenise and pad (int64); token models split words first to map tags back to characters."""
        if self.info.kind == "token":
            words = [split_words(t) for t in texts]
            encoded = self.tokenizer(
                [[w.text for w in ws] or [""] for ws in words],
                is_split_into_words=True,
                truncation=True,
                max_length=self.info.max_length,
                padding=True,
                return_tensors="np",
            )
            word_ids = [encoded.word_ids(i) for i in range(len(texts))]
            return EncodedBatch(_i64(encoded["input_ids"]), _i64(encoded["attention_mask"]), words, word_ids)
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=self.info.max_length, padding=True, return_tensors="np"
        )
        return EncodedBatch(_i64(encoded["input_ids"]), _i64(encoded["attention_mask"]))

    def decode_sequence(self, logits: np.ndarray, head: str | None = None) -> list[Prediction]:
        """Softmax → label of ``head`` (None: the primary); below a calibrated threshold the oos label.

        Only a head whose model metadata names an oos label and threshold (the primary head
        of a CLINC150-style intent model) applies one; the labels are that head's own.
        """
        spec = self.info.head(head)
        ref = self.info.ref
        probs = softmax(np.asarray(logits, dtype=np.float32))
        out = []
        for row in probs:
            best = int(row.argmax())
            label = spec.labels[best]
            if spec.oos_label and spec.oos_threshold is not None and row[best] < spec.oos_threshold:
                label = spec.oos_label
            scores = {name: float(p) for name, p in zip(spec.labels, row, strict=True)}
            out.append(Prediction(label, float(row[best]), scores, ref, out_of_scope=label == spec.oos_label))
        return out

    def decode_tokens(self, texts: Sequence[str], batch: EncodedBatch, logits: np.ndarray) -> list[list[Span]]:
        """Tag of a word = argmax at its first sub-token; BIO tags → character spans."""
        probs = softmax(np.asarray(logits, dtype=np.float32))
        out: list[list[Span]] = []
        for index, text in enumerate(texts):
            words = (batch.words or [])[index]
            positions = first_subtoken_positions((batch.word_ids or [])[index])
            tags, scores = [], []
            for word_index in range(len(words)):
                position = positions.get(word_index)
                if position is None or position >= probs.shape[1]:  # truncated away
                    tags.append("O")
                    scores.append(1.0)
                    continue
                best = int(probs[index, position].argmax())
                tags.append(self.info.labels[best])
                scores.append(float(probs[index, position, best]))
            spans = spans_from_tags(words, tags, scores, text)
            out.append([Span(s["entity"], s["start"], s["end"], s["text"], float(s["score"])) for s in spans])
        return out


def _i64(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int64)


def length_sorted_chunks(texts: Sequence[str], size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in chunks of ``size``, sorted by characters (fixed-size batches, e.g. bench_int8).

    The backends cut by tokens instead: :func:`plan_chunks`.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


#: Padded tokens (rows × longest row) of one forward pass / Triton request by default. On 512 tweets in
#: polls of 256 (sentiment, ONNX Runtime fp32, 2 threads, shared 2-core box) 768-1024 cost the least CPU:
#: 4.1-4.4 s against 5.2-5.4 s at 4096 (padded/real tokens 1.11 against 1.28).
DEFAULT_MAX_BATCH_TOKENS = 1024

#: ``(model, texts)`` each time texts longer than the model's ``max_length`` are truncated.
TruncationObserver = Callable[[str, int], None]


def token_budget_chunks(
    lengths: Sequence[int], max_rows: int, max_tokens: int, max_length: int | None = None
) -> list[list[int]]:
    """Indices of the texts in chunks, one forward pass each, so that padding stays small.

    ``lengths`` are token counts (special tokens included). A chunk is padded to
    its longest row, capped at ``max_length`` (the encoder truncates longer
    texts), so it costs rows × longest tokens: texts are sorted by length and a
    chunk is cut before it would exceed ``max_rows`` rows or ``max_tokens``
    padded tokens. A single row longer than the budget gets a chunk of its own.
    Every index appears exactly once; scatter results back by index.
    """
    if max_rows < 1 or max_tokens < 1:
        msg = f"max_rows and max_tokens must be >= 1, got {max_rows} and {max_tokens}"
        raise ValueError(msg)
    cap = max_length if max_length is not None else max(lengths, default=1)
    padded = [max(1, min(int(n), cap)) for n in lengths]
    chunks: list[list[int]] = []
    current: list[int] = []
    for index in sorted(range(len(padded)), key=padded.__getitem__):
        # Ascending order: the row being added is the longest of the chunk.
        if current and (len(current) >= max_rows or (len(current) + 1) * padded[index] > max_tokens):
            chunks.append(current)
            current = []
        current.append(index)
    if current:
        chunks.append(current)
    return chunks


def token_lengths(codec: Codec, texts: Sequence[str]) -> list[int]:
    """Tokens of each text as :meth:`Codec.encode` would see them, before truncation (specials included).

    One extra pass of the Rust tokenizer (tens of microseconds per tweet, well
    under 1% of the forward pass it plans).
    """
    if not texts:
        return []
    if codec.info.kind == "token":
        words = [[w.text for w in split_words(t)] or [""] for t in texts]
        ids = codec.tokenizer(words, is_split_into_words=True, truncation=False, padding=False, verbose=False)
    else:
        ids = codec.tokenizer(list(texts), truncation=False, padding=False, verbose=False)
    return [len(row) for row in ids["input_ids"]]


def plan_chunks(
    codec: Codec,
    texts: Sequence[str],
    *,
    max_rows: int,
    max_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    on_truncate: TruncationObserver | None = None,
) -> list[list[int]]:
    """:func:`token_budget_chunks` of ``texts`` for ``codec``'s model; reports texts that will be truncated.

    Texts longer than the model's ``max_length`` are kept (truncated by the
    encoder, never dropped) and counted through ``on_truncate``.
    """
    lengths = token_lengths(codec, texts)
    limit = codec.info.max_length
    truncated = sum(n > limit for n in lengths)
    if truncated and on_truncate is not None:
        on_truncate(codec.info.name, truncated)
    return token_budget_chunks(lengths, max_rows, max_tokens, limit)
