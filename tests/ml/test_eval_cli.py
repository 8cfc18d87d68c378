"""``textpulse eval``: every task and file format, and every refusal, on tiny generated data.

Models are real ``fit`` runs of two optimiser steps over a one-layer, 32-wide BERT
(random weights, the bundled MiniLM tokenizer) on small files generated here in the
staged layout (``TEXTPULSE_DATA_DIR`` points at them), so the whole module runs in
seconds on a CPU and needs no shared data set. Scores are meaningless; what is
checked is which head is scored on which rows, what is refused, and where files go.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from textpulse.datasets.labels import FINER_ORD_TAGS, SENTIMENT_LABELS, TOPIC_LABELS
from typer.testing import CliRunner

if TYPE_CHECKING:
    from collections.abc import Iterator

    from click.testing import Result

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("base_model_path")]

COMPANIES = ["apple", "tesla", "nvidia", "amazon", "google", "netflix", "intel", "oracle", "cisco", "adobe"]
HELD_OUT = ["boeing", "pfizer", "chevron", "walmart"]
SENTIMENT = {
    "Bearish": "{} shares slump on weak outlook",
    "Bullish": "{} shares rally on strong guidance",
    "Neutral": "{} to hold its annual meeting",
}
TOPIC = {  # id -> template; a few of the twenty topics are enough
    0: "analysts upgrade {} to buy",
    5: "{} beats quarterly earnings estimates",
    1: "fed minutes weigh on {} bonds",
}
PHRASEBANK = {
    "negative": "{} reported a loss for the period",
    "neutral": "{} is headquartered in the city",
    "positive": "{} increased its net sales",
}
BANKING = {
    "card_arrival": "when will my {} card arrive",
    "exchange_rate": "what rate do you use for {} currency",
    "top_up": "how do i top up with my {} account",
}
CLINC = {"balance": "what is the balance on my {} account", "transfer": "send money to {} now"}
CLINC_OOS = "tell me a joke about {}"
# words with tags for both NER tasks: (word, finer tag, wnut tag)
NER_SENTENCE = [
    ("Jane", "B-PER", "B-person"),
    ("Smith", "I-PER", "I-person"),
    ("joined", "O", "O"),
    ("{}", "B-ORG", "B-corporation"),
    ("in", "O", "O"),
    ("London", "B-LOC", "B-location"),
    (".", "O", "O"),
]


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows), "utf-8")
    return path


def _rows(templates: dict[Any, str], names: list[str]) -> list[tuple[str, Any]]:
    return [(template.format(name), label) for name in names for label, template in templates.items()]


def _ner(names: list[str], column: int) -> list[list[tuple[str, str]]]:
    return [[(word.format(name), tags[column - 1]) for word, *tags in NER_SENTENCE] for name in names]


def _finer_csv(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    rows = [
        [FINER_ORD_TAGS.index(tag), word, 0, index]
        for index, sentence in enumerate(sentences)
        for word, tag in sentence
    ]
    return _write_csv(path, ["gold_label", "gold_token", "doc_idx", "sent_idx"], rows)


def _conll(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("".join(f"{w}\t{t}\n" for w, t in s) for s in sentences), "utf-8")
    return path


def _clinc(names: list[str]) -> list[list[str]]:
    return [[text, label] for text, label in _rows(CLINC, names)]


def _stage_training_data(root: Path) -> None:
    """Every task's staged training files (same names and layout as the shared data sets)."""
    sentiment = [(t, SENTIMENT_LABELS.index(lab)) for t, lab in _rows(SENTIMENT, COMPANIES)]
    _write_csv(root / "twitter_fin_sentiment" / "sent_train.csv", ["text", "label"], sentiment)
    _write_csv(root / "twitter_fin_topic" / "topic_train.csv", ["text", "label"], _rows(TOPIC, COMPANIES))
    phrasebank = "".join(f"{t}@{lab}\n" for t, lab in _rows(PHRASEBANK, COMPANIES))
    (root / "fin_phrasebank").mkdir()
    (root / "fin_phrasebank" / "Sentences_50Agree.txt").write_text(phrasebank, "latin-1")
    _write_csv(root / "banking77" / "train.csv", ["text", "category"], _rows(BANKING, COMPANIES))
    (root / "banking77" / "categories.json").write_text(json.dumps(list(BANKING)), "utf-8")
    (root / "clinc150").mkdir()
    (root / "clinc150" / "domains.json").write_text(json.dumps({"banking": list(CLINC)}), "utf-8")
    clinc = {
        "train": _clinc(COMPANIES),
        "oos_train": [[CLINC_OOS.format(n), "oos"] for n in COMPANIES],
        "val": _clinc(HELD_OUT),
        "oos_val": [[CLINC_OOS.format(n), "oos"] for n in HELD_OUT],
    }
    (root / "clinc150" / "data_full.json").write_text(json.dumps(clinc), "utf-8")
    _finer_csv(root / "finer_ord" / "train.csv", _ner(COMPANIES, 1))
    _finer_csv(root / "finer_ord" / "val.csv", _ner(HELD_OUT, 1))
    _conll(root / "wnut17" / "wnut17train.conll", _ner(COMPANIES, 2))
    _conll(root / "wnut17" / "emerging.dev.conll", _ner(HELD_OUT, 2))


