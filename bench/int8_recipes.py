"""Which MatMuls of a served model may be int8: dev cost of quantisation recipes (the decision behind
``onnx_runtime.quantize_graph``).

For one model of the repository, each recipe quantises ``model.opt.onnx`` with ONNX Runtime's
``quantize_dynamic`` (per-channel int8 weights, uint8 activations) leaving a set of MatMuls in FP32,
then scores every head on its dev split against FP32 (cost in points = the largest drop of the
head's metrics, label agreement) and times it against FP32 on the same texts (ratio, one run).

Run: ``PYTHONPATH=libs:. python -m bench.int8_recipes finance [recipe,...]`` (quality does not depend
on machine load; the speed ratio does).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
from textpulse.ml.onnx_runtime import quantize_graph
from textpulse.ml.predictor import Predictor, resolve_model_dir

from bench.bench_int8 import dev_sets, score, text_of, throughput
from bench.common import REPO

RECIPES: dict[str, Callable[[str], bool]] = {  # node name -> stays FP32
    "all": lambda _n: False,
    "ffn_down_fp32": lambda n: "/output/dense" in n and "attention" not in n,
    "last_layer_fp32": lambda n: "layer.5" in n or n == "Attention_5",
    "attention_fp32": lambda n: n.startswith("Attention"),
    "last2_ffn_down_fp32": lambda n: "layer.5/output/dense" in n or "layer.4/output/dense" in n,
}


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name = sys.argv[1] if len(sys.argv) > 1 else "finance"
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else list(RECIPES)
    src = resolve_model_dir(Path(os.environ.get("TEXTPULSE_MODEL_REPO", REPO / ".cache" / "model-repo")) / name)
    nodes = [n.name for n in onnx.load(str(src / "model.opt.onnx")).graph.node if n.op_type in {"MatMul", "Attention"}]
    heads = dev_sets(src, None)
    fp32 = Predictor(src, backend="onnx", precision="fp32", threads=2, batch_size=32)
    reference = {h: score(fp32, h, k, ex) for h, k, ex in heads}
    texts = [text_of(e) for e in heads[0][2]][:256]
    throughput(fp32, texts[:32])
    fp32_speed = throughput(fp32, texts)
    print(f"{name}: fp32 { ({h or 'primary': m for h, (m, _) in reference.items()}) }")
    with tempfile.TemporaryDirectory(prefix="int8-recipes-") as tmp:
        for recipe in chosen:
            keep = [n for n in nodes if RECIPES[recipe](n)]
            folder = Path(tmp) / recipe
            shutil.copytree(src, folder, ignore=shutil.ignore_patterns("model.int8.onnx", "__pycache__"))
            quantize_graph(src / "model.opt.onnx", folder / "model.int8.onnx", keep_fp32=keep)
            int8 = Predictor(folder, backend="onnx", precision="int8", threads=2, batch_size=32)
            row = {}
            for head, kind, examples in heads:
                metrics, labels = score(int8, head, kind, examples)
                ref_metrics, ref_labels = reference[head]
                agree = sum(a == b for a, b in zip(ref_labels, labels, strict=True)) / max(1, len(ref_labels))
                cost = max(100 * (ref_metrics[k] - metrics[k]) for k in ref_metrics)
                row[head or "primary"] = f"cost {cost:+.2f}, agreement {agree:.1%}"
            throughput(int8, texts[:32])
            ratio = throughput(int8, texts) / fp32_speed
            print(f"{recipe:>20} ({len(keep)} FP32 MatMuls): {row}  speed {ratio:.2f}x fp32")


if __name__ == "__main__":
    main()
