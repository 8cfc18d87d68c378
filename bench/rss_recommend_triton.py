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
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open together while picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


def main() -> None:
    from textpulse.inference.codec import resolve_version
    from textpulse.inference.settings import InferenceSettings
    from textpulse.ml.triton import config as triton_config
    from textpulse.recsys.embed import make_embedder
    from textpulse.recsys.train import MODEL_NAME, embedding_parameters

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
        triton_config.write_model_configs(
            root,
            MODEL_NAME,
            [triton_config.Tensor("embedding", "TYPE_FP32", (int(meta["hidden_size"]),))],
            cpu_parameters=embedding_parameters(max_length, args.runtime),
            gpu_parameters=embedding_parameters(max_length, "torch"),
            max_sequence_length=max_length,
        )
        run = Path(scratch) / "run"
        ports = _free_ports(3)
        env = {
            **os.environ,
            "TRITON_MODEL_REPO": str(root.parent),
            "TRITON_MODELS": MODEL_NAME,
            "TRITON_HTTP_PORT": str(ports[0]),
            "TRITON_GRPC_PORT": str(ports[1]),
            "TRITON_METRICS_PORT": str(ports[2]),
            "TRITON_RUN_DIR": str(run),
        }
        subprocess.run(["bash", str(REPO / "deploy/triton/start.sh")], env=env, check=True)
        url = f"127.0.0.1:{ports[1]}"
        try:
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
            triton = psutil.Process(int((run / "tritonserver.pid").read_text().strip()))
            (stub,) = [p for p in triton.children(recursive=True) if p.name().startswith("triton_python_b")]
            print(
                json.dumps(
                    {
                        "runtime": args.runtime,
                        "texts_per_s": round(len(texts) / seconds, 1),
                        "stub_peak_rss_mb": round(_status_mb(stub.pid, "VmHWM")),
                        "stub_rss_mb": round(_status_mb(stub.pid, "VmRSS")),
                        "torch_mapped": "libtorch" in Path(f"/proc/{stub.pid}/maps").read_text(),
                        "load_average_1m": round(psutil.getloadavg()[0], 1),
                    }
                )
            )
        finally:
            subprocess.run(["bash", str(REPO / "deploy/triton/stop.sh")], env=env, check=False)


if __name__ == "__main__":
    main()
