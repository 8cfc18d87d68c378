"""Export a trained model into a Triton model repository (python backend + ONNX).

Layout (see ``EXPORT_FORMAT.md``)::

    <repo>/manifest.json
    <repo>/<name>/config.pbtxt            python backend, KIND_CPU (default)
    <repo>/<name>/configs/gpu.pbtxt       GPU production: ONNX Runtime + TensorRT FP16 over model.onnx
    <repo>/<name>/configs/gpu-python.pbtxt  python backend, KIND_GPU (bf16)
    <repo>/<name>/<version>/model.py      Triton python backend (ONNX Runtime on CPU, torch on GPU)
    <repo>/<name>/<version>/model.safetensors, config.json, tokenizer files,
                                id2label.json, model.onnx (+ .opt / .int8), metrics.json, README.md
    <repo>/<name>/<version>/reference.json  per head: label mix and confidence histogram of the model's
                                predictions on its dev split (the drift reference, textpulse.ml.drift)

Each export writes the next version number, so Triton (version policy
``latest``) picks it up and older versions stay for rollback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textpulse.ml.drift import HeadReference, head_reference, write_reference
from textpulse.ml.modeling import TOKENIZER_FILES, WEIGHTS_FILE, TextPulseModel, labels_of, load_model
from textpulse.ml.onnx_runtime import write_runtime_graphs
from textpulse.ml.social import placeholder_of
from textpulse.ml.tokenization import bio_entities
from textpulse.ml.triton import config as triton_config

log = logging.getLogger(__name__)

ONNX_OPSET = 18
ONNX_FILE = "model.onnx"
#: dev examples per head behind ``reference.json``: enough for a stable 10-bin histogram, seconds on a CPU
REFERENCE_LIMIT = 1000
MANIFEST = "manifest.json"
COPIED_FILES = (
    "config.json",
    WEIGHTS_FILE,
    *TOKENIZER_FILES,
    "id2label.json",
    "metrics.json",
    "training_config.json",
    "README.md",
    "confusion_matrix.png",
)


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version folder (1 for a new model)."""
    versions = (
        [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    )
    return max(versions, default=0) + 1


def latest_version_dir(model_dir: Path) -> Path:
    """Highest numeric version folder of an exported model."""
    versions = sorted((int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        msg = f"{model_dir} has no numeric version folders"
        raise FileNotFoundError(msg)
    return versions[-1][1]


#: CPU layout of an exported model: instances x single-thread runtimes, as the in-process "streams" layout.
#: Measured with ``python -m bench.bench_pipeline --backends triton --triton-instances N`` on the 2-core
#: machine (five alternating rounds each, 3,000 tweets): 2 x 1 thread 0.64-0.72x the raw ceiling (mean
#: 0.67) against 0.55-0.61x (mean 0.58) for 1 x 1 (docs/models.md "CPU layout"). One instance runs one
#: batch at a time, so its core idles while the stub and the server move the next batch; a second
#: instance fills that gap. Scale with ``--instances`` to the cores (instances x threads x models may
#: exceed them by about 2x).
CPU_INSTANCES = 2
CPU_THREADS = 1
#: Instances per GPU of the GPU variants (configs/gpu*.pbtxt): not measured here (no GPU), kept at one.
GPU_INSTANCES = 1


def python_parameters(
    kind: str,
    *,
    precision: str,
    torch_threads: int = CPU_THREADS,
    max_sequence_length: int = 512,
    parameters: dict[str, str] | None = None,
) -> dict[str, str]:
    """The ``parameters`` ``model.py`` reads; ``parameters`` adds keys or overrides these."""
    return {
        "torch_threads": str(torch_threads),
        "precision": precision,
        "max_sequence_length": str(max_sequence_length),
        "task_kind": kind,
        **(parameters or {}),
    }


def render_config_pbtxt(
    name: str,
    kind: str,
    num_labels: int,
    *,
    gpu: bool = False,
    max_batch_size: int = 64,
    instances: int | None = None,
    torch_threads: int = CPU_THREADS,
    max_queue_delay_us: int = 2000,
    max_sequence_length: int = 512,
    extra_heads: dict[str, int] | None = None,
    precision: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """Triton model configuration for the python backend (built by :mod:`textpulse.ml.triton.config`).

    ``precision`` (``model.py``): default auto on the CPU (the version's measured default) and bf16 on the
    GPU variant;
    ``parameters`` adds string parameters (or overrides the ones above).

    Inputs are ``[-1]`` per batch row with ``allow_ragged_batch`` so requests
    padded to different lengths still share one dynamic batch (``model.py``
    re-pads them together).
    """
    config = triton_config.python_backend_config(
        name,
        triton_config.classifier_outputs(kind, num_labels, extra_heads),
        gpu=gpu,
        max_batch_size=max_batch_size,
        instances=instances if instances is not None else (GPU_INSTANCES if gpu else CPU_INSTANCES),
        max_queue_delay_us=max_queue_delay_us,
        parameters=python_parameters(
            kind,
            precision=precision or ("bf16" if gpu else "auto"),
            torch_threads=torch_threads,
            max_sequence_length=max_sequence_length,
            parameters=parameters,
        ),
    )
    return triton_config.render(config)


class _OnnxWrapper(torch.nn.Module):
    """Positional (input_ids, attention_mask) -> logits for the exporter."""

    def __init__(self, model: TextPulseModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.forward_heads(input_ids, attention_mask).values())


def export_onnx(model: TextPulseModel, tokenizer: Any, path: Path, samples: list[str]) -> float:
    """Export with dynamic batch/sequence axes and return max |onnx - torch| on ``samples``.

    Raises when the two disagree by more than 1e-3 (logit units).
    """
    import onnxruntime as ort

    wrapper = _OnnxWrapper(model).eval()
    output_names = output_names_of(model)
    example = tokenizer(["a warm-up sentence for tracing", "short"], padding=True, return_tensors="pt")
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("sequence", min=2, max=512)
    dims = {0: batch, 1: seq}
    with contextlib.redirect_stdout(sys.stderr):  # the exporter prints progress; keep stdout for JSON
        torch.onnx.export(
            wrapper,
            (example["input_ids"], example["attention_mask"]),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=output_names,
            opset_version=ONNX_OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    encoded = tokenizer(samples, padding=True, truncation=True, max_length=128, return_tensors="np")
    ids = encoded["input_ids"].astype(np.int64)
    mask = encoded["attention_mask"].astype(np.int64)
    onnx_outputs = session.run(output_names, {"input_ids": ids, "attention_mask": mask})
    with torch.inference_mode():
        torch_outputs = [t.numpy() for t in model.forward_heads(torch.from_numpy(ids), torch.from_numpy(mask)).values()]
    diff = 0.0
    keep = mask.astype(bool)
    for onnx_logits, torch_logits in zip(onnx_outputs, torch_outputs, strict=True):
        if onnx_logits.ndim == 3:  # noqa: PLR2004 - token logits: padding positions carry no meaning
            diff = max(diff, float(np.abs(onnx_logits[keep] - torch_logits[keep]).max()))
        else:
            diff = max(diff, float(np.abs(onnx_logits - torch_logits).max()))
    if diff > 1e-3:  # noqa: PLR2004
        msg = f"ONNX export disagrees with torch: max |diff| = {diff:.2e}"
        raise RuntimeError(msg)
    return diff


def output_names_of(model: TextPulseModel) -> list[str]:
    """``logits`` for the primary head, ``logits_<name>`` for each extra head."""
    return ["logits", *(f"logits_{name}" for name in model.extra_heads)]


_SAMPLES = [
    "$AAPL beats estimates, shares jump 5% after hours",
    "Fed signals it may pause rate hikes",
    "I lost my card, can you block it?",
    "Goldman Sachs hired Jane Smith in London",
    "ok",
]


def export_model(
    model_dir: Path,
    repo: Path,
    name: str,
    *,
    onnx: bool = True,
    max_batch_size: int = 64,
    torch_threads: int = CPU_THREADS,
    instances: int = CPU_INSTANCES,
    precision: str = "auto",
    reference: bool = True,
    reference_limit: int = REFERENCE_LIMIT,
) -> dict[str, Any]:
    """Write ``<repo>/<name>/<next version>/`` plus configs and update the manifest.

    ``precision`` goes into the CPU ``config.pbtxt``: auto (the model's measured default from its
    ``serving.json``, else fp32; what the in-process backend serves too), fp32 or int8; the python GPU
    variant serves bf16.
    ``reference`` writes ``reference.json`` from at most ``reference_limit`` dev examples per head
    (skipped with a warning when the training data cannot be read here).
    """
    if precision not in {"auto", "fp32", "int8"}:
        msg = f"CPU precision must be auto, fp32 or int8, not {precision!r}"
        raise ValueError(msg)
    model, tokenizer, meta = load_model(model_dir)
    labels = labels_of(model.encoder.config)
    model_root = repo / name
    version = next_version(model_root)
    target = model_root / str(version)
    staging = model_root / f".{version}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for file_name in COPIED_FILES:
        if (model_dir / file_name).is_file():
            shutil.copy2(model_dir / file_name, staging / file_name)
    template = resources.files("textpulse.ml.triton").joinpath("model.py")
    (staging / "model.py").write_text(template.read_text("utf-8"), "utf-8")
    onnx_diff = export_onnx(model, tokenizer, staging / ONNX_FILE, _SAMPLES) if onnx else None
    # model.opt.onnx (fused, FP32) + model.int8.onnx: what the ORT runtime serves (textpulse.ml.onnx_runtime)
    runtime_graphs = write_runtime_graphs(model, tokenizer, staging, _SAMPLES, output_names_of(model)) if onnx else {}
    reference_file = _reference(model, tokenizer, meta, model_dir, staging, reference_limit) if reference else None
    for path in staging.iterdir():
        path.chmod(0o644)  # readable by a container's non-root triton-server user
    staging.rename(target)  # a half-written version never becomes visible to Triton

    kind = meta["kind"]
    max_sequence_length = int(meta.get("max_length", 512))
    extra_heads = {head: len(names) for head, names in (meta.get("extra_heads") or {}).items()}
    # config.pbtxt (CPU), configs/gpu-python.pbtxt and configs/gpu.pbtxt (ONNX Runtime + TensorRT FP16
    # over model.onnx when it was exported), each checked against the model's heads and the ONNX graph.
    triton_config.write_model_configs(
        model_root,
        name,
        triton_config.classifier_outputs(kind, len(labels), extra_heads),
        cpu_parameters=python_parameters(
            kind,
            precision=precision,
            torch_threads=torch_threads,
            max_sequence_length=max_sequence_length,
            parameters={"runtime": "onnx" if onnx else "torch"},  # model.py: ONNX Runtime on CPU when exported
        ),
        gpu_parameters=python_parameters(
            kind,
            precision="bf16",
            torch_threads=torch_threads,
            max_sequence_length=max_sequence_length,
            parameters={"runtime": "torch"},
        ),
        onnx_path=target / ONNX_FILE if onnx else None,
        max_sequence_length=max_sequence_length,
        max_batch_size=max_batch_size,
        instances=instances,
        gpu_instances=GPU_INSTANCES,
    )

    metrics_path = model_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    dev = metrics.get("dev", {})
    entry = {
        "version": version,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": str(model_dir.resolve()),
        "task": meta.get("task"),
        "kind": kind,
        "labels": labels,
        "extra_heads": meta.get("extra_heads") or {},
        "outputs": output_names_of(model),
        "base_model": meta.get("base_model"),
        "parameters": meta.get("parameters"),
        "training_data": meta.get("train_data"),
        "dev_data": meta.get("dev_data"),
        "data_licence": meta.get("data_licence"),
        "metrics": {k: v for k, v in dev.items() if not isinstance(v, dict)},
        "oos_threshold": meta.get("oos_threshold"),
        "onnx": ONNX_FILE if onnx else None,
        "onnx_max_abs_diff": onnx_diff,
        "reference": reference_file,
        **runtime_graphs,
    }
    _update_manifest(repo, name, entry)
    log.info("exported %s version %d to %s", name, version, target)
    return entry


def _reference(
    model: TextPulseModel, tokenizer: Any, meta: dict[str, Any], model_dir: Path, target: Path, limit: int
) -> str | None:
    """Write ``reference.json`` (the drift reference) into ``target``; its file name, or None when skipped.

    The dev split is rebuilt from the saved ``training_config.json`` (the same carve and seeds as
    training), at most ``limit`` examples per head, and run through the torch model once per head.
    """
    saved = model_dir / "training_config.json"
    if not saved.is_file():
        log.warning("no %s: %s is exported without reference.json (no drift gauge)", saved.name, model_dir)
        return None
    try:
        heads = reference_heads(model, tokenizer, meta, saved, limit)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("dev data unreadable (%s): %s is exported without reference.json (no drift gauge)", exc, model_dir)
        return None
    return write_reference(target, heads, f"dev split of {saved.name}, at most {limit} examples per head").name


def reference_heads(
    model: TextPulseModel, tokenizer: Any, meta: dict[str, Any], saved_config: Path, limit: int
) -> dict[str, HeadReference]:
    """Each head's predicted label mix and confidence histogram on (at most ``limit`` of) its dev split."""
    from textpulse.ml.config import TrainConfig, resolve_task
    from textpulse.ml.data import encode_text_examples, encode_token_examples
    from textpulse.ml.inference import run_batches, softmax, torch_logits_fn
    from textpulse.ml.train import dev_examples_for, extra_task_config

    config = TrainConfig.model_validate_json(saved_config.read_text("utf-8"))
    config = config.model_copy(update={"limit_dev": min(config.limit_dev or limit, limit)})
    labels = labels_of(model.encoder.config)
    model.eval()
    out: dict[str, HeadReference] = {}
    primary = str(meta.get("task") or config.task)
    if meta["kind"] == "token":
        examples = [e for e in dev_examples_for(config) if hasattr(e, "tokens")]
        unknown_tag = defaultdict(int, {label: i for i, label in enumerate(labels)})  # dev tags are not needed
        rows = encode_token_examples(tokenizer, examples, unknown_tag, config.max_length)  # type: ignore[arg-type]
        logits = run_batches(torch_logits_fn(model), rows, tokenizer.pad_token_id, config.eval_batch_size)
        types: list[str] = []
        scores: list[float] = []
        for example, row, row_logits in zip(examples, rows, logits, strict=True):
            probs = softmax(np.asarray(row_logits, dtype=np.float32))
            words = sorted({w for w in row.word_ids or [] if w is not None})
            first = {w: row.word_ids.index(w) for w in words} if row.word_ids else {}
            # a link or handle is never part of an entity at serving (spans_from_tags): the same here
            tags = [
                (
                    "O" if placeholder_of(example.tokens[w]) else labels[int(probs[first[w]].argmax())],
                    float(probs[first[w]].max()),
                )
                for w in words
            ]
            for entity_type, score in entity_spans(tags):
                types.append(entity_type)
                scores.append(score)
        entity_types = sorted({label.split("-", 1)[-1] for label in labels if label != "O"})
        out[primary] = head_reference(entity_types, types, scores)
        return out
    oos_threshold = meta.get("oos_threshold")
    for index, task in enumerate([config.task, *config.extra_tasks]):
        name, preset = resolve_task(task)
        head = "" if index == 0 else name
        head_labels = labels if index == 0 else list((meta.get("extra_heads") or {}).get(name, []))
        if not head_labels:
            continue
        task_config = extra_task_config(config, name) if index else config
        examples = [e for e in dev_examples_for(task_config) if hasattr(e, "text")]
        rows = encode_text_examples(tokenizer, examples, {}, config.max_length)  # type: ignore[arg-type]
        logits = run_batches(torch_logits_fn(model, head=head), rows, tokenizer.pad_token_id, config.eval_batch_size)
        if not logits:
            continue
        probs = softmax(np.stack(logits))
        best = probs.argmax(axis=1)
        confidence = probs[np.arange(len(probs)), best]
        predicted = [head_labels[i] for i in best]
        if index == 0 and preset.oos_label and oos_threshold is not None:
            # the service's decision rule (textpulse.inference.codec): below the threshold, out of scope
            predicted = [
                preset.oos_label if c < oos_threshold else p for p, c in zip(predicted, confidence, strict=True)
            ]
        out[primary if index == 0 else name] = head_reference(head_labels, predicted, confidence)
    return out


def entity_spans(tags: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """(type, mean word score) of each entity in word-level BIO ``(tag, score)`` pairs.

    The service's decoding rules (:func:`~textpulse.ml.tokenization.bio_entities`, shared with
    ``spans_from_tags``) on pre-split words, each following the one before: a lenient ``I-X``
    starts an entity and a ``B-X`` right after an open ``X`` continues it, so the drift
    reference counts entities the way the NER service publishes them.
    """
    return [
        (kind, sum(tags[i][1] for i in indices) / len(indices)) for kind, indices in bio_entities([t for t, _ in tags])
    ]


def _update_manifest(repo: Path, name: str, entry: dict[str, Any]) -> None:
    path = repo / MANIFEST
    manifest = json.loads(path.read_text("utf-8")) if path.is_file() else {"models": {}}
    model = manifest["models"].setdefault(name, {"versions": []})
    model["versions"] = [v for v in model["versions"] if v["version"] != entry["version"]] + [entry]
    model["latest"] = entry["version"]
    manifest["updated_at"] = entry["exported_at"]
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    tmp.replace(path)
