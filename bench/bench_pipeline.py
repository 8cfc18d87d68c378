"""End-to-end pipeline benchmark: ingest → classify → NER on the real Kafka.

Replays N real tweets (``twitter_fin_sentiment``) through the three services,
each in its own processes (``--replicas``, default two classify workers in one
consumer group: a social event needs two classify forward passes and one NER
pass, so with one single-thread process per service the classify core is the
bottleneck while the NER core idles half the time), once per backend
(in-process torch, and Triton when requested), and prints in the same run:

* events/s at saturation (first ingest time → last enriched record);
* end-to-end latency p50/p95/p99 (ingest time → enriched record's broker
  timestamp) at half the measured maximum rate;
* inference client latency (from the services' ``textpulse_inference_*``
  histograms) and, for Triton, the average server batch size
  (``nv_inference_count / nv_inference_exec_count``);
* CPU seconds per 1,000 events (services, plus tritonserver and its stubs);
* two reference figures on the same models: the raw batched in-process
  ceiling (sentiment + topic + NER forward passes, batches of 64, one process)
  and a naive baseline: a Hugging Face ``pipeline()`` call per message and
  model (each model's encoder as a feature-extraction pipeline, its head on top).

``--runtime int8`` serves every model (ceiling, in-process services, Triton's
``precision`` parameter) with dynamic int8 Linear layers; the naive baseline
stays FP32, and ``make bench-int8`` measures what int8 costs on the dev splits.

Targets (2-core CPU): pipeline ≥ 0.7× the raw ceiling, ≥ 5× the naive
baseline, p99 ≤ 500 ms at half the maximum rate. Not a timed test.

Run: ``make bench-pipeline`` (or ``python -m bench.bench_pipeline --help``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from textpulse.contracts.topics import ALL_TOPICS
from textpulse.kafka.admin import create_topics
from textpulse.settings import KafkaSettings

from bench.common import REPO, real_kafka, start_service, stop_service, table, wait_ready

MODELS = ("sentiment", "topic", "intent", "ner")
#: --runtime → the in-process backend's runtime (TEXTPULSE_LOCAL_RUNTIME); Triton gets it as the ``precision`` parameter
LOCAL_RUNTIME: dict[str, Any] = {"fp32": "torch", "int8": "torch-int8"}
SERVICES = ("ingest", "classify", "ner")
console = Console(width=150)  # wide table even when stdout is not a terminal


@dataclass
class Run:
    """Figures of one pipeline run."""

    backend: str
    events: int = 0
    events_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    latency_rate: float = 0.0
    cpu_per_1000: float = 0.0
    client_ms: dict[str, float] = field(default_factory=dict)
    server_batch: dict[str, float] = field(default_factory=dict)


def tweets(n: int, prefix: str) -> list[dict[str, Any]]:
    from textpulse.replay import build_events

    rows = build_events("twitter_fin_sentiment/sent_train.csv", channel="social", limit=n)
    while len(rows) < n:  # fewer rows than asked: repeat with new ids
        rows += rows[: n - len(rows)]
    return [{**r, "id": f"{prefix}-{i}"} for i, r in enumerate(rows[:n])]


# -- reference figures ---------------------------------------------------------------


def raw_ceiling(repo: Path, texts: Sequence[str], threads: int, runtime: str = "fp32") -> float:
    """Events/s of the bare batched forward passes a social event needs (sentiment + topic + NER)."""
    from textpulse.inference.local import LocalBackend

    async def go() -> float:
        backend = LocalBackend(repo, runtime=LOCAL_RUNTIME[runtime], threads=threads, batch_size=64)
        await backend.start(["sentiment", "topic", "ner"])
        await backend.classify("sentiment", texts[:64])  # warm-up
        started = time.perf_counter()
        await backend.classify("sentiment", texts)
        await backend.classify("topic", texts)
        await backend.tag("ner", texts)
        elapsed = time.perf_counter() - started
        await backend.close()
        return len(texts) / elapsed

    return asyncio.run(go())


def naive_baseline(repo: Path, texts: Sequence[str], threads: int) -> tuple[float, float]:
    """Events/s of one Hugging Face ``pipeline()`` call per message and model, and label agreement.

    Each exported model's encoder runs as a ``feature-extraction`` pipeline
    (its tokenizer, truncation at the model's max length); the model's own
    pooling and head turn the features into labels. Agreement with the
    in-process backend's labels (sentiment) checks it is the same model.
    """
    import torch
    from textpulse.ml.modeling import load_model
    from textpulse.ml.predictor import Predictor, resolve_model_dir
    from transformers import pipeline

    torch.set_num_threads(threads)
    runners = []
    for name in ("sentiment", "topic", "ner"):
        model, tokenizer, meta = load_model(resolve_model_dir(repo / name))
        pipe = pipeline(
            "feature-extraction",
            model=model.encoder,
            tokenizer=tokenizer,
            device="cpu",
            tokenize_kwargs={"truncation": True, "max_length": int(meta.get("max_length", 128))},
        )
        runners.append((model, pipe))

    def run(model: Any, pipe: Any, text: str) -> Any:
        hidden = pipe(text, return_tensors=True)
        with torch.inference_mode():
            if model.kind == "token":
                features = hidden
            elif model.pooling == "first":
                features = hidden[:, 0]
            else:
                features = hidden.mean(dim=1)
            return model.head(features).argmax(-1)

    run(*runners[0], texts[0])
    started = time.perf_counter()
    first: list[int] = []
    for text in texts:
        for index, (model, pipe) in enumerate(runners):
            out = run(model, pipe, text)
            if index == 0:
                first.append(int(out.reshape(-1)[0]))
    rate = len(texts) / (time.perf_counter() - started)
    reference = Predictor(repo / "sentiment")
    labels = [reference.labels.index(p["label"]) for p in reference.predict(list(texts))]
    agreement = sum(a == b for a, b in zip(first, labels, strict=True)) / max(1, len(texts))
    return rate, agreement


# -- pipeline -------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pids: Sequence[int]) -> float:
    """User + system CPU seconds of processes and their live children."""
    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


async def enriched_latencies(
    kafka: KafkaSettings, topic: str, n: int, timeout_s: float
) -> dict[str, tuple[float, float]]:
    """Event id -> (ingest time, enriched broker timestamp), de-duplicated by id."""
    import orjson

    from tests.helpers import read_all

    records = await read_all(kafka, topic, expect=n, timeout_s=timeout_s, idle_s=0.5)
    seen: dict[str, tuple[float, float]] = {}
    for rec in records:
        event = orjson.loads(rec.value)["event"]
        ingest = datetime.fromisoformat(event["ingest_time"]).timestamp()
        seen.setdefault(event["id"], (ingest, rec.timestamp / 1000))
    return seen


def scrape(url: str) -> str:
    try:
        return httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return ""


def metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def threads_overlay(repo: Path, target: Path, threads: int, precision: str = "fp32") -> Path:
    """A copy of ``repo``'s model configs with ``torch_threads`` and ``precision`` set, versions linked, not copied.

    Every instance of every model runs its own torch pool; the three models of a
    social event run at once, so at 2 threads each they ask for 6 threads on 2 cores.
    """
    import re
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    for model in MODELS:
        src, dst = repo / model, target / model
        dst.mkdir(parents=True)
        config = (src / "config.pbtxt").read_text()
        config = re.sub(r'(key: "torch_threads"\s*value: \{ string_value: ")\d+(")', rf"\g<1>{threads}\g<2>", config)
        config = re.sub(r'parameters: \{\s*key: "precision"\s*value: \{ string_value: "\w+" \}\s*\}\s*', "", config)
        config += f'parameters: {{\n  key: "precision"\n  value: {{ string_value: "{precision}" }}\n}}\n'
        (dst / "config.pbtxt").write_text(config)
        for version in src.iterdir():
            if version.is_dir() and version.name.isdigit():
                (dst / version.name).symlink_to(version.resolve(), target_is_directory=True)
    return target


@contextmanager
def triton_server(repo: Path, threads: int, precision: str = "fp32") -> Iterator[tuple[str, str, int]]:
    """A tritonserver over ``repo`` (``threads`` torch threads per model instance) on free ports (deploy/triton).

    Yields (grpc url, metrics url, pid).
    """
    ports = [_free_port() for _ in range(3)]
    run_dir = REPO / ".run" / "triton-bench"
    served = threads_overlay(repo, run_dir / "model-repo", threads, precision)
    env = {
        **os.environ,
        "TRITON_MODEL_REPO": str(served),
        "TRITON_MODELS": ",".join(MODELS),
        "TRITON_HTTP_PORT": str(ports[0]),
        "TRITON_GRPC_PORT": str(ports[1]),
        "TRITON_METRICS_PORT": str(ports[2]),
        "TRITON_RUN_DIR": str(run_dir),
    }
    subprocess.run(["bash", str(REPO / "deploy/triton/fetch.sh")], env=env, check=True)
    subprocess.run(["bash", str(REPO / "deploy/triton/start.sh")], env=env, check=True)
    try:
        pid = int((run_dir / "tritonserver.pid").read_text().strip())
        yield f"127.0.0.1:{ports[1]}", f"http://127.0.0.1:{ports[2]}/metrics", pid
    finally:
        subprocess.run(["bash", str(REPO / "deploy/triton/stop.sh")], env=env, check=False)


def instances(replicas: dict[str, int]) -> list[str]:
    """Process names: ``ingest``, ``classify``, ``classify-2`` … (one consumer group per service)."""
    return [name if i == 0 else f"{name}-{i + 1}" for name in SERVICES for i in range(replicas.get(name, 1))]


def default_replicas(backend: str) -> dict[str, int]:
    """In-process: two classify workers (a social event costs classify two passes, NER one); Triton: one each."""
    return {} if backend == "triton" else {"classify": 2}


def parse_replicas(text: str) -> dict[str, int]:
    """``classify=2,ner=1`` → ``{"classify": 2, "ner": 1}``."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            msg = f"--replicas: expected SERVICE=N with SERVICE in {SERVICES} and N >= 1, got {part!r}"
            raise argparse.ArgumentTypeError(msg)
        out[name] = int(count)
    return out


async def pipeline(
    backend: str,
    kafka: str,
    repo: Path,
    n: int,
    latency_n: int,
    threads: int,
    triton: tuple[str, str, int] | None,
    replicas: dict[str, int],
    runtime: str = "fp32",
) -> Run:
    """Start ingest, classify, NER (``replicas`` processes each); saturate; then replay at half the rate."""
    from textpulse.replay import replay

    settings = KafkaSettings(bootstrap_servers=kafka)
    tag = uuid.uuid4().hex[:8]
    topics = {spec.name: f"bench.{tag}.{spec.name}" for spec in ALL_TOPICS}
    await create_topics(settings, ALL_TOPICS, rename=topics)
    ports = {s: _free_port() for s in instances(replicas)}
    envs = service_envs(kafka, repo, threads, topics, ports, tag, triton[0] if triton else None, runtime)
    logs = REPO / ".run" / "bench"
    procs = {
        s: start_service(f"services.{s.split('-')[0]}.app", env, logs / f"pipeline-{backend}-{s}.log")
        for s, env in envs.items()
    }
    run = Run(backend if runtime == "fp32" else f"{backend} {runtime}")
    ingest_url = f"http://127.0.0.1:{ports['ingest']}"
    try:
        for port in ports.values():
            await wait_ready(f"http://127.0.0.1:{port}", timeout_s=180)
        pids = [p.pid for p in procs.values()] + ([triton[2]] if triton else [])
        warm = tweets(64, f"warm-{tag}")
        await replay(warm, url=ingest_url, rate=0, batch_size=64, progress=False)
        await enriched_latencies(settings, topics["text.enriched"], len(warm), 180)
        cpu0 = tree_cpu(pids)
        await replay(tweets(n, f"sat-{tag}"), url=ingest_url, rate=0, batch_size=500, progress=False)
        seen = await enriched_latencies(settings, topics["text.enriched"], len(warm) + n, 600)
        cpu1 = tree_cpu(pids)
        pairs = [v for k, v in seen.items() if k.startswith("sat-")]
        run.events = len(pairs)
        run.events_per_s = len(pairs) / max(1e-9, max(p[1] for p in pairs) - min(p[0] for p in pairs))
        run.cpu_per_1000 = (cpu1 - cpu0) / max(1, len(pairs)) * 1000
        run.latency_rate = run.events_per_s / 2
        slow = tweets(latency_n, f"lat-{tag}")
        await replay(slow, url=ingest_url, rate=run.latency_rate, batch_size=10, progress=False)
        seen = await enriched_latencies(settings, topics["text.enriched"], len(warm) + n + latency_n, 600)
        lat = [(out - ing) * 1000 for k, (ing, out) in seen.items() if k.startswith("lat-")]
        run.latency_ms = {f"p{q}": percentile(lat, q) for q in (50, 95, 99)}
        collect_metrics(run, ports, triton)
    finally:
        for proc in procs.values():
            stop_service(proc)
    return run


def service_envs(
    kafka: str,
    repo: Path,
    threads: int,
    topics: dict[str, str],
    ports: dict[str, int],
    tag: str,
    triton_url: str | None,
    runtime: str = "fp32",
) -> dict[str, dict[str, str]]:
    """Environment of each service process: its own topics, group, port; the chosen backend."""
    common = {
        "TEXTPULSE_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "TEXTPULSE_MODEL_REPO": str(repo),
        "TEXTPULSE_LOCAL_THREADS": str(threads),
        "TEXTPULSE_LOCAL_RUNTIME": LOCAL_RUNTIME[runtime],
        "PYTHONPATH": f"{REPO / 'libs'}:{REPO}",
    }
    if triton_url:
        common["TEXTPULSE_TRITON_URL"] = triton_url
    c, n = "TEXTPULSE_CLASSIFY_", "TEXTPULSE_NER_"
    base = {
        "ingest": {
            **common,
            "TEXTPULSE_INGEST_TOPIC_OUT": topics["text.raw"],
            "TEXTPULSE_INGEST_CONSUME_TEXT_IN": "false",
            "TEXTPULSE_INGEST_LOG_LEVEL": "WARNING",
        },
        "classify": {
            **common,
            f"{c}TOPIC_IN": topics["text.raw"],
            f"{c}TOPIC_OUT": topics["text.classified"],
            f"{c}TOPIC_DLQ": topics["dlq.classify"],
            f"{c}GROUP_ID": f"bench-classify-{tag}",
            f"{c}LOG_LEVEL": "WARNING",
        },
        "ner": {
            **common,
            f"{n}TOPIC_IN": topics["text.classified"],
            f"{n}TOPIC_OUT": topics["text.enriched"],
            f"{n}TOPIC_MENTIONS": topics["entity.mentions"],
            f"{n}TOPIC_DLQ": topics["dlq.ner"],
            f"{n}GROUP_ID": f"bench-ner-{tag}",
            f"{n}LOG_LEVEL": "WARNING",
        },
    }
    prefix = {"ingest": "TEXTPULSE_INGEST_", "classify": c, "ner": n}
    envs = {}
    for name, port in ports.items():
        service = name.split("-")[0]
        envs[name] = {**base[service], f"{prefix[service]}HTTP_PORT": str(port)}
    return envs


def collect_metrics(run: Run, ports: dict[str, int], triton: tuple[str, str, int] | None) -> None:
    """Client latency from the services' histograms; Triton's average executed batch size."""
    for service in ("classify", "ner"):
        texts = [scrape(f"http://127.0.0.1:{port}/metrics") for name, port in ports.items() if name.startswith(service)]
        count = sum(metric_sum(t, "textpulse_inference_duration_seconds_count") for t in texts)
        seconds = sum(metric_sum(t, "textpulse_inference_duration_seconds_sum") for t in texts)
        size = sum(metric_sum(t, "textpulse_inference_batch_size_sum") for t in texts)
        run.client_ms[f"{service} mean request"] = seconds / count * 1000 if count else float("nan")
        run.client_ms[f"{service} texts/request"] = size / count if count else float("nan")
    if triton:
        text = scrape(triton[1])
        for model in ("sentiment", "topic", "ner"):
            items = metric_sum(text, "nv_inference_count", model=model)
            execs = metric_sum(text, "nv_inference_exec_count", model=model)
            run.server_batch[model] = items / execs if execs else float("nan")


def report(runs: list[Run], ceiling: float, naive: float, n_ref: int, runtime: str = "fp32") -> None:
    rows: list[tuple[str, str, str, str]] = [
        (f"raw batched in-process ceiling ({runtime})", f"{ceiling:,.1f} ev/s", "reference", f"{n_ref} tweets"),
        ("naive HF pipeline() per message (fp32)", f"{naive:,.1f} ev/s", "reference", "1 call per message per model"),
    ]
    for run in runs:
        b = run.backend
        rows += [
            (f"{b}: pipeline throughput", f"{run.events_per_s:,.1f} ev/s ({run.events} events)", "", ""),
            (
                f"{b}: vs raw ceiling",
                f"{run.events_per_s / ceiling:.2f}x",
                ">= 0.70x",
                "ok" if run.events_per_s >= 0.7 * ceiling else "MISS",
            ),
            (
                f"{b}: vs naive",
                f"{run.events_per_s / naive:.1f}x",
                ">= 5x",
                "ok" if run.events_per_s >= 5 * naive else "MISS",
            ),
            (
                f"{b}: e2e latency p50/p95/p99 @ {run.latency_rate:.0f} ev/s",
                " / ".join(f"{run.latency_ms.get(k, float('nan')):.0f}" for k in ("p50", "p95", "p99")) + " ms",
                "p99 <= 500 ms",
                "ok" if run.latency_ms.get("p99", 1e9) <= 500 else "MISS",
            ),
            (f"{b}: CPU per 1,000 events", f"{run.cpu_per_1000:.1f} s", "", "services + triton"),
        ]
        rows += [
            (f"{b}: client {k}", f"{v:.1f}" + ("" if "texts" in k else " ms"), "", "") for k, v in run.client_ms.items()
        ]
        rows += [(f"{b}: triton avg batch {k}", f"{v:.1f}", "", "") for k, v in run.server_batch.items()]
    console.print(table("pipeline benchmark: ingest → classify → NER (real Kafka)", rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events in the saturation run")
    parser.add_argument("--latency-events", type=int, default=500, help="events replayed at half the max rate")
    parser.add_argument("--reference-events", type=int, default=512, help="texts for the raw ceiling")
    parser.add_argument("--naive-events", type=int, default=100, help="texts for the naive baseline")
    parser.add_argument("--backends", default="local,triton", help="comma-separated: local, triton")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per service process")
    parser.add_argument(
        "--replicas",
        type=parse_replicas,
        default=None,
        help=(
            "processes per service, e.g. classify=2,ner=1. Default for the in-process backend classify=2: a social "
            "event costs classify two forward passes and NER one, so two single-thread classify workers and one "
            "NER worker share the cores in proportion to their work; for Triton one of each (the server computes)"
        ),
    )
    parser.add_argument(
        "--triton-threads",
        type=int,
        default=1,
        help="torch threads per Triton model instance (the bench serves a copy of the configs with this value)",
    )
    parser.add_argument(
        "--reference-threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads of the reference measurements (default: the usable cores)",
    )
    parser.add_argument(
        "--runtime",
        choices=sorted(LOCAL_RUNTIME),
        default="fp32",
        help=(
            "model precision on the CPU for the ceiling and both backends: fp32, or int8 (dynamic int8 Linear layers; "
            "its dev-accuracy cost is measured by `make bench-int8`). The naive baseline stays FP32"
        ),
    )
    parser.add_argument(
        "--model-repo",
        type=Path,
        default=Path(os.environ.get("TEXTPULSE_MODEL_REPO", REPO / ".cache" / "model-repo")),
        help="model repository with sentiment, topic, intent, ner (default TEXTPULSE_MODEL_REPO)",
    )
    args = parser.parse_args()
    missing = [m for m in MODELS if not (args.model_repo / m).is_dir()]
    if missing:
        parser.error(f"{args.model_repo} lacks models {missing}: run `make models` or pass --model-repo")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts = [e["text"] for e in tweets(args.reference_events, "ref")]
    local, triton = (", ".join(instances(args.replicas or default_replicas(b))) for b in ("local", "triton"))
    console.print(
        f"models: {args.model_repo} ({args.runtime})  events: {args.events}  threads/process: {args.threads}  "
        f"processes: {local} (in-process), {triton} (Triton, {args.triton_threads} torch thread(s) per instance)"
    )
    ceiling = raw_ceiling(args.model_repo, texts, threads=args.reference_threads, runtime=args.runtime)
    naive, agreement = naive_baseline(args.model_repo, texts[: args.naive_events], threads=args.reference_threads)
    console.print(
        f"raw ceiling {ceiling:.1f} ev/s, naive pipeline() {naive:.1f} ev/s "
        f"(sentiment labels agree with the in-process backend on {agreement:.0%})"
    )
    runs = []
    with real_kafka() as kafka:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            triton = backend == "triton"
            server_cm = triton_server(args.model_repo, args.triton_threads, args.runtime) if triton else nullcontext()
            with server_cm as server:
                replicas = args.replicas or default_replicas(backend)
                options = (args.model_repo, args.events, args.latency_events, args.threads)
                runs.append(asyncio.run(pipeline(backend, kafka, *options, server, replicas, args.runtime)))
            console.print(runs[-1])
    report(runs, ceiling, naive, len(texts), args.runtime)


if __name__ == "__main__":
    main()
