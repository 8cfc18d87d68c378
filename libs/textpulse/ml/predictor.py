"""In-process inference over a trained or exported model (ONNX Runtime or torch).

Also the reference pre/post-processing for remote (Triton) inference: a client
can call :meth:`Predictor.encode`, send the ids to Triton, and hand the logits
back to :meth:`Predictor.decode_sequence` / :meth:`Predictor.decode_entities`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from textpulse.ml.inference import softmax
from textpulse.ml.onnx_runtime import PRECISIONS, Precision, create_session, graph_path
from textpulse.ml.settings import offline_hub
from textpulse.ml.social import check_text_normalisation, model_text
from textpulse.ml.tokenization import Word, first_subtoken_positions, spans_from_tags, split_words

#: onnx (ONNX Runtime, CPU: the fused FP32 graph or the int8 one; no torch import), torch (FP32, or the
#: device's dtype; bf16 by cast), torch-int8 (= torch with precision int8: dynamic int8 Linear layers, CPU only).
Backend = Literal["torch", "torch-int8", "onnx"]


@dataclass(slots=True)
class EncodedBatch:
    """Padded ids for a batch of texts; ``words``/``word_ids`` only for token models."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    words: list[list[Word]] | None = None
    word_ids: list[list[int | None]] | None = None


def resolve_model_dir(path: Path) -> Path:
    """Accept a trained model dir, an exported version dir, or a Triton model dir (latest version)."""
    if (path / "config.json").is_file():
        return path
    versions = (
        sorted((int(p.name), p) for p in path.iterdir() if p.is_dir() and p.name.isdigit()) if path.is_dir() else []
    )
    if versions:
        return versions[-1][1]
    msg = f"{path} is neither a model directory (config.json) nor a Triton model with version folders"
    raise FileNotFoundError(msg)


#: tokenizer_config.json keys the generic fast tokenizer needs (the pipeline itself is in tokenizer.json)
_TOKENIZER_KEYS = ("model_max_length", "padding_side", "truncation_side")


def load_tokenizer(directory: Path) -> Any:
    """The model's fast (Rust) tokenizer, without importing torch.

    ``AutoTokenizer`` imports torch through ``transformers``' auto classes (~500 MB resident);
    ``PreTrainedTokenizerFast`` over ``tokenizer.json`` is the same Rust pipeline with the same
    call API (padding, truncation, ``is_split_into_words``, ``word_ids``).
    """
    offline_hub()
    try:
        from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast
    except ImportError:  # transformers 4.x
        from transformers import PreTrainedTokenizerFast

    path = directory / "tokenizer.json"
    if not path.is_file():
        msg = f"{directory}: a fast (Rust) tokenizer is required (tokenizer.json)"
        raise FileNotFoundError(msg)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    kwargs = {k: v for k, v in config.items() if (k.endswith("_token") or k in _TOKENIZER_KEYS) and v is not None}
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **kwargs)  # type: ignore[no-untyped-call]


def resolve_runtime(backend: str, precision: str | None) -> tuple[str, Precision]:
    """(runtime, precision) of a backend name; ``torch-int8`` is torch at int8."""
    if backend == "torch-int8":
        if precision not in {None, "int8"}:
            msg = f"backend torch-int8 is int8; got precision {precision!r}"
            raise ValueError(msg)
        return "torch", "int8"
    if backend not in {"torch", "onnx"}:
        msg = f"unknown backend {backend!r}: onnx, torch or torch-int8"
        raise ValueError(msg)
    resolved = precision or "fp32"
    if resolved not in PRECISIONS:
        msg = f"unknown precision {resolved!r}: {', '.join(PRECISIONS)}"
        raise ValueError(msg)
    return backend, resolved  # type: ignore[return-value]


