"""Test support: a tiny model repository and a deterministic fake backend.

The tiny repository holds the models the services use: the multi-head
``finance`` (sentiment + topic) and ``support`` (CLINC150 intent + sentiment)
that classify serves by default, the single-task ``sentiment``, ``topic``,
``intent`` and ``ner``, each fine-tuned for a few steps on a few
hundred examples with short sequences: accuracy is irrelevant, the point is
real tokenizers, real label sets and real exported files that the in-process
backend and Triton both load. It is built once into a cache directory and
reused (a marker file records completion).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from textpulse.contracts import ModelRef
from textpulse.inference.backend import HeadSpec, ModelInfo, check_heads
from textpulse.inference.types import Prediction, Span

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TINY_REPO = REPO_ROOT / ".cache" / "test-model-repo"
MARKER = ".tiny-complete"

#: model name -> (training task, steps, examples, max length, learning rate). NER gets
#: enough steps to tag some entities, so model spans (not only cashtags) reach the tests.
TINY_MODELS: dict[str, tuple[str, int, int, int, float]] = {
    "sentiment": ("sentiment", 6, 256, 48, 5e-5),
    "topic": ("topic", 6, 256, 48, 5e-5),
    "intent": ("clinc150", 6, 384, 32, 5e-5),
    "ner": ("finer_ord", 100, 800, 64, 3e-4),
    "finance": ("sentiment", 8, 256, 48, 5e-5),
    "support": ("clinc150", 8, 384, 32, 5e-5),
}
#: extra heads (multi-head models) trained on the shared encoder, by model name
TINY_EXTRA_TASKS: dict[str, tuple[str, ...]] = {"finance": ("topic",), "support": ("sentiment",)}
PARAMS_FILE = ".tiny-params.json"


def build_tiny_repo(repo: Path = DEFAULT_TINY_REPO, *, threads: int = 2, onnx: bool = False) -> Path:
    """Train and export the tiny models into ``repo``; models already built with the same recipe are kept."""
    if (repo / MARKER).is_file() and all(_current(repo, name) for name in TINY_MODELS):
        return repo
    from textpulse.ml.config import TrainConfig
    from textpulse.ml.export import export_model
    from textpulse.ml.train import fit

    (repo / MARKER).unlink(missing_ok=True)
    work = repo.parent / f"{repo.name}-train"
    work.mkdir(parents=True, exist_ok=True)
    for name, (task, steps, limit, max_length, lr) in TINY_MODELS.items():
        if _current(repo, name):
            continue
        shutil.rmtree(repo / name, ignore_errors=True)
        model_dir = work / name
        config = TrainConfig(
            task=task,
            output_dir=model_dir,
            limit_train=limit,
            limit_dev=64,
            max_steps=steps,
            batch_size=16,
            max_length=max_length,
            threads=threads,
            progress=False,
            lr=lr,
            extra_tasks=list(TINY_EXTRA_TASKS.get(name, ())),
        )
        log.info("training tiny %s (%s, %d steps)", name, task, steps)
        fit(config)
        export_model(model_dir, repo, name, onnx=onnx, torch_threads=1, max_batch_size=64)
        (repo / name / PARAMS_FILE).write_text(json.dumps(_params(name)), "utf-8")
    shutil.rmtree(work, ignore_errors=True)
    (repo / MARKER).write_text(json.dumps(sorted(TINY_MODELS)), "utf-8")
    return repo


def _current(repo: Path, name: str) -> bool:
    """True when ``repo/name`` was exported with today's recipe."""
    path = repo / name / PARAMS_FILE
    return path.is_file() and json.loads(path.read_text("utf-8")) == _params(name)


def _params(name: str) -> list[object]:
    """The recipe recorded beside a tiny model (extra heads only where there are some)."""
    extra = list(TINY_EXTRA_TASKS.get(name, ()))
    return [*TINY_MODELS[name], *([extra] if extra else [])]


def tiny_repo_from_env() -> Path:
    """``TEXTPULSE_TEST_MODEL_REPO`` or the default cache location."""
    return Path(os.environ.get("TEXTPULSE_TEST_MODEL_REPO", str(DEFAULT_TINY_REPO)))


