"""The one YAML/JSON + pydantic loader (textpulse.settings) as the training configs use it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict
from textpulse.ml.config import ConfigFileError, TrainConfig, load_config_file
from textpulse.settings import load_yaml_model

PROFILES = Path(__file__).resolve().parents[2] / "libs" / "textpulse" / "ml" / "profiles"


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = 1.0


def test_json_is_read_as_json_not_yaml_1_1(tmp_path: Path) -> None:
    # YAML 1.1 (PyYAML) reads 5e-05 as a string; a .json file keeps JSON's number.
    path = tmp_path / "c.json"
    path.write_text('{"lr": 5e-05, "epochs": 1}', "utf-8")
    assert load_config_file(path) == {"lr": 5e-05, "epochs": 1}
    doc = tmp_path / "doc.json"
    doc.write_text('{"lr": 5e-05}', "utf-8")
    assert load_yaml_model(doc, _Doc, what="doc").lr == 5e-05


def test_yaml_profile_and_empty_file(tmp_path: Path) -> None:
    values = load_config_file(PROFILES / "quick" / "phrasebank.yaml")
    assert values  # a shipped profile is a non-empty mapping
    TrainConfig(task="phrasebank", output_dir=tmp_path, **values)  # and its fields are TrainConfig's
    empty = tmp_path / "empty.yaml"
    empty.write_text("", "utf-8")
    assert load_config_file(empty) == {}


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("list.yaml", "- 1\n- 2\n", "<root>: Input should be a valid dictionary"),
        ("bad.yaml", "lr: [1\n", "invalid YAML"),
        ("bad.json", '{"lr": }', "invalid JSON"),
    ],
)
def test_errors_name_the_file_and_the_problem(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with pytest.raises(ConfigFileError) as caught:
        load_config_file(path)
    message = str(caught.value)
    assert message.startswith(f"training config {path}: ")
    assert problem in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"training config .*missing\.yaml: cannot read"):
        load_config_file(tmp_path / "missing.yaml")
    assert issubclass(ConfigFileError, ValueError)  # callers catching ValueError keep working


def test_json_fields_validate_through_the_shared_loader(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text('{"lr": "fast"}', "utf-8")
    with pytest.raises(ValueError, match=r"^doc .*doc\.json: lr: Input should be a valid number"):
        load_yaml_model(path, _Doc, what="doc")
