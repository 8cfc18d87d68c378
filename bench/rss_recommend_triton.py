"""Peak RSS and rate of the recommend encoder's Triton python-backend stub, per runtime, on a real tritonserver.

Copies the latest ``recommend`` export (default ``.cache/model-repo``) into a scratch repository with this
tree's ``model.py`` and a ``config.pbtxt`` generated for ``--runtime`` (``onnx``: ONNX Runtime over
``model.onnx``; ``torch``: the weights in torch), starts ``deploy/triton/start.sh`` on free ports, embeds
``--texts`` texts in batches of 64 through the service's own client (:func:`make_embedder`), and prints one
JSON line: texts/s, the stub's VmHWM / VmRSS in MB and whether torch's library is mapped.

    PYTHONPATH=libs:. python -m bench.rss_recommend_triton --runtime onnx
    PYTHONPATH=libs:. python -m bench.rss_recommend_triton --runtime torch
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import psutil

from bench.common import REPO, peak_rss_mb, tritonserver


def main() -> None:
    from textpulse.inference.codec import resolve_version
    from textpulse.inference.settings import InferenceSettings
    from textpulse.recsys.embed import make_embedder
    from textpulse.recsys.train import MODEL_NAME, write_embedding_configs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=["onnx", "torch"], default="onnx")
    parser.add_argument("--repo", type=Path, default=REPO / ".cache" / "model-repo")
    parser.add_argument("--texts", type=int, default=2000)
    args = parser.parse_args()

    version = resolve_version(args.repo, MODEL_NAME, None)
    meta = json.loads((version / "config.json").read_text("utf-8"))
    max_length = int((meta.get("textpulse") or {}).get("max_length", 64))
    with tempfile.TemporaryDirectory(prefix="rss-recommend-") as scratch:
        root = Path(scratch) / "repo" / MODEL_NAME
        shutil.copytree(version, root / "1")
        template = resources.files("textpulse.recsys.triton").joinpath("model.py").read_text("utf-8")
        (root / "1" / "model.py").write_text(template, "utf-8")
        write_embedding_configs(root, MODEL_NAME, int(meta["hidden_size"]), max_length, args.runtime)
        with tritonserver(root.parent, [MODEL_NAME], Path(scratch) / "run") as (url, _, pid):
            texts = [
                f"Movie {i}. Genres: Drama|Comedy. Tags: " + ", ".join(f"tag {j}" for j in range(i % 25))
                for i in range(args.texts)
            ]

            async def embed_all() -> float:
                embedder = make_embedder(InferenceSettings(triton_url=url, model_repo=root.parent), MODEL_NAME)
                await embedder.start()
                try:
                    await embedder.embed(texts[:64])  # warm-up
                    begin = time.perf_counter()
                    for i in range(0, len(texts), 64):
                        await embedder.embed(texts[i : i + 64])
                    return time.perf_counter() - begin
                finally:
                    await embedder.close()

            seconds = asyncio.run(embed_all())
            children = psutil.Process(pid).children(recursive=True)
            (stub,) = [p for p in children if p.name().startswith("triton_python_b")]  # /proc comm: 15 chars
            print(
                json.dumps(
                    {
                        "runtime": args.runtime,
                        "texts_per_s": round(len(texts) / seconds, 1),
                        "stub_peak_rss_mb": round(peak_rss_mb(stub.pid) * 2**20 / 1e6),  # MB, as bench-pipeline
                        "stub_rss_mb": round(stub.memory_info().rss / 1e6),
                        "torch_mapped": "libtorch" in Path(f"/proc/{stub.pid}/maps").read_text(),
                        "load_average_1m": round(psutil.getloadavg()[0], 1),
                    }
                )
            )


if __name__ == "__main__":
    main()
