"""A tiny recommend bi-encoder exported as production exports it (weights, tokenizer, model.py, model.onnx).

A seeded 2-layer BERT (hidden size 32) with the bundled all-MiniLM-L6-v2 tokenizer, saved as a
trained recommend folder is (``textpulse`` metadata in ``config.json``) and written to a model
repository by :func:`textpulse.recsys.train.export_embedding`, ONNX export included. Random weights
keep it small: the tests are about serving, not quality; the tokenizer is the real one.

The repository is kept under ``.cache/test-recommend-repo`` between runs and rebuilt when the
exporter, the tiny model's recipe or the ranker helper changes (see :func:`tiny_recommend_repo`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE = REPO_ROOT / ".cache" / "test-recommend-repo"
DIM = 32
MAX_LENGTH = 32
SEED = 7
#: Files whose change makes a cached repository stale.
SOURCES = (
    "libs/textpulse/recsys/export.py",
    "libs/textpulse/recsys/train.py",
    "libs/textpulse/recsys/ranker.py",
    "libs/textpulse/recsys/triton/model.py",  # copied into the version folder at export
    "tests/support/recommend_encoder.py",
    "tests/support/recommend_ranker.py",
)


def tiny_encoder(out: Path) -> Path:
    """Save a seeded 2-layer BERT with the real tokenizer as a trained recommend folder would be."""
    import torch
    from textpulse.ml.settings import default_base_model, offline_hub
    from transformers import AutoTokenizer, BertConfig, BertModel

    offline_hub()
    tokenizer = AutoTokenizer.from_pretrained(default_base_model())
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    model = BertModel(config).eval()  # type: ignore[no-untyped-call]
    model.config.textpulse = {"max_length": MAX_LENGTH, "base_model": "tiny-random-bert"}  # type: ignore[attr-defined]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _stamp() -> str:
    digest = hashlib.sha256(f"{DIM}/{MAX_LENGTH}/{SEED}".encode())
    for name in SOURCES:
        digest.update((REPO_ROOT / name).read_bytes())
    return digest.hexdigest()


def tiny_recommend_repo(root: Path = CACHE, *, ranker: bool = True) -> Path:
    """``root/repo``: a model repository with ``recommend`` version 1 (ONNX included, and a tiny ranker).

    Built once per stamp (torch needed then); later calls return the cached copy.
    """
    from textpulse.recsys.train import MODEL_NAME, export_embedding

    from tests.support.recommend_ranker import tiny_ranker

    repo = root / "repo"
    stamp_file = root / ".stamp.json"
    stamp = {"sources": _stamp(), "ranker": ranker}
    if stamp_file.is_file() and json.loads(stamp_file.read_text("utf-8")) == stamp:
        return repo
    shutil.rmtree(root, ignore_errors=True)
    entry = export_embedding(tiny_encoder(root / "trained"), repo)
    assert entry["version"] == 1, entry
    assert (repo / MODEL_NAME / "1" / "model.onnx").is_file()
    if ranker:  # where the service looks for it (the exporter copies a trained folder's ranker there)
        tiny_ranker(repo / MODEL_NAME / "1" / "ranker", DIM)
    stamp_file.write_text(json.dumps(stamp), "utf-8")
    return repo
