"""Loaders for the labelled data sets in ``TEXTPULSE_DATA_DIR``.

Light on purpose (standard library plus pydantic-settings) so services can
read data without importing torch.
"""

from textpulse.datasets.labels import OOS_LABEL, label_names
from textpulse.datasets.loaders import (
    detect_dataset,
    load_text_examples,
    load_token_examples,
    resolve_path,
)
from textpulse.datasets.records import TextExample, TokenExample
from textpulse.datasets.settings import DatasetSettings, data_dir
from textpulse.datasets.splits import dev_split

__all__ = [
    "OOS_LABEL",
    "DatasetSettings",
    "TextExample",
    "TokenExample",
    "data_dir",
    "detect_dataset",
    "dev_split",
    "label_names",
    "load_text_examples",
    "load_token_examples",
    "resolve_path",
]