def _stage_eval_files(root: Path) -> None:
    """Held-out files in every format ``eval`` reads, per task (4 names -> 12 rows / 4 sentences)."""
    root.mkdir()
    sentiment = _rows(SENTIMENT, HELD_OUT)
    _write_csv(root / "sent_valid.csv", ["text", "label"], [(t, SENTIMENT_LABELS.index(lab)) for t, lab in sentiment])
    _write_csv(root / "sentiment_named.csv", ["text", "label"], sentiment)
    _write_jsonl(root / "sentiment.jsonl", sentiment)
    topic = _rows(TOPIC, HELD_OUT)
    _write_csv(root / "topic_valid.csv", ["text", "label"], topic)
    _write_csv(root / "topic_named.csv", ["text", "label"], [(t, TOPIC_LABELS[i]) for t, i in topic])
    _write_jsonl(root / "topic.jsonl", [(t, TOPIC_LABELS[i]) for t, i in topic])
    phrasebank = _rows(PHRASEBANK, HELD_OUT)
    (root / "Sentences_test.txt").write_text("".join(f"{t}@{lab}\n" for t, lab in phrasebank), "latin-1")
    _write_csv(root / "phrasebank.csv", ["sentence", "label"], phrasebank)
    _write_jsonl(root / "phrasebank.jsonl", phrasebank)
    banking = _rows(BANKING, HELD_OUT)
    _write_csv(root / "test.csv", ["text", "category"], banking)
    _write_jsonl(root / "banking77.jsonl", banking)
    (root / "clinc").mkdir()
    clinc = {
        "train": _clinc(COMPANIES),
        "oos_train": [[CLINC_OOS.format(n), "oos"] for n in COMPANIES],
        "val": _clinc(HELD_OUT[:2]),
        "oos_val": [[CLINC_OOS.format(n), "oos"] for n in HELD_OUT[:2]],
        "test": _clinc(HELD_OUT),
        "oos_test": [[CLINC_OOS.format(n), "oos"] for n in HELD_OUT],
    }
    (root / "clinc" / "data_full.json").write_text(json.dumps(clinc), "utf-8")
    _write_jsonl(root / "clinc150.jsonl", [(t, lab) for t, lab in _rows({**CLINC, "oos": CLINC_OOS}, HELD_OUT)])
    _finer_csv(root / "finer_test.csv", _ner(HELD_OUT, 1))
    _conll(root / "finer_test.conll", _ner(HELD_OUT, 1))
    _conll(root / "emerging.test.annotated", _ner(HELD_OUT, 2))
    _conll(root / "wnut17_test.conll", _ner(HELD_OUT, 2))


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated data directory, set as ``TEXTPULSE_DATA_DIR`` for the module's trainings."""
    root = tmp_path_factory.mktemp("data")
    _stage_training_data(root)
    _stage_eval_files(root / "eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TEXTPULSE_DATA_DIR", str(root))
        yield root


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, base_model_path: str) -> str:
    """A one-layer, 32-wide random BERT with the bundled tokenizer: trains in well under a second."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    directory = tmp_path_factory.mktemp("tiny-base")
    BertModel(config, add_pooling_layer=False).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def models(staged: Path, tiny_base: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One model per task, plus ``multi``: sentiment with topic and phrasebank heads."""
    from textpulse.ml.config import TASKS, TrainConfig
    from textpulse.ml.train import fit

    root = tmp_path_factory.mktemp("models")
    plan: dict[str, tuple[str, list[str]]] = {task: (task, []) for task in TASKS}
    plan["multi"] = ("sentiment", ["topic", "phrasebank"])
    built = {}
    for name, (task, extra) in plan.items():
        config = TrainConfig(
            task=task, extra_tasks=extra, output_dir=root / name, base_model=tiny_base, max_steps=2,
            batch_size=8, max_length=24, lr=1e-3, threads=2, progress=False,
        )  # fmt: skip
        fit(config)
        built[name] = root / name
    return built


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile`` (so eval's default output) creates folders during one test."""
    root = tmp_path / "system-tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _files(directory: Path) -> dict[str, float]:
    return {str(p.relative_to(directory)): p.stat().st_mtime for p in directory.rglob("*")}


def _eval(*args: str | Path) -> Result:
    from textpulse.ml.cli import app

    return CliRunner().invoke(app, ["eval", *map(str, args)])


def _ok(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _refused(result: Result) -> str:
    """Exit code 2 and exactly one line on stderr, nothing on stdout."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# (task, file under eval/, extra options, examples, split reported)
FORMATS = [
    ("sentiment", "sent_valid.csv", [], 12, None),  # staged: label ids
    ("sentiment", "sentiment_named.csv", [], 12, None),  # text,label with label names
    ("sentiment", "sentiment.jsonl", [], 12, None),
    ("topic", "topic_valid.csv", [], 12, None),
    ("topic", "topic_named.csv", [], 12, None),
    ("topic", "topic.jsonl", [], 12, None),
    ("phrasebank", "Sentences_test.txt", [], 12, None),  # sentence@label
    ("phrasebank", "phrasebank.csv", [], 12, None),
    ("phrasebank", "phrasebank.jsonl", [], 12, None),
    ("banking77", "test.csv", [], 12, None),  # text,category
    ("intent", "banking77.jsonl", [], 12, None),  # alias of banking77
    ("clinc150", "clinc/data_full.json", [], 12, "test"),  # test split by default when present
    ("clinc150", "clinc/data_full.json", ["--split", "val"], 6, "val"),
    ("clinc150", "clinc150.jsonl", [], 12, None),
    ("finer_ord", "finer_test.csv", [], 4, None),  # FiNER-ORD CSV: tag ids, one token a row
    ("ner", "finer_test.conll", [], 4, None),  # alias of finer_ord, CoNLL tags
    ("wnut17", "emerging.test.annotated", [], 4, None),
    ("wnut17", "wnut17_test.conll", [], 4, None),
]


@pytest.mark.parametrize(("task", "file_name", "options", "examples", "split"), FORMATS)
def test_every_task_and_format_scores_into_a_temp_dir(
    models: dict[str, Path],
    staged: Path,
    temp_root: Path,
    task: str,
    file_name: str,
    options: list[str],
    examples: int,
    split: str | None,
) -> None:
    from textpulse.ml.config import resolve_task

    canonical, preset = resolve_task(task)
    model = models[canonical]
    before = _files(model)
    result = _ok(_eval(task, "--model", model, "--data", staged / "eval" / file_name, *options))
    assert (result["task"], result["head"], result["examples"], result["split"]) == (
        canonical,
        canonical,
        examples,
        split,
    )
    metrics = result["metrics"]
    assert metrics["n"] == examples
    headline = "micro_f1" if preset.kind == "token" else "accuracy"
    assert 0.0 <= metrics[headline] <= 1.0
    if preset.oos_label:
        assert {"in_scope_accuracy", "oos_recall"} <= set(metrics)
    out = Path(result["out"])
    assert out.parent == temp_root  # a fresh temp dir, printed in the JSON
    for name in ("confusion_matrix.png", "README.md", "metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert _files(model) == before  # nothing written into the model directory


def test_out_is_honoured_and_an_exported_model_is_scored_from_its_repository(
    models: dict[str, Path], staged: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "sentiment"
    result = _ok(_eval("sentiment", "--model", models["sentiment"], "--data", staged / "eval" / "sent_valid.csv",
                       "--out", out))  # fmt: skip
    assert Path(result["out"]) == out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "confusion_matrix.png", "metrics.json"]

    # Triton layout: <repo>/<name>/config.pbtxt and numbered versions; the latest version is scored
    repo = tmp_path / "repo"
    shutil.copytree(models["sentiment"], repo / "sentiment" / "1")
    (repo / "sentiment" / "config.pbtxt").write_text('name: "sentiment"\n')
    exported = _ok(_eval("sentiment", "--model", repo / "sentiment", "--data", staged / "eval" / "sent_valid.csv",
                         "--out", tmp_path / "exported"))  # fmt: skip
    assert exported["model"] == str(repo / "sentiment" / "1")
    assert exported["metrics"] == result["metrics"]
    for inside in (repo / "sentiment" / "1" / "eval", repo / "sentiment" / "eval", repo / "reports"):
        line = _refused(_eval("sentiment", "--model", repo / "sentiment", "--data",
                              staged / "eval" / "sent_valid.csv", "--out", inside))  # fmt: skip
        assert "never writes into a model or model repository" in line
        assert not inside.exists()


def test_out_inside_the_trained_model_dir_is_refused(models: dict[str, Path], staged: Path) -> None:
    model = models["finer_ord"]
    line = _refused(_eval("finer_ord", "--model", model, "--data", staged / "eval" / "finer_test.csv",
                          "--out", model / "eval-test"))  # fmt: skip
    assert f"is inside {model}" in line
    assert not (model / "eval-test").exists()


@pytest.mark.parametrize(
    ("task", "model", "file_name", "expected"),
    [
        ("topic", "sentiment", "topic_valid.csv", "was trained for sentiment, not topic"),
        ("sentiment", "finer_ord", "sentiment.jsonl", "was trained for finer_ord, not sentiment"),
        ("finer_ord", "wnut17", "finer_test.conll", "was trained for wnut17, not finer_ord"),
        ("intent", "clinc150", "banking77.jsonl", "was trained for clinc150, not banking77"),
        ("banking77", "multi", "test.csv", "was trained for sentiment (heads: sentiment, phrasebank, topic), not"),
    ],
)
def test_a_model_trained_for_another_task_is_refused(
    models: dict[str, Path], staged: Path, temp_root: Path, task: str, model: str, file_name: str, expected: str
) -> None:
    line = _refused(_eval(task, "--model", models[model], "--data", staged / "eval" / file_name))
    assert expected in line
    assert not any(temp_root.iterdir())  # refused before anything was written


def test_gold_labels_outside_the_label_set_are_refused_and_listed(
    models: dict[str, Path], staged: Path, tmp_path: Path
) -> None:
    rows = [("a", "Bullish"), ("b", "Bearsh"), ("c", "Moon"), ("d", "Moon"), ("e", "Neutral")]
    line = _refused(
        _eval("sentiment", "--model", models["sentiment"], "--data", _write_jsonl(tmp_path / "x.jsonl", rows))
    )
    assert "2 gold label(s) outside the label set of head 'sentiment': 'Moon' (2x), 'Bearsh' (1x)" in line
    assert "the head knows 3: Bearish, Bullish, Neutral" in line

    # a phrasebank file given as sentiment data: every label is foreign
    line = _refused(_eval("sentiment", "--model", models["sentiment"], "--data", staged / "eval" / "phrasebank.csv"))
    assert "'negative' (4x), 'neutral' (4x), 'positive' (4x)" in line

    # a staged id-labelled CSV with an id past the label list
    bad_ids = _write_csv(tmp_path / "sent_bad.csv", ["text", "label"], [("a", 0), ("b", 7), ("c", 9)])
    line = _refused(_eval("sentiment", "--model", models["sentiment"], "--data", bad_ids))
    assert "label ids outside twitter_fin_sentiment's 3 labels: 7, 9" in line

    unlabelled = _write_csv(tmp_path / "unlabelled.csv", ["text"], [("a",), ("b",)])
    line = _refused(_eval("sentiment", "--model", models["sentiment"], "--data", unlabelled))
    assert "holds no labelled sentiment examples" in line

    sentences = [[("Jane", "B-PER"), ("at", "O"), ("Acme", "B-MISC")], [("Bob", "B-PERSON")]]
    line = _refused(_eval("ner", "--model", models["finer_ord"], "--data", _conll(tmp_path / "x.conll", sentences)))
    assert "2 gold label(s) outside the label set of head 'finer_ord': 'B-MISC' (1x), 'B-PERSON' (1x)" in line


def test_every_head_of_a_multi_head_model_is_scored(models: dict[str, Path], staged: Path, temp_root: Path) -> None:
    from textpulse.datasets import load_text_examples
    from textpulse.ml.predictor import Predictor

    model = models["multi"]
    primary = _ok(_eval("sentiment", "--model", model, "--data", staged / "eval" / "sentiment.jsonl"))
    assert primary["head"] == "sentiment"
    assert set(primary["metrics"]["per_class"]) == set(SENTIMENT_LABELS)

    predictor = Predictor(model)
    for task, file_name, labels in (
        ("topic", "topic.jsonl", TOPIC_LABELS),
        ("phrasebank", "Sentences_test.txt", ["negative", "neutral", "positive"]),
    ):
        scored = _ok(_eval(task, "--model", model, "--data", staged / "eval" / file_name, "--head", task))
        assert scored["head"] == task
        assert list(scored["metrics"]["per_class"]) == labels
        examples = load_text_examples(staged / "eval" / file_name)
        predicted = [p["heads"][task]["label"] for p in predictor.predict([e.text for e in examples])]
        expected = sum(p == e.label for p, e in zip(predicted, examples, strict=True)) / len(examples)
        assert scored["metrics"]["accuracy"] == pytest.approx(expected)
        # the head trained for TASK is also picked without --head
        assert _ok(_eval(task, "--model", model, "--data", staged / "eval" / file_name))["metrics"] == scored["metrics"]
        card = (Path(scored["out"]) / "README.md").read_text()
        assert card.startswith(f"# {task}\n")

    line = _refused(_eval("banking77", "--model", model, "--data", staged / "eval" / "test.csv", "--head", "banking77"))
    assert "has no head 'banking77'; its heads: sentiment, phrasebank, topic" in line
    line = _refused(
        _eval("sentiment", "--model", model, "--data", staged / "eval" / "sentiment.jsonl", "--head", "topic")
    )
    assert "head 'topic'" in line
    assert "was trained for topic, not sentiment" in line
    line = _refused(_eval("finer_ord", "--model", models["finer_ord"], "--data", staged / "eval" / "finer_test.csv",
                          "--head", "topic"))  # fmt: skip
    assert "has no head 'topic'; its heads: finer_ord" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope", "--data", "eval/sentiment.jsonl"], "unknown task 'nope'"),
        (["sentiment", "--data", "eval/missing.csv"], "eval/missing.csv not found"),
        (["sentiment", "--data", "eval/sentiment.jsonl", "--split", "val"], "--split selects a split of CLINC150"),
        (["wnut17", "--data", "eval/finer_test.csv"], "give wnut17 data as CoNLL"),
        (["finer_ord", "--data", "eval/sentiment.jsonl"], "finer_ord data must be CoNLL"),
        (["sentiment", "--data", "eval/clinc/data_full.json"], "give sentiment data as .csv or .jsonl"),
        (["sentiment", "--data", "eval/finer_test.conll"], "cannot read finer_test.conll as sentiment data"),
        (["banking77", "--data", "eval/finer_test.csv"], "no text column"),
        (["clinc150", "--data", "eval/clinc/data_full.json", "--split", "dev"], "split 'dev' not present"),
        (["sentiment", "--data", "eval/sentiment.jsonl", "--backend", "tensorrt"], "unknown backend 'tensorrt'"),
        (["sentiment", "--data", "eval/sentiment.jsonl", "--backend", "onnx"], "has no model.onnx"),
    ],
)
def test_bad_requests_are_one_line_and_exit_2(
    models: dict[str, Path],
    staged: Path,
    temp_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(staged)
    line = _refused(_eval(*args, "--model", models.get(args[0], models["sentiment"])))
    assert expected in line
    assert not any(temp_root.iterdir())


def test_a_folder_that_is_not_a_model_is_refused(staged: Path, tmp_path: Path) -> None:
    line = _refused(_eval("sentiment", "--model", tmp_path, "--data", staged / "eval" / "sentiment.jsonl"))
    assert "is neither a model directory" in line


def test_export_cli_writes_the_exporters_cpu_layout_unless_told(models: dict[str, Path], tmp_path: Path) -> None:
    """``textpulse export`` without layout flags uses textpulse.ml.export's CPU_INSTANCES x CPU_THREADS."""
    from textpulse.ml.cli import app
    from textpulse.ml.export import CPU_INSTANCES, CPU_THREADS, GPU_INSTANCES
    from textpulse.ml.triton.config import parameters_of, parse

    def layout(repo: Path, *flags: str) -> tuple[list[int], str]:
        args = ["export", "--model", str(models["sentiment"]), "--name", "sentiment", "--repo", str(repo), "--no-onnx"]
        result = CliRunner().invoke(app, [*args, *flags])
        assert result.exit_code == 0, result.output
        config = parse((repo / "sentiment" / "config.pbtxt").read_text())
        gpu = parse((repo / "sentiment" / "configs" / "gpu-python.pbtxt").read_text())
        assert [g.count for g in gpu.instance_group] == [GPU_INSTANCES]  # the CPU layout stays on the CPU
        return [g.count for g in config.instance_group], parameters_of(config)["torch_threads"]

    assert layout(tmp_path / "default") == ([CPU_INSTANCES], str(CPU_THREADS))
    assert layout(tmp_path / "given", "--instances", "3", "--torch-threads", "2") == ([3], "2")
