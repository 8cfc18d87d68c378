"""Readers for every labelled format in the shared data directory.

Each reader turns one file into :class:`TextExample` or :class:`TokenExample`
records with stable ids (``<dataset>:<split>:<row>``) so predictions, error
analyses and dev splits can be joined back to the source rows. The format is
detected from the file or folder name, so ``eval`` can score any file laid
out like the staged data (including held-out splits never seen here).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING

from textpulse.datasets.labels import (
    FINER_ORD_TAGS,
    OOS_LABEL,
    SENTIMENT_LABELS,
    TOKEN_DATASETS,
    TOPIC_LABELS,
)
from textpulse.datasets.records import TextExample, TokenExample
from textpulse.datasets.settings import data_dir

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

#: File read when a loader is pointed at a data set folder rather than a file.
DEFAULT_FILES = {
    "twitter_fin_sentiment": "sent_train.csv",
    "twitter_fin_topic": "topic_train.csv",
    "fin_phrasebank": "Sentences_50Agree.txt",
    "banking77": "train.csv",
    "clinc150": "data_full.json",
    "finer_ord": "train.csv",
    "wnut17": "wnut17train.conll",
}

_TEXT_COLUMNS = ("text", "sentence", "utterance", "query")
_LABEL_COLUMNS = ("label", "category", "intent", "labels")


def resolve_path(path: Path | str) -> Path:
    """Accept an absolute/relative path, or one relative to the data directory.

    ``twitter_fin_sentiment/sent_train.csv`` therefore works from anywhere.
    """
    candidate = Path(path)
    if candidate.exists():
        return candidate
    under_data = data_dir() / candidate
    if under_data.exists():
        return under_data
    msg = f"{path} not found (also looked under the data directory {data_dir()})"
    raise FileNotFoundError(msg)


def detect_dataset(path: Path) -> str:
    """Name the data set a file belongs to from its folder and file names.

    Falls back to ``jsonl``/``csv``/``conll`` for generic files.
    """
    names = [path.name, path.parent.name]
    for name in names:
        if name in DEFAULT_FILES:
            return name
    file_name = path.name
    rules: tuple[tuple[Callable[[str], bool], str], ...] = (
        (lambda n: n.startswith("sent_") and n.endswith(".csv"), "twitter_fin_sentiment"),
        (lambda n: n.startswith("topic_") and n.endswith(".csv"), "twitter_fin_topic"),
        (lambda n: n.startswith("Sentences_") and n.endswith(".txt"), "fin_phrasebank"),
        (lambda n: n == "data_full.json", "clinc150"),
        (lambda n: n.endswith((".conll", ".annotated")), "wnut17"),
        (lambda n: n.endswith((".jsonl", ".ndjson")), "jsonl"),
        (lambda n: n.endswith(".csv"), "csv"),
    )
    for matches, dataset in rules:
        if matches(file_name):
            return dataset
    msg = f"cannot tell the format of {path}; pass dataset= explicitly"
    raise ValueError(msg)


def _locate(path: Path | str, dataset: str | None) -> tuple[Path, str, str | None]:
    """Resolve (file, dataset name, split) from the user's path and dataset spec."""
    resolved = resolve_path(path)
    split: str | None = None
    name = dataset
    if name is not None and ":" in name:
        name, split = name.split(":", 1)
    if name is None:
        name = detect_dataset(resolved)
    if resolved.is_dir():
        default = DEFAULT_FILES.get(name)
        if default is None:
            msg = f"{resolved} is a folder; point at a file for data set {name!r}"
            raise ValueError(msg)
        resolved = resolved / default
    return resolved, name, split


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _pick(row: dict[str, str], columns: Iterable[str]) -> str | None:
    for column in columns:
        if column in row and row[column] is not None:
            return row[column]
    return None


def _id_labelled_csv(path: Path, dataset: str, names: list[str]) -> list[TextExample]:
    """CSV ``text,label`` whose label is an integer id into ``names``."""
    split = path.stem
    examples = []
    for row_no, row in enumerate(_read_csv(path)):
        raw = row.get("label")
        label = names[int(raw)] if raw not in (None, "") else None
        examples.append(TextExample(f"{dataset}:{split}:{row_no}", row["text"], label))
    return examples


def _generic_csv(path: Path, dataset: str) -> list[TextExample]:
    rows = _read_csv(path)
    if rows and _pick(rows[0], _TEXT_COLUMNS) is None:
        msg = f"{path}: no text column (expected one of {_TEXT_COLUMNS}), got {list(rows[0])}"
        raise ValueError(msg)
    split = path.stem
    return [
        TextExample(
            row.get("id") or f"{dataset}:{split}:{row_no}",
            _pick(row, _TEXT_COLUMNS) or "",
            _pick(row, _LABEL_COLUMNS) or None,
        )
        for row_no, row in enumerate(rows)
    ]


def _phrasebank(path: Path) -> list[TextExample]:
    """latin-1 ``sentence@label`` lines; the LAST ``@`` splits (sentences contain ``@``)."""
    split = path.stem
    examples = []
    for row_no, line in enumerate(path.read_text(encoding="latin-1").splitlines()):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("@")
        if not sep:
            msg = f"{path}:{row_no + 1}: no '@' separator"
            raise ValueError(msg)
        examples.append(TextExample(f"fin_phrasebank:{split}:{row_no}", text.strip(), label.strip()))
    return examples


