"""A model's Rust tokenizer and its padding settings, read from its files without transformers.

The serving images (classify, ner: ``deploy/docker/requirements-serve.lock``) carry ONNX Runtime and
``tokenizers`` but neither torch nor transformers, so the codec cannot build transformers'
``PreTrainedTokenizerFast``. It never needed its call API anyway: it runs the Rust pipeline
itself (encode, post-process, pad). What it needs from the wrapper are the settings the wrapper
reads from ``tokenizer_config.json``, resolved as ``PreTrainedTokenizerFast.__init__`` resolves
them: a key of ``tokenizer_config.json`` wins, else the padding / truncation stored in
``tokenizer.json``, else transformers' defaults (right side, no splitting of special tokens); the
special tokens it names are added when ``tokenizer.json`` lacks them. ``test_tokenize_once``
checks the result against transformers' own call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The named special tokens of transformers' tokenizers (``SPECIAL_TOKENS_ATTRIBUTES``).
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
#: Lists of further special tokens (transformers 4 and 5 spellings).
EXTRA_SPECIAL_KEYS = ("additional_special_tokens", "extra_special_tokens")


@dataclass(frozen=True, slots=True)
class RustTokenizer:
    """``tokenizer`` (a ``tokenizers.Tokenizer`` without truncation or padding) and how to pad its batches."""

    tokenizer: Any
    pad_token: str | None
    pad_token_id: int | None
    padding_side: str
    truncation_side: str
    split_special_tokens: bool


def _content(value: Any) -> str | None:
    """A token of ``tokenizer_config.json``: a string or an AddedToken dict (``{"content": ...}``)."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def load_rust_tokenizer(directory: Path) -> RustTokenizer:
    """The fast tokenizer of a model folder (``tokenizer.json`` + ``tokenizer_config.json``).

    FileNotFoundError when there is no ``tokenizer.json`` (slow tokenizers are not served).
    """
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    if not path.is_file():
        msg = f"{directory}: a fast (Rust) tokenizer is required (tokenizer.json)"
        raise FileNotFoundError(msg)
    tokenizer = Tokenizer.from_file(str(path))
    config_path = directory / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text("utf-8")) if config_path.is_file() else {}
    padding: dict[str, Any] = tokenizer.padding or {}
    truncation: dict[str, Any] = tokenizer.truncation or {}
    pad_token = _content(config["pad_token"]) if "pad_token" in config else _content(padding.get("pad_token"))
    specials = [pad_token, *(_content(config.get(key)) for key in SPECIAL_TOKEN_KEYS)]
    for key in EXTRA_SPECIAL_KEYS:
        specials += [_content(value) for value in config.get(key) or ()]
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    missing = [token for token in dict.fromkeys(specials) if token and token not in added]
    if missing:  # as transformers does: a special token the config names becomes an added special token
        tokenizer.add_special_tokens(missing)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    split = bool(config.get("split_special_tokens", False))
    tokenizer.encode_special_tokens = split
    return RustTokenizer(
        tokenizer=tokenizer,
        pad_token=pad_token,
        pad_token_id=tokenizer.token_to_id(pad_token) if pad_token else None,
        padding_side=str(config.get("padding_side") or padding.get("direction") or "right"),
        truncation_side=str(config.get("truncation_side") or truncation.get("direction") or "right"),
        split_special_tokens=split,
    )
