"""Peak RSS (VmHWM) of one process that loads models with a runtime and serves one batch of 64.

``local``: the in-process backend as a service runs it (the service module imported first, so
its own imports count); ``triton``: this tree's Triton ``model.py`` with a stand-in ``pb_utils``
(one python-backend instance, without the stub's own C++ footprint). Prints one JSON line.

    PYTHONPATH=libs:. python -m bench.rss_runtime local onnx default intent,sentiment,topic \\
        --import services.classify.app
    PYTHONPATH=libs:. python -m bench.rss_runtime triton onnx int8 sentiment

VmHWM, not ``getrusage().ru_maxrss``: a process started from a big parent inherits the
parent's high-water mark in ``ru_maxrss`` across exec.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return -1.0


async def serve_local(repo: Path, runtime: Any, precision: Any, models: list[str]) -> None:
    from textpulse.inference.local import LocalBackend

    backend = LocalBackend(repo, runtime=runtime, precision=precision)
    await backend.start(models)
    for model in models:
        if backend.info(model).kind == "token":
            await backend.tag(model, ["Goldman Sachs hired Jane Smith in London for its $AAPL desk"] * 64)
        else:
            await backend.classify(model, ["Fed holds rates steady as $AAPL beats estimates"] * 64)
    await backend.close()


def serve_triton(version_dir: Path, runtime: str, precision: str) -> None:
    import numpy as np

    class Tensor:
        def __init__(self, array: np.ndarray) -> None:
            self.array = array

        def to_dlpack(self) -> object:
            return self.array.__dlpack__()

        @staticmethod
        def from_dlpack(name: str, _capsule: object) -> str:
            return name

    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = Tensor  # type: ignore[attr-defined]
    fake.InferenceResponse = lambda output_tensors: output_tensors  # type: ignore[attr-defined]
    fake.get_input_tensor_by_name = lambda request, name: Tensor(request[name])  # type: ignore[attr-defined]
    sys.modules["triton_python_backend_utils"] = fake
    spec = importlib.util.spec_from_file_location("model", REPO / "libs" / "textpulse" / "ml" / "triton" / "model.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    instance = module.TritonPythonModel()
    params = {"runtime": runtime, "precision": precision, "torch_threads": "2"}
    instance.initialize(
        {
            "model_config": json.dumps({"parameters": {k: {"string_value": v} for k, v in params.items()}}),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_instance_kind": "CPU",
        }
    )
    ids = np.full((64, 48), 1000, dtype=np.int64)
    instance.execute([{"input_ids": ids, "attention_mask": np.ones_like(ids)}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("local", "triton"))
    parser.add_argument("runtime", choices=("onnx", "torch", "torch-int8"))
    parser.add_argument("precision", choices=("default", "fp32", "int8", "bf16"))
    parser.add_argument("models", help="comma-separated model names (triton: the first)")
    parser.add_argument("--model-repo", type=Path, default=REPO / ".cache" / "model-repo")
    parser.add_argument("--import", dest="module", help="import this module first (the service's own imports)")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    if args.module:
        importlib.import_module(args.module)
    if args.mode == "local":
        precision = None if args.precision == "default" else args.precision
        asyncio.run(serve_local(args.model_repo, args.runtime, precision, models))
    else:
        from textpulse.ml.predictor import resolve_model_dir

        precision = "fp32" if args.precision == "default" else args.precision
        serve_triton(resolve_model_dir(args.model_repo / models[0]), args.runtime, precision)
    result = {
        **vars(args),
        "model_repo": str(args.model_repo),
        "torch_imported": "torch" in sys.modules,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
