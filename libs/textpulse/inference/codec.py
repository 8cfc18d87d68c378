"""Pre- and post-processing shared by both backends: text → ids, logits → labels/spans.

Mirrors :class:`textpulse.ml.predictor.Predictor` (``encode``,
``decode_sequence``, ``decode_entities``) without loading weights, so the
Triton client needs only the tokenizer and label files of the model version
the server reports. ``test_codec.py`` checks it agrees with the Predictor.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textpulse.ml.inference import softmax
from textpulse.ml.predictor import EncodedBatch
from textpulse.ml.settings import offline_hub
from textpulse.ml.social import check_text_normalisation, model_text
from textpulse.ml.tokenization import Word, first_subtoken_positions, spans_from_tags, split_words

from .backend import ModelInfo
from .errors import ModelMismatch
from .tokenizer import load_rust_tokenizer
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


@dataclass(slots=True)
class Tokenized:
    """Texts tokenised once, before truncation and without special tokens (see :meth:`Codec.tokenize`).

    ``encodings`` are the Rust tokenizer's, one per text; ``lengths`` the tokens each text
    needs with its special tokens, before truncation; ``words`` only for token models.
    """

    encodings: list[Any]
    lengths: list[int]
    words: list[list[Word]] | None = None


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
        try:  # a model that names an unknown normalisation would see other text than it was trained on
            self.normalisation = check_text_normalisation(meta.get("text_normalisation"))
        except ValueError as exc:
            raise ModelMismatch(f"{version_dir}: {exc}") from None
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
        try:  # the Rust tokenizer alone: transformers (and with it torch) is not in the serving images
            self.tokenizer = load_rust_tokenizer(version_dir)
        except FileNotFoundError as exc:
            raise ModelMismatch(str(exc)) from exc
        self._raw, self._post = self._backend_tokenizers()
        # without offsets where the installed tokenizers has it (word ids survive only in encode_batch)
        self._raw_fast = getattr(self._raw, "encode_batch_fast", self._raw.encode_batch)
        self._specials = int(self._raw.num_special_tokens_to_add(is_pair=False))
        if self.tokenizer.pad_token_id is None:  # batches are padded: say so at start-up, not on the first poll
            msg = f"{version_dir}: the tokenizer has no padding token (tokenizer_config.json pad_token)"
            raise ModelMismatch(msg)
        self._pad_side = self.tokenizer.padding_side
        self._pad_id = int(self.tokenizer.pad_token_id)
        self._pad_token = str(self.tokenizer.pad_token)

    def _backend_tokenizers(self) -> tuple[Any, Any]:
        """Two copies of the Rust tokenizer: one encodes without truncation or special tokens (what
        plans the chunks), one post-processes a row for the model (truncation at ``max_length`` then
        the special tokens), each configured once here, as ``PreTrainedTokenizerFast.__call__`` would
        (truncation side, strategy; ``encode_special_tokens``).
        """
        raw = copy.deepcopy(self.tokenizer.tokenizer)  # already without truncation or padding
        raw.encode_special_tokens = self.tokenizer.split_special_tokens
        post = copy.deepcopy(raw)
        post.enable_truncation(
            self.info.max_length, stride=0, strategy="longest_first", direction=self.tokenizer.truncation_side
        )
        return raw, post

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        """Tokenise ``texts`` once: the lengths plan the chunks, :meth:`batch` turns rows into model inputs.

        Token models split words first (tags map back to characters through them).
        Sequence models skip the offsets (``encode_batch_fast``): nothing reads them.
        """
        if self.info.kind == "token":
            words = [split_words(t) for t in texts]
            pieces = [[w.text for w in ws] or [""] for ws in words]
            encodings = self._raw.encode_batch(pieces, is_pretokenized=True, add_special_tokens=False)
        else:
            words = None
            # the model's own text normalisation (its config), exactly as in its training rows
            shown = [model_text(t, self.normalisation) for t in texts] if self.normalisation != "none" else list(texts)
            encodings = self._raw_fast(shown, add_special_tokens=False)
        return Tokenized(encodings, [len(e) + self._specials for e in encodings], words)

    def batch(self, tokenized: Tokenized, indices: Sequence[int]) -> EncodedBatch:
        """Model inputs of the rows ``indices``: truncated to ``max_length``, special tokens, padded to the longest.

        The same ids, mask and ``word_ids`` as the tokenizer's own
        ``(texts, truncation=True, max_length=..., padding=True)`` call on those texts
        (``test_tokenize_once``): its truncation and post-processing are these steps of the Rust
        tokenizer, applied to the encodings :meth:`tokenize` already made.
        """
        rows = [self._post.post_process(tokenized.encodings[i]) for i in indices]
        longest = max((len(row) for row in rows), default=0)
        for row in rows:
            row.pad(longest, direction=self._pad_side, pad_id=self._pad_id, pad_token=self._pad_token)
        ids = np.array([row.ids for row in rows], dtype=np.int64).reshape(len(rows), longest)
        mask = np.array([row.attention_mask for row in rows], dtype=np.int64).reshape(len(rows), longest)
        if tokenized.words is None:
            return EncodedBatch(ids, mask)
        return EncodedBatch(ids, mask, [tokenized.words[i] for i in indices], [row.word_ids for row in rows])

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Tokenise and pad one batch (int64); token models split words first to map tags back to characters."""
        return self.batch(self.tokenize(texts), range(len(texts)))

    def decode_sequence(self, logits: np.ndarray, head: str | None = None) -> list[Prediction]:
        """Softmax → label of ``head`` (None: the primary); below a calibrated threshold the oos label.

        Only a head whose model metadata names an oos label and threshold (the primary head
        of a CLINC150-style intent model) applies one; the labels are that head's own.
        """
        spec = self.info.head(head)
        ref = self.info.ref
        probs = softmax(np.asarray(logits, dtype=np.float32))
        # whole-batch numpy, then plain Python rows: per-row argmax and per-label float() calls cost more
        best = probs.argmax(axis=-1)
        top = probs[np.arange(len(probs)), best]
        # float32 against the threshold, as the per-row comparison of a numpy scalar did
        below = (
            top < spec.oos_threshold
            if spec.oos_label and spec.oos_threshold is not None
            else np.zeros(len(probs), dtype=bool)
        )
        out = []
        for row, index, score, oos in zip(probs.tolist(), best.tolist(), top.tolist(), below.tolist(), strict=True):
            label = spec.oos_label if oos and spec.oos_label else spec.labels[index]
            scores = dict(zip(spec.labels, row, strict=True))
            out.append(Prediction(label, score, scores, ref, out_of_scope=label == spec.oos_label))
        return out

    def decode_tokens(self, texts: Sequence[str], batch: EncodedBatch, logits: np.ndarray) -> list[list[Span]]:
        """Tag of a word = argmax at its first sub-token; BIO tags → character spans."""
        probs = softmax(np.asarray(logits, dtype=np.float32))
        # argmax and its probability for every position at once, as Python lists (not per word)
        best = probs.argmax(axis=-1)
        best_rows = best.tolist()
        top_rows = np.take_along_axis(probs, best[..., None], axis=-1)[..., 0].tolist()
        labels, positions_in_batch = self.info.labels, probs.shape[1]
        out: list[list[Span]] = []
        for index, text in enumerate(texts):
            words = (batch.words or [])[index]
            positions = first_subtoken_positions((batch.word_ids or [])[index])
            row_best, row_top = best_rows[index], top_rows[index]
            tags, scores = [], []
            for word_index in range(len(words)):
                position = positions.get(word_index)
                if position is None or position >= positions_in_batch:  # truncated away
                    tags.append("O")
                    scores.append(1.0)
                    continue
                tags.append(labels[row_best[position]])
                scores.append(row_top[position])
            spans = spans_from_tags(words, tags, scores, text)
            out.append([Span(s["entity"], s["start"], s["end"], s["text"], float(s["score"])) for s in spans])
        return out