_CLINC_SPLITS = {
    "train": ("train", "oos_train"),
    "val": ("val", "oos_val"),
    "test": ("test", "oos_test"),
}


def _clinc(path: Path, split: str | None) -> list[TextExample]:
    """CLINC150 ``data_full.json``; ``train`` = in-scope train + ``oos_train`` etc.

    A raw key (``oos_val``, ``val``-only via ``inscope_val``) selects one list.
    """
    data = json.loads(path.read_text("utf-8"))
    chosen = split or "train"
    if chosen in _CLINC_SPLITS:
        keys = [k for k in _CLINC_SPLITS[chosen] if k in data]
    elif chosen.startswith("inscope_"):
        keys = [chosen.removeprefix("inscope_")]
    else:
        keys = [chosen]
    missing = [k for k in keys if k not in data]
    if missing or not keys:
        msg = f"{path}: split {chosen!r} not present (keys: {sorted(data)})"
        raise KeyError(msg)
    examples = []
    for key in keys:
        for row_no, (text, intent) in enumerate(data[key]):
            label = OOS_LABEL if key.startswith("oos") else str(intent)
            examples.append(TextExample(f"clinc150:{key}:{row_no}", str(text), label))
    return examples


def _jsonl(path: Path, dataset: str) -> list[TextExample]:
    split = path.stem
    examples = []
    with path.open(encoding="utf-8") as handle:
        for row_no, line in enumerate(handle):
            if not line.strip():
                continue
            record = json.loads(line)
            if "text" not in record:
                msg = f"{path}:{row_no + 1}: JSON line has no 'text' field"
                raise ValueError(msg)
            label = record.get("label")
            examples.append(
                TextExample(
                    str(record.get("id") or f"{dataset}:{split}:{row_no}"),
                    str(record["text"]),
                    None if label is None else str(label),
                ),
            )
    return examples


def load_text_examples(
    path: Path | str,
    dataset: str | None = None,
    split: str | None = None,
) -> list[TextExample]:
    """Load a sequence-classification file (format detected from its name).

    ``dataset`` may carry a split (``clinc150:val``); ``split`` does the same
    as a separate argument and wins when both are given.
    """
    resolved, name, spec_split = _locate(path, dataset)
    chosen_split = split or spec_split
    if name in TOKEN_DATASETS:
        msg = f"{name} is a token-classification set; use load_token_examples"
        raise ValueError(msg)
    if name == "twitter_fin_sentiment":
        return _id_labelled_csv(resolved, name, SENTIMENT_LABELS)
    if name == "twitter_fin_topic":
        return _id_labelled_csv(resolved, name, TOPIC_LABELS)
    if name == "fin_phrasebank":
        return _phrasebank(resolved)
    if name == "clinc150" or resolved.suffix == ".json":
        return _clinc(resolved, chosen_split)
    if name == "jsonl" or resolved.suffix in {".jsonl", ".ndjson"}:
        return _jsonl(resolved, name)
    return _generic_csv(resolved, name)


def _finer_ord(path: Path) -> list[TokenExample]:
    """Token-per-row CSV; a sentence is a run of rows sharing (doc_idx, sent_idx)."""
    split = path.stem
    examples: list[TokenExample] = []
    tokens: list[str] = []
    tags: list[str] = []
    current: tuple[str, str] | None = None

    def flush() -> None:
        if tokens:
            ident = f"finer_ord:{split}:{len(examples)}"
            examples.append(TokenExample(ident, list(tokens), list(tags)))
            tokens.clear()
            tags.clear()

    for row in _read_csv(path):
        key = (row["doc_idx"], row["sent_idx"])
        if key != current:
            flush()
            current = key
        tokens.append(row["gold_token"])
        tags.append(FINER_ORD_TAGS[int(row["gold_label"])])
    flush()
    return examples


def _conll_sentences(lines: Iterable[str]) -> Iterator[list[tuple[str, str]]]:
    """Group ``token<TAB>tag`` lines; whitespace-only lines also end a sentence."""
    sentence: list[tuple[str, str]] = []
    for line in lines:
        stripped = line.rstrip("\n")
        if not stripped.strip():
            if sentence:
                yield sentence
                sentence = []
            continue
        parts = stripped.split("\t")
        if len(parts) < 2:  # noqa: PLR2004 - token and tag
            parts = stripped.split()
        sentence.append((parts[0], parts[-1]))
    if sentence:
        yield sentence


def _conll(path: Path, dataset: str) -> list[TokenExample]:
    split = path.stem
    with path.open(encoding="utf-8") as handle:
        return [
            TokenExample(f"{dataset}:{split}:{i}", [t for t, _ in s], [g for _, g in s])
            for i, s in enumerate(_conll_sentences(handle))
        ]


def load_token_examples(path: Path | str, dataset: str | None = None) -> list[TokenExample]:
    """Load a token-classification (BIO) file: FiNER-ORD CSV or CoNLL text."""
    resolved, name, _ = _locate(path, dataset)
    if name == "finer_ord" or (resolved.suffix == ".csv" and name not in {"wnut17", "conll"}):
        return _finer_ord(resolved)
    return _conll(resolved, name)
