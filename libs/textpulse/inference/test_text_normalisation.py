"""A sequence model trained on normalised social text is served the same normalised text.

The normalisation is the model's own (``textpulse.text_normalisation`` in its config, written by
training): the codec applies it before tokenising, so the services, the benchmark's ceiling and
Triton's client-side tokenisation all show the encoder what it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from textpulse.ml.social import check_text_normalisation, model_text

from .codec import Codec
from .errors import ModelMismatch
from .test_tokenize_once import version_dir

RAW = [
    "Fed holds rates steady https://t.co/bd0xbFGjkT",
    "$AAPL falls 3% after @GoldmanSachs downgrade",
    "ok",
    "",
]


def _with_meta(path: Path, **meta: object) -> Path:
    config_path = path / "config.json"
    config = json.loads(config_path.read_text("utf-8"))
    config["textpulse"].update(meta)
    config_path.write_text(json.dumps(config), "utf-8")
    return path


def test_model_text_replaces_links_and_handles_only_when_asked() -> None:
    assert model_text(RAW[0], "social") == "Fed holds rates steady http"
    assert model_text(RAW[1], "social") == "$AAPL falls 3% after @user downgrade"
    assert model_text(RAW[0], "none") == RAW[0]
    # links only: a handle is kept (a source such as @opinion or @climate is a topic cue)
    assert model_text(RAW[1], "links") == RAW[1]
    assert model_text("@opinion: rates https://t.co/x (via @AP)", "links") == "@opinion: rates http (via @AP)"
    assert check_text_normalisation("links") == "links"
    assert check_text_normalisation(None) == "none"  # models trained before the option existed
    with pytest.raises(ValueError, match="unknown text normalisation 'lower'"):
        check_text_normalisation("lower")


def test_codec_shows_a_social_model_the_normalised_text(tmp_path: Path) -> None:
    social = Codec(_with_meta(version_dir(tmp_path / "a", "sequence"), text_normalisation="social"), "m")
    plain = Codec(version_dir(tmp_path / "b", "sequence"), "m")
    assert social.normalisation == "social"
    assert plain.normalisation == "none"
    got = social.encode(RAW)
    want = plain.encode([model_text(t, "social") for t in RAW])
    assert got.input_ids.tolist() == want.input_ids.tolist()
    assert got.attention_mask.tolist() == want.attention_mask.tolist()
    # and the plain model still sees the link's pieces: the option changes nothing for old models
    assert plain.encode(RAW[:1]).input_ids.tolist() != social.encode(RAW[:1]).input_ids.tolist()


def test_codec_shows_a_links_model_links_replaced_handles_kept(tmp_path: Path) -> None:
    links = Codec(_with_meta(version_dir(tmp_path / "a", "sequence"), text_normalisation="links"), "m")
    plain = Codec(version_dir(tmp_path / "b", "sequence"), "m")
    got = links.encode(RAW)
    want = plain.encode([model_text(t, "links") for t in RAW])
    assert got.input_ids.tolist() == want.input_ids.tolist()
    assert links.encode(RAW[1:2]).input_ids.tolist() == plain.encode(RAW[1:2]).input_ids.tolist()


def test_unknown_normalisation_fails_start_up_in_one_line(tmp_path: Path) -> None:
    path = _with_meta(version_dir(tmp_path, "sequence"), text_normalisation="lower")
    with pytest.raises(ModelMismatch, match="unknown text normalisation 'lower'") as info:
        Codec(path, "m")
    assert "\n" not in str(info.value)
