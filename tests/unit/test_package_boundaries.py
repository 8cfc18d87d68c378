"""Boundaries of the product (issue #24): what the wheel and the images carry, and who may import whom.

- The wheel holds the library and the services only: no colocated ``test_*.py``, no fakes, no
  synthetic-data generators, no chaos harness (those live in ``tests/support`` and
  ``tests/chaos/harness``); the images build that same wheel from a context without the tests.
- Benchmarks are product tooling: they import nothing from ``tests/`` but the self-contained
  ``tests.support`` kit (fakes and generators the benchmarks share with the tests).
- The library imports no tests and no service; its subpackages import each other without a cycle.
- A classify or NER worker on Triton runs without torch.
- ``kafka.writer``'s fast path reaches into FastStream's producer internals: pinned here.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIB = REPO / "libs" / "textpulse"
SERVICES = ("ingest", "classify", "ner", "route", "alert", "index", "recommend")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` (annotations only, never imported)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved), lazy ones included."""
    tree = ast.parse(path.read_text("utf-8"))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    names: set[str] = set()
    for node in _runtime_nodes(tree) if runtime_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            names.add(base)
            # `from pkg import sub` may import the submodule pkg.sub
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO / "libs") if path.is_relative_to(LIB) else path.relative_to(REPO)
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _product_files(root: Path) -> list[Path]:
    return [p for p in sorted(root.rglob("*.py")) if not p.name.startswith("test_") and "__pycache__" not in p.parts]


# --- who imports whom ---------------------------------------------------------------------------


def test_benchmarks_import_no_tests_but_the_support_kit() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imports(path) if _top(m) == "tests" and not m.startswith("tests.support")
        )
        for path in sorted((REPO / "bench").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_support_kit_is_self_contained() -> None:
    """What benchmarks may import from tests/ needs no test framework and nothing else from tests/."""
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m
            for m in _imports(path)
            if _top(m) in {"pytest", "hypothesis", "_pytest"}
            or (_top(m) == "tests" and not m.startswith("tests.support"))
        )
        for path in sorted((REPO / "tests" / "support").glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_product_imports_no_tests() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for root in (LIB, REPO / "services")
        for path in _product_files(root)
        if any(_top(m) == "tests" for m in _imports(path))
    ]
    assert offenders == []


def _import_module_literals(path: Path) -> set[str]:
    """String literals passed to importlib.import_module / __import__."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        arg = node.args[0]
        if name in {"import_module", "__import__"} and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add(arg.value)
    return found


def test_the_library_imports_no_service() -> None:
    """services/ depend on libs/, never the reverse (a service is started by its module name, not imported)."""
    offenders = {
        str(path.relative_to(REPO)): sorted(
            m for m in _imports(path) | _import_module_literals(path) if _top(m) == "services"
        )
        for path in _product_files(LIB)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: Imports that close a cycle, left to remove, each with who removes it; the test below fails once
#: one is gone, so the list only shrinks. contracts -> kafka: contracts.asyncapi reads the x-dlq-*
#: header names from kafka.dlq (they move into contracts with the dead-letter vocabulary, #24 item 2).
KNOWN_BACK_EDGES: set[tuple[str, str]] = {("contracts", "kafka")}


def _subpackage_graph() -> dict[str, set[str]]:
    """textpulse's subpackages (and top-level modules) -> those they import at run time."""
    graph: dict[str, set[str]] = {}
    for path in _product_files(LIB):
        rel = path.relative_to(LIB).with_suffix("").parts
        if rel == ("__init__",):
            continue
        src = rel[0]
        for name in _imports(path, runtime_only=True):
            parts = name.split(".")
            if parts[0] != "textpulse" or len(parts) < 2 or parts[1] == src:
                continue
            if (LIB / parts[1]).is_dir() or (LIB / f"{parts[1]}.py").is_file():
                graph.setdefault(src, set()).add(parts[1])
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycle_between_the_librarys_subpackages() -> None:
    graph = _subpackage_graph()
    assert "observability" in graph["kafka"]  # the graph is read (the broker factory wires metrics)
    stale = {(a, b) for a, b in KNOWN_BACK_EDGES if b not in graph.get(a, set())}
    assert stale == set(), f"imports gone, remove them from KNOWN_BACK_EDGES: {stale}"
    for a, b in KNOWN_BACK_EDGES:
        graph[a].discard(b)
    cycles = sorted(tuple(sorted(c)) for c in _cycles(graph))
    assert cycles == [], f"import cycles between textpulse subpackages: {cycles}"


# --- what the wheel and the images carry ----------------------------------------------------------