class Predictor:
    """Classify texts or extract entities with a textpulse model."""

    def __init__(
        self,
        path: Path | str,
        *,
        backend: Backend = "torch",
        precision: Precision | None = None,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int = 32,
    ) -> None:
        """Load tokenizer and weights (or an ONNX graph) from ``path``.

        ``precision`` (default fp32): onnx serves fp32 (``model.opt.onnx``, else ``model.onnx``) or
        int8 (``model.int8.onnx``); torch serves fp32, int8 (CPU) or bf16 (weights cast; logits FP32).
        The onnx path imports neither torch nor transformers' model classes.
        """
        self.directory = resolve_model_dir(Path(path))
        config = json.loads((self.directory / "config.json").read_text("utf-8"))
        self.meta: dict[str, Any] = dict(config.get("textpulse") or {})
        id2label = {int(k): str(v) for k, v in config["id2label"].items()}
        self.labels = [id2label[i] for i in range(len(id2label))]
        self.kind: str = self.meta.get("kind", "sequence")
        self.max_length = int(self.meta.get("max_length", 128))
        self.normalisation = check_text_normalisation(self.meta.get("text_normalisation"))
        self.batch_size = batch_size
        self.oos_threshold: float | None = self.meta.get("oos_threshold")
        self.oos_label: str | None = self.meta.get("oos_label")
        #: extra heads of a multi-head model: name -> labels (Triton outputs ``logits_<name>``)
        self.extra_heads: dict[str, list[str]] = dict(self.meta.get("extra_heads") or {})
        self.output_names = ["logits", *(f"logits_{name}" for name in self.extra_heads)]
        self.backend = backend
        self.runtime, self.precision = resolve_runtime(backend, precision)
        #: the ONNX graph served (onnx runtime only)
        self.graph: Path | None = None
        if self.runtime == "onnx":
            if device != "cpu":
                msg = "backend onnx runs on the CPU provider only (use torch on a GPU)"
                raise ValueError(msg)
            self.graph = graph_path(self.directory, self.precision)
            self._session = create_session(self.graph, threads)
            return
        import torch

        from textpulse.ml.modeling import load_model, quantize_int8

        if threads:
            torch.set_num_threads(threads)
        self._model, _, _ = load_model(self.directory, device)
        if self.precision == "int8":
            if device != "cpu":
                msg = "torch-int8 runs on the CPU only (use torch on a GPU)"
                raise ValueError(msg)
            self._model = quantize_int8(self._model)
        elif self.precision == "bf16":
            self._model = self._model.to(torch.bfloat16)
        self._device = device

    @cached_property
    def tokenizer(self) -> Any:
        """transformers' fast tokenizer, loaded on first use: ONNX serving (``LocalBackend``) never uses it."""
        return load_tokenizer(self.directory)

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Raw FP32 logits for padded int64 ids (what Triton's ``logits`` output holds)."""
        if self.runtime == "onnx":
            feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
            return np.asarray(self._session.run(["logits"], feeds)[0], dtype=np.float32)
        return self.all_logits(input_ids, attention_mask)["logits"]

    def all_logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        """Every output by its Triton/ONNX name: ``logits`` and ``logits_<head>`` per extra head."""
        if self.runtime == "onnx":
            feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
            values = self._session.run(self.output_names, feeds)
            return {
                name: np.asarray(value, dtype=np.float32) for name, value in zip(self.output_names, values, strict=True)
            }
        import torch

        with torch.inference_mode():
            heads = self._model.forward_heads(
                torch.as_tensor(input_ids, dtype=torch.long, device=self._device),
                torch.as_tensor(attention_mask, dtype=torch.long, device=self._device),
            )
        return {(f"logits_{name}" if name else "logits"): value.float().cpu().numpy() for name, value in heads.items()}

    def encode(self, texts: list[str]) -> EncodedBatch:
        """Tokenise and pad; token models split words first to map tags back to characters."""
        if self.kind == "token":
            words = [split_words(t) for t in texts]
            encoded = self.tokenizer(
                [[w.text for w in ws] or [""] for ws in words],
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="np",
            )
            word_ids = [encoded.word_ids(i) for i in range(len(texts))]
            return EncodedBatch(encoded["input_ids"], encoded["attention_mask"], words, word_ids)
        shown = [model_text(t, self.normalisation) for t in texts]  # as the model's training rows were
        encoded = self.tokenizer(shown, truncation=True, max_length=self.max_length, padding=True, return_tensors="np")
        return EncodedBatch(encoded["input_ids"], encoded["attention_mask"])

    def decode_sequence(self, logits: np.ndarray, head: str = "") -> list[dict[str, Any]]:
        """Label, top score and all scores; low-confidence rows become ``oos`` when calibrated."""
        probs = softmax(logits)
        labels = self.extra_heads[head] if head else self.labels
        results = []
        for row in probs:
            best = int(row.argmax())
            label = labels[best]
            if not head and self.oos_label and self.oos_threshold is not None and row[best] < self.oos_threshold:
                label = self.oos_label
            results.append(
                {
                    "label": label,
                    "score": float(row[best]),
                    "scores": {name: float(p) for name, p in zip(labels, row, strict=True)},
                },
            )
        return results

    def decode_entities(self, texts: list[str], batch: EncodedBatch, logits: np.ndarray) -> list[list[dict[str, Any]]]:
        """Word tags from first sub-tokens -> BIO spans with character offsets into each text."""
        probs = softmax(logits)
        results = []
        for index, text in enumerate(texts):
            words = (batch.words or [])[index]
            positions = first_subtoken_positions((batch.word_ids or [])[index])
            tags, scores = [], []
            for word_index in range(len(words)):
                position = positions.get(word_index)
                if position is None:  # truncated away
                    tags.append("O")
                    scores.append(1.0)
                    continue
                best = int(probs[index, position].argmax())
                tags.append(self.labels[best])
                scores.append(float(probs[index, position, best]))
            results.append(spans_from_tags(words, tags, scores, text))
        return results

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """Sequence models: ``{label, score, scores}`` per text; token models: ``{entities}``.

        Multi-head models add ``heads: {name: {label, score, scores}}`` from the same forward pass.
        """
        if self.kind == "token":
            return [{"entities": e} for e in self.predict_entities(texts)]
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.encode(texts[start : start + self.batch_size])
            if not self.extra_heads:
                results.extend(self.decode_sequence(self.logits(batch.input_ids, batch.attention_mask)))
                continue
            outputs = self.all_logits(batch.input_ids, batch.attention_mask)
            primary = self.decode_sequence(outputs["logits"])
            extra = {name: self.decode_sequence(outputs[f"logits_{name}"], name) for name in self.extra_heads}
            for index, result in enumerate(primary):
                result["heads"] = {name: decoded[index] for name, decoded in extra.items()}
            results.extend(primary)
        return results

    def predict_entities(self, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Entity spans ``{entity, start, end, text, score}`` per text (token models)."""
        if self.kind != "token":
            msg = f"{self.directory} is a sequence model; use predict()"
            raise TypeError(msg)
        results: list[list[dict[str, Any]]] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            batch = self.encode(chunk)
            results.extend(self.decode_entities(chunk, batch, self.logits(batch.input_ids, batch.attention_mask)))
        return results

    def describe(self) -> dict[str, Any]:
        """Labels, kind and metadata (for health/info endpoints)."""
        return {
            "directory": str(self.directory),
            "kind": self.kind,
            "labels": self.labels,
            "backend": self.backend,
            "runtime": self.runtime,
            "precision": self.precision,
            "graph": self.graph.name if self.graph else None,
            **{k: v for k, v in self.meta.items() if k != "labels"},
        }


def load_id2label(directory: Path) -> dict[int, str]:
    """``id2label.json`` of a model or version folder."""
    return {int(k): v for k, v in json.loads((directory / "id2label.json").read_text("utf-8")).items()}
