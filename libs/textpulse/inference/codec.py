"""Pre- and post-processing shared by both backends: text → ids, logits → labels/spans.

Mirrors :class:`textpulse.ml.predictor.Predictor` (``encode``,
``decode_sequence``, ``decode_entities``) without loading weights, so the
Triton client needs only the tokenizer and label files of the model version
the server reports. ``test_codec.py`` checks it agrees with the Predictor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textpulse.ml.inference import softmax
from textpulse.ml.predictor import EncodedBatch
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
        from transformers import AutoTokenizer

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
        )
        self.tokenizer = AutoTokenizer.from_pretrained(version_dir)
        if not getattr(self.tokenizer, "is_fast", False):
            msg = f"{version_dir}: a fast (Rust) tokenizer is required (tokenizer.json)"
            raise ModelMismatch(msg)

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

    def decode_sequence(self, logits: np.ndarray) -> list[Prediction]:
        """Softmax → label; below the calibrated threshold the label becomes the oos label."""
        info = self.info
        probs = softmax(np.asarray(logits, dtype=np.float32))
        out = []
        for row in probs:
            best = int(row.argmax())
            label = info.labels[best]
            if info.oos_label and info.oos_threshold is not None and row[best] < info.oos_threshold:
                label = info.oos_label
            scores = {name: float(p) for name, p in zip(info.labels, row, strict=True)}
            out.append(Prediction(label, float(row[best]), scores, info.ref, out_of_scope=label == info.oos_label))
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
    """Indices of ``texts`` in chunks of ``size``, sorted by length so padding wastes little."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]