class FakeBackend:
    """Deterministic stand-in for in-memory tests: labels from keywords, entities from capitals.

    ``fail_times`` makes the next calls raise :class:`BackendUnavailable`;
    ``reject`` is a substring that makes the backend reject an input.
    """

    name = "fake"

    def __init__(self, *, fail_times: int = 0, reject: str | None = None) -> None:
        from textpulse.inference.errors import BackendUnavailable, InputRejected

        self._unavailable = BackendUnavailable
        self._rejected = InputRejected
        self.fail_times = fail_times
        self.reject = reject
        self.calls: list[tuple[str, int]] = []
        sentiment, topic = ("Bearish", "Bullish", "Neutral"), ("Markets", "Earnings", "General")
        intent = ("balance", "transfer", "oos")
        self.infos = {
            "sentiment": ModelInfo("sentiment", "1", "sequence", sentiment, task="sentiment"),
            "topic": ModelInfo("topic", "1", "sequence", topic, task="topic"),
            "intent": ModelInfo("intent", "1", "sequence", intent, oos_label="oos", task="clinc150"),
            "ner": ModelInfo("ner", "1", "token", ("O", "B-ORG", "I-ORG")),
            "finance": ModelInfo(
                "finance", "1", "sequence", sentiment, task="sentiment", extra_heads=(("topic", topic),)
            ),
            "support": ModelInfo(
                "support",
                "1",
                "sequence",
                intent,
                oos_label="oos",
                task="clinc150",
                extra_heads=(("sentiment", sentiment),),
            ),
        }

    async def start(self, models: Sequence[str], heads: Sequence[HeadSpec] = ()) -> None:
        """Nothing to load; the wanted heads are checked as the real backends do."""
        check_heads({m: self.infos[m] for m in models if m in self.infos}, heads)

    async def close(self) -> None:
        """Nothing to release."""

    async def ready(self) -> bool:
        return True

    def info(self, model: str) -> ModelInfo:
        return self.infos[model]

    def model_ref(self, model: str) -> ModelRef:
        return self.infos[model].ref

    def _check(self, model: str, texts: Sequence[str]) -> None:
        self.calls.append((model, len(texts)))
        if self.fail_times > 0:
            self.fail_times -= 1
            msg = "fake backend down"
            raise self._unavailable(msg)
        if self.reject is not None and any(self.reject in t for t in texts):
            msg = f"model {model} rejected the input"
            raise self._rejected(msg)

    async def classify(self, model: str, texts: Sequence[str]) -> list[Prediction]:
        self._check(model, texts)
        return self._predict(model, None, texts)

    async def classify_heads(
        self, model: str, texts: Sequence[str], heads: Sequence[str]
    ) -> dict[str, list[Prediction]]:
        """One call (one "pass") per model, as the real backends: ``calls`` records it once."""
        self._check(model, texts)
        return {self.infos[model].head(h).name: self._predict(model, h, texts) for h in heads}

    def _predict(self, model: str, head_name: str | None, texts: Sequence[str]) -> list[Prediction]:
        info = self.infos[model]
        head = info.head(head_name)
        out = []
        for text in texts:
            lower = text.lower()
            if head.name == "sentiment":
                label = "Bearish" if "down" in lower or "fall" in lower else "Bullish" if "up" in lower else "Neutral"
            elif head.name == "clinc150":
                label = "balance" if "balance" in lower else "transfer" if "transfer" in lower else "oos"
            else:
                label = "Earnings" if "earnings" in lower else "Markets"
            scores = {name: (0.8 if name == label else 0.2 / (len(head.labels) - 1)) for name in head.labels}
            out.append(Prediction(label, 0.8, scores, info.ref, out_of_scope=label == head.oos_label))
        return out

    async def tag(self, model: str, texts: Sequence[str]) -> list[list[Span]]:
        self._check(model, texts)
        from textpulse.ml.tokenization import split_words

        out: list[list[Span]] = []
        for text in texts:
            spans = [
                Span("ORG", w.start, w.end, w.text, 0.9)
                for w in split_words(text)
                if w.text[:1].isupper() and w.text.isalpha() and w.start > 0
            ]
            out.append(spans)
        return out