def length_sorted_chunks(texts: Sequence[str], size: int) -> Iterator[list[int]]:
    """Indices of ``texts`` in chunks of ``size``, sorted by characters (fixed-size batches, e.g. bench_int8).

    The backends cut by tokens instead: :func:`plan_chunks`.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), size):
        yield order[start : start + size]


#: Padded tokens (rows × longest row) of one forward pass / Triton request by default. First measured
#: with one chunk at a time on 2 intra-op threads (512 tweets in polls of 256, sentiment fp32): 768-1024
#: cost the least CPU (4.1-4.4 s against 5.2-5.4 s at 4096; padded/real tokens 1.11 against 1.28).
#: With single-thread streams (the default layout since) smaller chunks win: the bench's raw ceiling
#: (finance + ner int8, 2,000 tweets, 2 streams, two rounds) read 300/314 ev/s at 128, 304/319 at 256,
#: 323/338 at 512, 307/324 at 1024, 310/307 at 2048 (docs/models.md, "CPU layout").
DEFAULT_MAX_BATCH_TOKENS = 512

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
    """Tokens of each text as :meth:`Codec.encode` would see them, before truncation (specials included)."""
    return codec.tokenize(texts).lengths if texts else []


@dataclass(slots=True)
class Plan:
    """The texts of one call, tokenised once, in chunks of one forward pass each (indices into the texts)."""

    tokenized: Tokenized
    chunks: list[list[int]]


def plan_chunks(
    codec: Codec,
    texts: Sequence[str],
    *,
    max_rows: int,
    max_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    on_truncate: TruncationObserver | None = None,
) -> Plan:
    """:func:`token_budget_chunks` of ``texts`` for ``codec``'s model; reports texts that will be truncated.

    The tokenisation that measures the texts is kept in the plan: ``codec.batch(plan.tokenized,
    chunk)`` builds each chunk's model inputs from it, so every text is tokenised once. Texts
    longer than the model's ``max_length`` are kept (truncated there, never dropped) and counted
    through ``on_truncate``.
    """
    tokenized = codec.tokenize(texts)
    limit = codec.info.max_length
    truncated = sum(n > limit for n in tokenized.lengths)
    if truncated and on_truncate is not None:
        on_truncate(codec.info.name, truncated)
    return Plan(tokenized, token_budget_chunks(tokenized.lengths, max_rows, max_tokens, limit))
