"""Integration tests for the local Triton deployment in deploy/triton/.

They drive the real scripts (fetch.sh, start.sh, status.sh, stop.sh) to run a
real tritonserver (from the nvidia-pytriton wheel) on free ports with its own
run dir, over a temporary model repository holding a tiny python-backend model
that computes with torch from the project environment. A server already
running on 8000-8002 is neither touched nor needed.

What is checked is what the inference client and services rely on: model
metadata and config (inputs, outputs, ``max_batch_size``, dynamic batching,
ragged input, the torch-threads parameter), identical answers over HTTP, gRPC
and gRPC asyncio, requests of different lengths batched together, Prometheus
metrics, idempotent scripts, a failing model reported with the server log, and
a clean stop.

With CI=true a missing prerequisite (the wheel, tritonclient, a server that
does not start) fails the run instead of skipping it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import textwrap
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import pytest

from tests.ci import missing
from tests.support.servers import TRITON_DEPLOY, free_ports

try:
    import tritonclient.grpc as grpcclient
    import tritonclient.grpc.aio as aioclient
    import tritonclient.http as httpclient
except ImportError as exc:  # reported by the fixture: skip locally, fail in CI
    TRITONCLIENT_ERROR: ImportError | None = exc
else:
    TRITONCLIENT_ERROR = None

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.triton, pytest.mark.timeout(300)]

logger = logging.getLogger(__name__)

# First run downloads the 55 MB wheel; a start then takes ~7 s on 2 cores
# (each python-backend instance imports torch).
START_TIMEOUT_S = 240
STOP_TIMEOUT_S = 60
MODEL = "tiny_torch"
MAX_BATCH_SIZE = 32
INSTANCES = 2
TORCH_THREADS = max(1, (os.cpu_count() or 1) // INSTANCES)

CONFIG_PBTXT = f"""\
name: "{MODEL}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{ name: "INPUT_IDS" data_type: TYPE_INT64 dims: [ -1 ] allow_ragged_batch: true }}
]
output [
  {{ name: "TOKEN_SUM" data_type: TYPE_INT64 dims: [ 1 ] }},
  {{ name: "MEAN_ID" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "EXEC_BATCH" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "TORCH_THREADS" data_type: TYPE_INT32 dims: [ 1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ count: {INSTANCES} kind: KIND_CPU }} ]
# instances x torch threads <= cores, or the instances fight over the CPUs.
parameters {{ key: "torch_threads" value: {{ string_value: "{TORCH_THREADS}" }} }}
"""

# A ragged batch reaches the python backend as one request object per client
# request (no concatenation), so the model pads them into one torch batch.
# Outputs go both ways: ndarray (TOKEN_SUM) and DLPack (MEAN_ID), the two
# paths a real exported model may use.
MODEL_PY = textwrap.dedent('''\
    """Tiny python-backend model: per-row token sum and mean over a padded batch."""
    import json

    import numpy as np
    import torch
    import triton_python_backend_utils as pb_utils
    from torch.utils.dlpack import to_dlpack


    class TritonPythonModel:
        def initialize(self, args):
            config = json.loads(args["model_config"])
            torch.set_num_threads(int(config["parameters"]["torch_threads"]["string_value"]))
            torch.set_num_interop_threads(1)

        def execute(self, requests):
            arrays = [pb_utils.get_input_tensor_by_name(r, "INPUT_IDS").as_numpy() for r in requests]
            rows = sum(a.shape[0] for a in arrays)
            width = max(a.shape[1] for a in arrays)
            ids = torch.zeros((rows, width), dtype=torch.int64)
            mask = torch.zeros((rows, width), dtype=torch.bool)
            start = 0
            for a in arrays:
                ids[start:start + a.shape[0], : a.shape[1]] = torch.from_numpy(a)
                mask[start:start + a.shape[0], : a.shape[1]] = True
                start += a.shape[0]
            with torch.inference_mode():
                sums = (ids * mask).sum(dim=1, keepdim=True)
                means = sums.float() / mask.sum(dim=1, keepdim=True).clamp(min=1).float()
            responses, start = [], 0
            for a in arrays:
                n = a.shape[0]
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("TOKEN_SUM", sums[start:start + n].numpy().copy()),
                    pb_utils.Tensor.from_dlpack("MEAN_ID", to_dlpack(means[start:start + n].contiguous())),
                    pb_utils.Tensor("EXEC_BATCH", np.full((n, 1), len(requests), dtype=np.int32)),
                    pb_utils.Tensor("TORCH_THREADS", np.full((n, 1), torch.get_num_threads(), dtype=np.int32)),
                ]))
                start += n
            return responses
''')


def _missing(reason: str) -> NoReturn:
    """Skip locally, fail in CI: a CI run must never pass by skipping Triton."""
    missing("tritonserver", reason)


def _write_model(repo: Path) -> None:
    """Write the tiny model into a Triton model repository at repo."""
    (repo / MODEL / "1").mkdir(parents=True)
    (repo / MODEL / "config.pbtxt").write_text(CONFIG_PBTXT)
    (repo / MODEL / "1" / "model.py").write_text(MODEL_PY)


@dataclass(frozen=True)
class Server:
    """A tritonserver run by deploy/triton/start.sh with its own ports and run dir."""

    http_port: int
    grpc_port: int
    metrics_port: int
    run_dir: Path
    env: dict[str, str]

    @classmethod
    def create(cls, repo: Path, run_dir: Path) -> Server:
        """Describe a server over repo on three fresh loopback ports."""
        http_port, grpc_port, metrics_port = free_ports(3)
        env = {
            **os.environ,
            "TRITON_MODEL_REPO": str(repo),
            "TRITON_RUN_DIR": str(run_dir),
            "TRITON_HTTP_PORT": str(http_port),
            "TRITON_GRPC_PORT": str(grpc_port),
            "TRITON_METRICS_PORT": str(metrics_port),
            "TRITON_START_TIMEOUT": str(START_TIMEOUT_S - 30),
        }
        return cls(http_port, grpc_port, metrics_port, run_dir, env)

    @property
    def http_url(self) -> str:
        """host:port for tritonclient.http."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """host:port for tritonclient.grpc."""
        return f"127.0.0.1:{self.grpc_port}"

    def script(self, name: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run deploy/triton/<name> for this server; output is captured for assertions."""
        return subprocess.run(
            ["bash", str(TRITON_DEPLOY / name)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pid(self) -> int | None:
        """PID recorded by start.sh, if any."""
        pid_file = self.run_dir / "tritonserver.pid"
        return int(pid_file.read_text()) if pid_file.exists() else None

    def metrics(self) -> str:
        """Return the Prometheus text exposition from the metrics port."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        return text


def _alive(pid: int) -> bool:
    """Whether a process with this PID exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Fetch the wheel, start a server over the tiny model, stop it afterwards."""
    if TRITONCLIENT_ERROR is not None:
        _missing(f"tritonclient[grpc,http] is not installed: {TRITONCLIENT_ERROR}")
    repo = tmp_path_factory.mktemp("model-repo")
    _write_model(repo)
    srv = Server.create(repo, tmp_path_factory.mktemp("triton-run"))
    fetched = srv.script("fetch.sh")
    if fetched.returncode != 0:
        _missing(f"deploy/triton/fetch.sh failed:\n{fetched.stderr}")
    started = srv.script("start.sh")
    if started.returncode != 0:
        srv.script("stop.sh", timeout=STOP_TIMEOUT_S)
        _missing(f"deploy/triton/start.sh failed ({started.returncode}):\n{started.stderr}")
    logger.info("tritonserver ready in %s ms", (srv.run_dir / "startup_ms").read_text().strip())
    yield srv
    pid = srv.pid()
    stopped = srv.script("stop.sh", timeout=STOP_TIMEOUT_S)
    assert stopped.returncode == 0, stopped.stderr
    assert pid is None or not _alive(pid), f"tritonserver {pid} still alive after stop.sh"


def _infer_http(url: str, ids: list[int]) -> dict[str, np.ndarray]:
    """One HTTP inference of a single sequence; returns the outputs as arrays."""
    data = np.asarray([ids], dtype=np.int64)
    tensor = httpclient.InferInput("INPUT_IDS", list(data.shape), "INT64")
    tensor.set_data_from_numpy(data)
    with httpclient.InferenceServerClient(url, network_timeout=10.0) as client:
        result = client.infer(MODEL, [tensor])
    return {name: result.as_numpy(name) for name in ("TOKEN_SUM", "MEAN_ID", "EXEC_BATCH", "TORCH_THREADS")}


def _grpc_input(ids: list[int]) -> grpcclient.InferInput:
    """Build a gRPC InferInput holding one sequence of token ids."""
    data = np.asarray([ids], dtype=np.int64)
    tensor = grpcclient.InferInput("INPUT_IDS", list(data.shape), "INT64")
    tensor.set_data_from_numpy(data)
    return tensor


def test_metadata_and_config_describe_the_model(server: Server) -> None:
    """Readiness, metadata and config report what a client validates at start-up."""
    with httpclient.InferenceServerClient(server.http_url) as client:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        config = client.get_model_config(MODEL)
    assert meta["platform"] == "python"
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("INPUT_IDS", "INT64", [-1, -1])]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "TOKEN_SUM": [-1, 1],
        "MEAN_ID": [-1, 1],
        "EXEC_BATCH": [-1, 1],
        "TORCH_THREADS": [-1, 1],
    }
    assert config["max_batch_size"] == MAX_BATCH_SIZE
    assert config["input"][0]["allow_ragged_batch"] is True
    assert "dynamic_batching" in config
    threads = int(config["parameters"]["torch_threads"]["string_value"])
    instances = sum(group["count"] for group in config["instance_group"])
    assert instances * threads <= (os.cpu_count() or 1) or threads == 1

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        grpc_config = client.get_model_config(MODEL, as_json=True)["config"]
        grpc_meta = client.get_model_metadata(MODEL, as_json=True)
    finally:
        client.close()
    assert int(grpc_config["max_batch_size"]) == MAX_BATCH_SIZE
    assert [i["name"] for i in grpc_meta["inputs"]] == ["INPUT_IDS"]


def test_http_grpc_and_aio_give_the_same_answer(server: Server) -> None:
    """The three client flavours agree, and torch in the model uses the configured threads."""
    ids = [101, 7592, 2088, 102]
    via_http = _infer_http(server.http_url, ids)
    assert via_http["TOKEN_SUM"].tolist() == [[sum(ids)]]
    assert float(via_http["MEAN_ID"][0, 0]) == pytest.approx(sum(ids) / len(ids))
    assert via_http["TORCH_THREADS"].tolist() == [[TORCH_THREADS]]

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        via_grpc = client.infer(MODEL, [_grpc_input(ids)], client_timeout=10.0)
    finally:
        client.close()
    assert via_grpc.as_numpy("TOKEN_SUM").tolist() == [[sum(ids)]]
    assert via_grpc.as_numpy("MEAN_ID").tolist() == via_http["MEAN_ID"].tolist()

    async def aio_infer() -> list[list[int]]:
        async with aioclient.InferenceServerClient(server.grpc_url) as aio:
            assert await aio.is_model_ready(MODEL)
            result = await aio.infer(MODEL, [_grpc_input(ids)], client_timeout=10.0)
            sums: list[list[int]] = result.as_numpy("TOKEN_SUM").tolist()
            return sums

    assert asyncio.run(aio_infer()) == [[sum(ids)]]


def test_ragged_requests_are_batched_together(server: Server) -> None:
    """Concurrent requests of different lengths share executions and stay correct."""
    lengths = [1 + (i * 7) % 23 for i in range(128)]
    client = grpcclient.InferenceServerClient(server.grpc_url)

    def call(length: int) -> tuple[int, int]:
        ids = list(range(1, length + 1))
        result = client.infer(MODEL, [_grpc_input(ids)], client_timeout=30.0)
        return int(result.as_numpy("TOKEN_SUM")[0, 0]), int(result.as_numpy("EXEC_BATCH")[0, 0])

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(call, lengths))
    finally:
        client.close()
    assert [s for s, _ in results] == [n * (n + 1) // 2 for n in lengths]
    largest = max(b for _, b in results)
    logger.info("largest execution batch: %d requests", largest)
    assert 1 < largest <= MAX_BATCH_SIZE


def test_metrics_report_successes_and_batching(server: Server) -> None:
    """The metrics port exposes per-model success and execution counters."""
    _infer_http(server.http_url, [1, 2, 3])
    text = server.metrics()

    def counter(name: str) -> float:
        match = re.search(rf'^{name}{{model="{MODEL}",version="1"}} (\S+)$', text, re.MULTILINE)
        assert match, f"{name} for {MODEL} missing from /metrics"
        return float(match.group(1))

    successes = counter("nv_inference_request_success")
    assert successes >= 1
    # Failures carry a "reason" label in this release and appear only once seen.
    failures = re.findall(rf'^nv_inference_request_failure{{[^}}]*model="{MODEL}"[^}}]*}} (\S+)$', text, re.MULTILINE)
    assert sum(float(v) for v in failures) == 0
    # Fewer executions than inferences means dynamic batching merged requests.
    assert counter("nv_inference_exec_count") <= counter("nv_inference_count")


def test_scripts_are_idempotent_and_status_lists_models(server: Server) -> None:
    """A second start is a no-op on the same PID; status shows the model READY."""
    pid = server.pid()
    again = server.script("start.sh")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert server.pid() == pid
    status = server.script("status.sh", timeout=30)
    assert status.returncode == 0, status.stdout + status.stderr
    assert re.search(rf"model {MODEL}\s+version 1\s+READY", status.stdout), status.stdout


def test_latency_is_reasonable(server: Server) -> None:
    """Sequential gRPC round trips on this tiny model stay in the low milliseconds."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = _grpc_input(list(range(1, 33)))
    timings = []
    try:
        for _ in range(50):
            began = time.perf_counter()
            client.infer(MODEL, [tensor], client_timeout=10.0)
            timings.append(time.perf_counter() - began)
    finally:
        client.close()
    timings.sort()
    p50_ms = timings[len(timings) // 2] * 1e3
    logger.info("gRPC p50 %.2f ms, max %.2f ms", p50_ms, timings[-1] * 1e3)
    # Generous bound for a shared 2-core machine; the point is no pathology.
    assert p50_ms < 200


@pytest.mark.timeout(180)
def test_broken_model_fails_start_with_log(tmp_path: Path) -> None:
    """A model that cannot load makes start.sh fail fast, show the log, leave nothing running."""
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "config.pbtxt").write_text(
        'name: "broken"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [ { name: "X" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )
    (repo / "broken" / "1" / "model.py").write_text("raise RuntimeError('deliberately broken model')\n")
    srv = Server.create(repo, tmp_path / "run")
    if srv.script("fetch.sh").returncode != 0:
        _missing("deploy/triton/fetch.sh failed")
    began = time.monotonic()
    result = srv.script("start.sh", timeout=150)
    elapsed = time.monotonic() - began
    try:
        assert result.returncode != 0
        assert "deliberately broken model" in result.stderr
        assert elapsed < 120
        assert srv.pid() is None
    finally:
        srv.script("stop.sh", timeout=STOP_TIMEOUT_S)