NOT_PRODUCT = ("testing.py", "synth.py", "pii_corpus.py", "conftest.py")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The file list of the wheel ``pip install .`` builds (from a copy: the build leaves build/ behind)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("libs", "services"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("textpulse-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_the_wheel_carries_the_product(wheel_files: list[str]) -> None:
    assert "textpulse/cli.py" in wheel_files
    assert "textpulse/py.typed" in wheel_files
    for service in SERVICES:
        assert f"services/{service}/app.py" in wheel_files
    assert "services/route/rules.yaml" in wheel_files


def test_the_wheel_carries_no_tests_fakes_generators_or_chaos_harness(wheel_files: list[str]) -> None:
    offenders = [
        name
        for name in wheel_files
        if Path(name).name.startswith("test_")
        or Path(name).name in NOT_PRODUCT
        or "chaos" in Path(name).parts
        or _top(name) == "tests"
    ]
    assert offenders == []


def test_the_source_tree_keeps_no_fakes_generators_or_chaos_harness_in_the_product() -> None:
    offenders = [
        str(p.relative_to(REPO))
        for root in (LIB, REPO / "services")
        for p in root.rglob("*.py")
        if p.name in NOT_PRODUCT or "chaos" in p.relative_to(root).parts
    ]
    assert offenders == []


def test_the_images_build_that_wheel_without_the_tests() -> None:
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text("utf-8").splitlines()}
    assert {"tests", "bench", "**/test_*.py"} <= ignored
    for service in SERVICES:
        text = (REPO / "services" / service / "Dockerfile").read_text("utf-8")
        # setup.py is what leaves the colocated tests out of the wheel
        assert "COPY pyproject.toml setup.py README.md ./" in text, service


def test_every_module_the_makefile_runs_exists() -> None:
    """``make test-models``, ``make chaos`` & co. name modules by path: a move must update them."""
    import importlib.util
    import re

    texts = [(REPO / "Makefile").read_text("utf-8")] + [p.read_text("utf-8") for p in sorted(REPO.glob("mk/*.mk"))]
    named = {
        m
        for text in texts
        for pair in re.findall(r"\$\(PY\) -m ([a-z_][\w.]*)|from ([a-z_][\w.]*) import", text)
        for m in pair
        if m and _top(m) in {"textpulse", "services", "tests", "bench"}
    }
    assert "tests.support.inference" in named  # make test-models
    assert "tests.chaos.harness" in named  # make chaos, make chaos-load
    assert sorted(m for m in named if importlib.util.find_spec(m) is None) == []


def test_the_cli_has_no_chaos_command() -> None:
    from textpulse.cli import app
    from typer.main import get_command

    assert "chaos" not in get_command(app).commands


# --- a Triton worker needs no torch --------------------------------------------------------------

# Runs in a fresh interpreter where torch (and, for the imports, transformers) cannot be imported,
# as in an image with the serving extra only. sys.modules[name] = None is what the import system
# reads as "not installed" (find_spec answers None, import raises ModuleNotFoundError).
NO_TORCH = """
import importlib, json, os, sys
from pathlib import Path

blocked = sys.argv[1].split(",")
for name in blocked:
    sys.modules[name] = None
os.environ["TEXTPULSE_TRITON_URL"] = "127.0.0.1:1"
for service in ("classify", "ner"):
    importlib.import_module(f"services.{service}.app").create_app()
from textpulse.inference.settings import InferenceSettings, make_backend
from textpulse.inference.triton import TritonBackend

assert isinstance(make_backend(InferenceSettings()), TritonBackend)
encoded = {}
if len(sys.argv) > 2:  # the codec the Triton backend tokenizes with (the Rust tokenizer alone)
    from textpulse.inference.codec import Codec

    for version_dir in sys.argv[2:]:
        codec = Codec(Path(version_dir), Path(version_dir).parent.name)
        encoded[codec.info.kind] = list(codec.encode(["Apple shares rose", "hi"]).input_ids.shape)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in blocked and sys.modules[m] is not None)
print(json.dumps({"loaded": loaded, "local": "textpulse.inference.local" in sys.modules, "encoded": encoded}))
"""


def _tiny_version(root: Path, kind: str) -> Path:
    """A model version folder with a fast tokenizer and labels: what the Triton codec reads."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    version = root / kind / "1"
    version.mkdir(parents=True)
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "apple": 4, "shares": 5, "rose": 6, "hi": 7}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.save(str(version / "tokenizer.json"))
    special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    (version / "tokenizer_config.json").write_text(json.dumps(special))
    labels = ["O", "B-ORG", "I-ORG"] if kind == "token" else ["negative", "neutral", "positive"]
    config = {"id2label": dict(enumerate(labels)), "textpulse": {"kind": kind, "max_length": 16}}
    (version / "config.json").write_text(json.dumps(config))
    return version


def _no_torch(blocked: str, *versions: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH, blocked, *map(str, versions)],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_triton_path_imports_neither_torch_nor_transformers() -> None:
    result = _no_torch("torch,transformers")
    assert result == {"loaded": [], "local": False, "encoded": {}}


def test_the_triton_codec_tokenizes_without_torch_or_transformers(tmp_path: Path) -> None:
    versions = [_tiny_version(tmp_path, "sequence"), _tiny_version(tmp_path, "token")]
    result = _no_torch("torch,transformers", *versions)
    assert result["loaded"] == []
    assert result["local"] is False
    assert result["encoded"] == {"sequence": [2, 5], "token": [2, 5]}


# --- kafka.writer's fast path: FastStream's producer internals ------------------------------------


async def test_the_writer_finds_the_producer_a_connected_broker_writes_with() -> None:
    """kafka.writer.faststream_producer reads ``broker.config.producer._producer.producer``; if FastStream
    moves it, the writer would silently fall back to one publish per record: this test fails instead."""
    from aiokafka import AIOKafkaProducer
    from faststream.kafka import TestKafkaBroker
    from textpulse.kafka.broker import make_broker
    from textpulse.kafka.writer import check_fast_path, faststream_producer
    from textpulse.settings import KafkaSettings

    broker = make_broker(KafkaSettings(), service="boundaries")

    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")

    async def no_start() -> None:  # nothing to reach: only the object FastStream wraps matters
        return None

    producer.start = no_start  # type: ignore[method-assign]
    # FastStream's own connect step (what KafkaBroker.connect runs after creating the producer).
    await broker.config.producer.connect(producer, serializer=None)
    assert faststream_producer(broker) is producer
    check_fast_path(broker)  # what start-up runs: no error while the path holds
    await producer.stop()

    # Under TestKafkaBroker there is no aiokafka producer: the writer publishes record by record.
    async with TestKafkaBroker(make_broker(KafkaSettings(), service="boundaries")) as fake:
        assert faststream_producer(fake) is None
        check_fast_path(fake)  # the expected slow path: not an error
