"""Where the labelled data sets live.

The data is read-only and shared between checkouts, so it is never copied into
the repository; every loader resolves paths through this one setting instead.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

#: ``<repo>`` is four levels above this file: ``<repo>/libs/textpulse/datasets/settings.py``.
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "datasets"


class DatasetSettings(BaseSettings):
    """``TEXTPULSE_DATA_DIR`` overrides the default ``<repo>/../shared/datasets``."""

    model_config = SettingsConfigDict(env_prefix="TEXTPULSE_", extra="ignore")

    data_dir: Path | None = None


def data_dir() -> Path:
    """Return the data directory, failing loudly when it cannot be found.

    Read on every call (not cached) so tests and CLIs can change the
    environment variable at run time.
    """
    configured = DatasetSettings().data_dir
    path = configured if configured is not None else DEFAULT_DATA_DIR
    if not path.is_dir():
        hint = "TEXTPULSE_DATA_DIR" if configured is not None else f"the default {DEFAULT_DATA_DIR}"
        msg = f"data directory {path} does not exist; set TEXTPULSE_DATA_DIR (checked {hint})"
        raise FileNotFoundError(msg)
    return path
