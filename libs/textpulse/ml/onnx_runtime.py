"""ONNX Runtime graphs and sessions: the default CPU runtime of textpulse models.

An exported version folder holds three graphs with the same inputs
(``input_ids``, ``attention_mask``: INT64 ``[batch, seq]``) and outputs
(``logits``, ``logits_<head>`` per extra head):

``model.onnx``       the plain export (torch dynamo exporter), the reference graph;
``model.opt.onnx``   transformer fusions by ``onnxruntime.transformers.optimizer``
                     (EmbedLayerNormalization, Attention, BiasGelu, SkipLayerNormalization),
                     FP32, checked against ``model.onnx``;
``model.int8.onnx``  dynamic int8 quantisation of ``model.opt.onnx``: int8 weights per
                     output channel, uint8 activations quantised per batch
                     (``MatMulInteger`` / ``QAttention``: u8 x s8 is the AVX-512 VNNI path).

Why a second export for the fused graph: the optimiser's BERT patterns match the
attention subgraph the TorchScript exporter writes with eager attention, not the
scaled-dot-product decomposition of the dynamo exporter (that one gets SkipLayerNorm
and BiasGelu only). The fused graph is therefore traced from the same weights with
``dynamo=False`` + eager attention and then compared with ``model.onnx``; when that
exporter is unavailable the plain graph is optimised instead (fewer fusions).

bf16: ONNX Runtime's CPU provider has no bf16 kernels for these ops (MatMul, Attention,
LayerNorm), so bf16 runs only through torch (``Predictor(..., backend="torch",
precision="bf16")``, AVX512-BF16 on this CPU) and is kept as a measured option
(``make bench-int8``), not a default.

This module imports neither torch nor transformers at import time: the serving path
(:func:`create_session`, :func:`graph_path`) must stay torch-free so an ORT process
holds ~100-300 MB instead of ~1.5 GB. Only :func:`write_runtime_graphs` (export time)
imports torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

    from textpulse.ml.modeling import TextPulseModel

log = logging.getLogger(__name__)

PLAIN_FILE = "model.onnx"
OPT_FILE = "model.opt.onnx"
INT8_FILE = "model.int8.onnx"

Precision = Literal["fp32", "int8", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "bf16")

#: Per version folder: the precision each runtime serves when none is configured, recorded by
#: ``make bench-int8 BENCH_INT8_ARGS=--record`` (the fastest precision whose dev quality cost is at most
#: 1 point on every head of that model). Absent: fp32. Measured, not assumed: int8 passes the rule on
#: sentiment/topic/intent/ner but costs 1.18 macro-F1 points on finance's sentiment head.
SERVING_FILE = "serving.json"


def measured_precision(directory: Path, runtime: str) -> Precision | None:
    """The recorded default precision of ``runtime`` for this version folder (``None``: not measured)."""
    path = directory / SERVING_FILE
    if not path.is_file():
        return None
    value = json.loads(path.read_text("utf-8")).get("defaults", {}).get(runtime)
    return value if value in PRECISIONS else None


#: max |optimised - plain| in logit units: fusions reorder FP32 sums (measured ~1e-6)
OPT_TOLERANCE = 1e-3
#: int8 is a different model numerically; this only catches a broken graph (labels are measured on dev data)
INT8_TOLERANCE = 2.0


def graph_path(directory: Path, precision: str) -> Path:
    """The ONNX graph serving ``precision`` in a version folder (fp32: the fused graph, else the plain one)."""
    if precision == "fp32":
        for name in (OPT_FILE, PLAIN_FILE):
            if (directory / name).is_file():
                return directory / name
        msg = f"{directory} has no {OPT_FILE} or {PLAIN_FILE} (exported with --no-onnx?)"
        raise FileNotFoundError(msg)
    if precision == "int8":
        if (directory / INT8_FILE).is_file():
            return directory / INT8_FILE
        msg = f"{directory} has no {INT8_FILE}: re-export the model (textpulse export) to write it"
        raise FileNotFoundError(msg)
    msg = (
        f"precision {precision!r} does not run on ONNX Runtime's CPU provider (no bf16 kernels for these ops): "
        "use fp32 or int8, or runtime torch for bf16"
    )
    raise ValueError(msg)


def has_graph(directory: Path) -> bool:
    """True when the version folder holds any ONNX graph."""
    return any((directory / name).is_file() for name in (OPT_FILE, PLAIN_FILE, INT8_FILE))


def session_options(threads: int | None = None, *, spinning: bool = False) -> ort.SessionOptions:
    """Session options for serving on a shared CPU.

    * ``intra_op_num_threads``: threads of one operator (default: ORT's choice, one per
      physical core of the *host*: it ignores a container's CPU quota). Services set it
      (``TEXTPULSE_LOCAL_THREADS``, which defaults to a container's quota or cpuset,
      ``textpulse.inference.cpus``; Triton ``torch_threads``) when several models or processes
      share the cores, so they do not oversubscribe.
    * ``inter_op_num_threads`` 1 with sequential execution: a BERT graph is a chain, parallel
      branches would only add threads.
    * ``graph_optimization_level`` ORT_ENABLE_ALL: the fused graph still gains ORT's own
      layout and constant-folding passes at load (cheap: done once per session).
    * spinning off by default: idle pool threads otherwise busy-wait ~ms after each op, which
      burns the cores the event loop, Kafka client and the other models need; the cost is a
      little latency on back-to-back ops (measure with ``spinning=True`` on a dedicated host).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    allow = "1" if spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", allow)
    options.add_session_config_entry("session.inter_op.allow_spinning", allow)
    return options


def create_session(path: Path, threads: int | None = None, *, spinning: bool = False) -> ort.InferenceSession:
    """A CPU inference session over ``path`` (see :func:`session_options`)."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(path), session_options(threads, spinning=spinning), providers=["CPUExecutionProvider"]
    )


def model_shape(directory: Path) -> tuple[int, int]:
    """(num_attention_heads, hidden_size) from ``config.json`` (the optimiser needs both)."""
    config = json.loads((directory / "config.json").read_text("utf-8"))
    return int(config["num_attention_heads"]), int(config["hidden_size"])


def optimize_graph(source: Path, target: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse the transformer subgraphs of ``source`` into ``target``; returns the fused-operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level 0: python fusions only; ORT's own level-99 passes run at session creation and
    # would bake hardware-specific layouts into the file.
    optimized = optimize_model(
        str(source), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=False
    )
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    optimized.save_model_to_file(str(target))
    return stats


def ffn_down_projections(graph_path: Path) -> list[str]:
    """Names of the MatMuls that project each FFN's GELU output back to the hidden size.

    Found by shape, not by name: the only MatMuls whose constant weight has ``intermediate_size``
    rows (``[intermediate, hidden]``), i.e. the ones whose input is the GELU output.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph_path), load_external_data=False)
    shapes = {init.name: tuple(numpy_helper.to_array(init).shape) for init in model.graph.initializer}
    matmuls = [
        (node.name, shapes[node.input[1]])
        for node in model.graph.node
        if node.op_type == "MatMul" and len(node.input) > 1 and len(shapes.get(node.input[1], ())) == 2  # noqa: PLR2004
    ]
    if not matmuls:
        return []
    # [in, out] weights: the FFN down-projection is the one with the most input rows (intermediate > hidden)
    widest = max(shape[0] for _, shape in matmuls)
    return [name for name, shape in matmuls if shape[0] == widest and shape[0] > shape[1]]


