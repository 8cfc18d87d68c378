"""ONNX export of the recommend bi-encoder: encoder, masked mean pooling and L2 normalisation in one graph.

:func:`textpulse.recsys.train.export_embedding` calls :func:`export_onnx` on every exported version, so
the version folder holds ``model.onnx`` beside the safetensors weights, the tokenizer and the Triton
``model.py``. The recommend image serves that graph with ONNX Runtime (:class:`textpulse.recsys.embed.OnnxEncoder`)
and the Rust tokenizer, without torch or transformers: pooling and normalisation are in the graph so
one ``session.run`` turns token ids into unit vectors (no numpy post-processing to keep in sync with
:func:`textpulse.recsys.embed.mean_pool`).

Graph: inputs ``input_ids`` / ``attention_mask`` (INT64 ``[batch, seq]``), output ``embedding`` (FP32
``[batch, dim]``), the same names as the Triton model. Torch is needed here (export time) only.

A version exported before the ONNX export existed gets its graph without retraining:
``python -m textpulse.recsys.export [--repo REPO] [--version N]`` (default: the latest version).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from textpulse.recsys.embed import OUTPUT, TorchEncoder, mean_pool

log = logging.getLogger(__name__)

#: The opset of the text models' exports (textpulse.ml.export): ONNX Runtime 1.31 runs it on every provider.
ONNX_OPSET = 18
#: max |onnx - torch| over the unit vectors' components at export: both compute FP32 with the same
#: weights (measured ~1e-7 on the tiny test encoder); beyond this the graph is wrong, not rounded.
ONNX_TOLERANCE = 1e-4
#: Export check texts: item texts as the service builds them, of very different lengths (padding matters).
SAMPLES = (
    "Toy Story (1995). Genres: Adventure|Animation|Children|Comedy|Fantasy. Tags: pixar, fun",
    "Heat (1995). Genres: Action|Crime|Thriller",
    "x",
    "The Heist. Genres: Crime|Thriller. Tags: twist ending, ensemble cast, vault, double cross, 1970s, "
    "slow burn, great soundtrack, heist gone wrong, betrayal, long takes",
    "Paris in Love. Genres: Romance",
)


#: The dynamo exporter names the token-embedding lookup's value ``embedding`` (after ``aten.embedding``):
#: asking it for an output of that name gives a graph with two definitions of it, which ONNX Runtime
#: refuses. So the output is traced under this name and renamed afterwards (:func:`_rename_output`).
_TRACED_OUTPUT = "pooled_embedding"


def _rename_output(path: Path) -> None:
    """Name the graph's output ``embedding`` (the Triton model's name), renaming an inner value of that name."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    renames = {OUTPUT: f"{OUTPUT}_lookup", _TRACED_OUTPUT: OUTPUT}
    for node in graph.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
        node.output[:] = [renames.get(name, name) for name in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renames.get(value.name, value.name)
    for init in graph.initializer:
        init.name = renames.get(init.name, init.name)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(model_dir: Path, path: Path, samples: Sequence[str] = SAMPLES) -> float:
    """Write the pooled, normalised encoder of ``model_dir`` to ``path``; returns max |onnx - torch| on ``samples``.

    Dynamic batch and sequence axes (torch's dynamo exporter, as the text models). Raises RuntimeError
    when ONNX Runtime's vectors differ from :class:`TorchEncoder`'s by more than :data:`ONNX_TOLERANCE`.
    """
    import onnxruntime as ort
    import torch

    encoder = TorchEncoder(model_dir)

    class Pooled(torch.nn.Module):
        """Positional (input_ids, attention_mask) → unit vectors, what the exporter traces."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return mean_pool(hidden, attention_mask)

    example = encoder.tokenizer(
        ["a warm-up sentence for tracing", "short"], padding=True, truncation=True, return_tensors="pt"
    )
    batch = torch.export.Dim("batch", min=1, max=1024)
    # Any length the position embeddings allow, not just max_length: a caller may tokenise longer.
    positions = int(getattr(encoder.model.config, "max_position_embeddings", 512) or 512)
    seq = torch.export.Dim("sequence", min=2, max=min(positions, 512))
    dims = {0: batch, 1: seq}
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress; the CLI's stdout is JSON
        torch.onnx.export(
            Pooled(encoder.model).eval(),
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[_TRACED_OUTPUT],
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
        )
    _rename_output(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = encoder.tokenizer(
        list(samples), padding=True, truncation=True, max_length=encoder.max_length, return_tensors="np"
    )
    feeds = {key: encoded[key].astype(np.int64) for key in ("input_ids", "attention_mask")}
    (got,) = session.run([OUTPUT], feeds)
    want = encoder.encode(list(samples))
    diff = float(np.abs(np.asarray(got) - want).max())
    if diff > ONNX_TOLERANCE:
        path.unlink(missing_ok=True)
        msg = f"ONNX export of {model_dir} disagrees with torch: max |diff| = {diff:.2e} > {ONNX_TOLERANCE:g}"
        raise RuntimeError(msg)
    log.info("recommend encoder exported to ONNX", extra={"path": str(path), "max_abs_diff": diff})
    return diff


def add_to_version(version_dir: Path) -> float:
    """Write ``model.onnx`` into an exported version folder (one exported before this module existed).

    The graph is traced from the folder's own weights, written beside them atomically (a partial
    file is never served), and the manifest entry of that version, if any, records it. The folder's
    Triton ``model.py`` is replaced by today's, which serves the graph with ONNX Runtime on CPU
    instances (the older one ran torch only); Triton picks both up when it next loads the model.
    """
    from textpulse.recsys.embed import ONNX_FILE

    partial = version_dir / f".{ONNX_FILE}.partial"
    diff = export_onnx(version_dir, partial)
    partial.chmod(0o644)
    partial.replace(version_dir / ONNX_FILE)
    template = resources.files("textpulse.recsys.triton").joinpath("model.py").read_text("utf-8")
    script = version_dir / ".model.py.partial"
    script.write_text(template, "utf-8")
    script.chmod(0o644)
    script.replace(version_dir / "model.py")
    manifest_path = version_dir.parent.parent / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text("utf-8"))
        for entry in manifest.get("models", {}).get(version_dir.parent.name, {}).get("versions", []):
            if str(entry.get("version")) == version_dir.name:
                entry.update(onnx=ONNX_FILE, onnx_max_abs_diff=diff)
        tmp = manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        tmp.replace(manifest_path)
    return diff


cli = typer.Typer(add_completion=False, help=__doc__)


@cli.command()
def main(
    repo: Annotated[Path | None, typer.Option(help="Model repository (default TEXTPULSE_MODEL_REPO).")] = None,
    version: Annotated[str | None, typer.Option(help="Version folder (default: the latest).")] = None,
) -> None:
    """Add ``model.onnx`` to an exported recommend version, so the torch-free image can serve it."""
    from textpulse.inference.codec import resolve_version
    from textpulse.ml.settings import MLSettings
    from textpulse.recsys.train import MODEL_NAME

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    version_dir = resolve_version(repo or MLSettings().model_repo, MODEL_NAME, version)
    diff = add_to_version(version_dir)
    typer.echo(json.dumps({"onnx": str(version_dir / "model.onnx"), "onnx_max_abs_diff": diff}))


if __name__ == "__main__":
    cli()