def quantize_graph(source: Path, target: Path, keep_fp32: Sequence[str] | None = None) -> list[str]:
    """Dynamic int8 of ``source`` into ``target``; returns the MatMuls kept in FP32 (``keep_fp32``,
    default :func:`ffn_down_projections`; ``bench.int8_recipes`` compares other choices).

    MatMul/Attention weights QInt8 per output channel, activations QUInt8 per batch: u8
    activations x s8 weights is what AVX-512 VNNI (VPDPBUSD) multiplies natively, so no
    ``reduce_range``. Per-channel weights halve the logit error of per-tensor ones on these
    models. Embeddings stay FP32 (a gather: nothing to gain, and NER is sensitive to them).

    The FFN down-projections (:func:`ffn_down_projections`) stay FP32: their input is the GELU
    output, whose few large outliers set the per-batch activation scale and crush every other
    value into a handful of int8 steps. Measured on the finance model's dev splits (600 + 600):
    quantising every MatMul cost 1.18 macro-F1 points on sentiment (98.0 % label agreement);
    keeping these six MatMuls in FP32 costs 0.08 (98.8 %) and topic 0.00, at 1.9x FP32's speed
    instead of 2.2x (``docs/models.md``, ``make bench-int8``).
    ``DefaultTensorType``: fused contrib ops (Attention, SkipLayerNormalization) have no ONNX
    shape inference, which made the quantiser fail on their outputs' types.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = list(ffn_down_projections(source) if keep_fp32 is None else keep_fp32)
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Attention"],
        nodes_to_exclude=keep_fp32,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT},
    )
    return keep_fp32


def max_abs_diff(reference: Path, candidate: Path, input_ids: np.ndarray, attention_mask: np.ndarray) -> float:
    """Largest |candidate - reference| over every output (token logits: real positions only)."""
    feeds = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
    ref_session, cand_session = create_session(reference), create_session(candidate)
    names = [o.name for o in ref_session.get_outputs()]
    keep = attention_mask.astype(bool)
    diff = 0.0
    for ref, cand in zip(ref_session.run(names, feeds), cand_session.run(names, feeds), strict=True):
        a, b = np.asarray(ref), np.asarray(cand)
        if a.ndim == 3:  # noqa: PLR2004 - token logits: padding positions carry no meaning
            a, b = a[keep], b[keep]
        diff = max(diff, float(np.abs(a - b).max()))
    return diff


def _export_fusable(model: TextPulseModel, tokenizer: Any, path: Path, output_names: list[str]) -> None:
    """TorchScript export with eager attention: the graph shape the BERT fusions recognise."""
    import torch

    from textpulse.ml.export import _OnnxWrapper  # the exporter's positional wrapper; imports torch

    encoder = model.encoder
    previous = getattr(encoder.config, "_attn_implementation", None)
    encoder.set_attn_implementation("eager")
    try:
        example = tokenizer(["a warm-up sentence for tracing", "short"], padding=True, return_tensors="pt")
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
        for name in output_names:
            axes[name] = {0: "batch", 1: "sequence"} if model.kind == "token" else {0: "batch"}
        with contextlib.redirect_stdout(sys.stderr), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                _OnnxWrapper(model).eval(),
                (example["input_ids"], example["attention_mask"]),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=output_names,
                opset_version=17,
                dynamo=False,
                dynamic_axes=axes,
            )
    finally:
        if previous:
            encoder.set_attn_implementation(previous)


def write_runtime_graphs(
    model: TextPulseModel,
    tokenizer: Any,
    directory: Path,
    samples: list[str],
    output_names: list[str],
    *,
    int8: bool = True,
) -> dict[str, Any]:
    """Write ``model.opt.onnx`` (and ``model.int8.onnx``) next to ``model.onnx`` and check both.

    Returns what the manifest records: fused-operator counts and max |diff| to the plain graph.
    Raises when the fused graph disagrees with the plain one by more than :data:`OPT_TOLERANCE`.
    """
    num_heads, hidden_size = model_shape(directory)
    plain = directory / PLAIN_FILE
    with tempfile.TemporaryDirectory(prefix="textpulse-onnx-") as tmp:
        source = Path(tmp) / "fusable.onnx"
        try:
            _export_fusable(model, tokenizer, source, output_names)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: optimise the plain graph instead
            log.warning("TorchScript export for fusion failed (%s); optimising %s (fewer fusions)", exc, PLAIN_FILE)
            source = plain
        fused = optimize_graph(source, directory / OPT_FILE, num_heads=num_heads, hidden_size=hidden_size)
    encoded = tokenizer(samples, padding=True, truncation=True, max_length=128, return_tensors="np")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    opt_diff = max_abs_diff(plain, directory / OPT_FILE, ids, mask)
    if opt_diff > OPT_TOLERANCE:
        msg = f"{OPT_FILE} disagrees with {PLAIN_FILE}: max |diff| = {opt_diff:.2e}"
        raise RuntimeError(msg)
    info: dict[str, Any] = {"onnx_opt": OPT_FILE, "onnx_fused_ops": fused, "onnx_opt_max_abs_diff": opt_diff}
    if int8:
        kept = quantize_graph(directory / OPT_FILE, directory / INT8_FILE)
        int8_diff = max_abs_diff(plain, directory / INT8_FILE, ids, mask)
        if int8_diff > INT8_TOLERANCE:
            msg = f"{INT8_FILE} is far from {PLAIN_FILE}: max |diff| = {int8_diff:.2f} logits"
            raise RuntimeError(msg)
        info |= {"onnx_int8": INT8_FILE, "onnx_int8_max_abs_diff": int8_diff, "onnx_int8_fp32_matmuls": len(kept)}
    return info


def add_runtime_graphs(version_dir: Path, *, force: bool = False) -> dict[str, Any]:
    """Write the ORT graphs into a version folder exported before they existed (adds files only).

    ``textpulse runtime-graphs <model or version dir>...``; a folder that already
    has ``model.opt.onnx`` is left alone unless ``force``.
    """
    from textpulse.ml.modeling import load_model

    if (version_dir / OPT_FILE).is_file() and not force:
        return {"onnx_opt": OPT_FILE, "skipped": True}
    if not (version_dir / PLAIN_FILE).is_file():
        msg = f"{version_dir} has no {PLAIN_FILE} to optimise (exported with --no-onnx)"
        raise FileNotFoundError(msg)
    from textpulse.ml.export import _SAMPLES, output_names_of  # the exporter's check texts and output names

    model, tokenizer, _ = load_model(version_dir)
    return write_runtime_graphs(model, tokenizer, version_dir, _SAMPLES, output_names_of(model))
