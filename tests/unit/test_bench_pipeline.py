"""Pure helpers of the pipeline benchmark: the served config overlay and the replica option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from textpulse.ml.export import render_config_pbtxt

from bench.bench_pipeline import MODELS, instances, parse_replicas, threads_overlay


def _repo(tmp_path: Path, precision: str | None) -> Path:
    repo = tmp_path / "repo"
    for model in MODELS:
        config = render_config_pbtxt(model, "sequence", 3, torch_threads=2)
        if precision is None:  # a repository exported before the precision parameter existed
            config = config.replace('key: "precision"', 'key: "unrelated"')
        (repo / model / "1").mkdir(parents=True)
        (repo / model / "1" / "model.safetensors").write_bytes(b"weights")
        (repo / model / "config.pbtxt").write_text(config)
    return repo


@pytest.mark.parametrize("exported", ["fp32", None])
def test_overlay_sets_threads_and_one_precision(tmp_path: Path, exported: str | None) -> None:
    repo = _repo(tmp_path, exported)
    served = threads_overlay(repo, tmp_path / "served", threads=1, precision="int8")
    for model in MODELS:
        config = (served / model / "config.pbtxt").read_text()
        assert 'key: "torch_threads"\n  value: { string_value: "1" }' in config
        assert config.count('key: "precision"') == 1
        assert 'key: "precision"\n  value: { string_value: "int8" }' in config
        assert (served / model / "1").is_symlink()
        assert (served / model / "1" / "model.safetensors").read_bytes() == b"weights"
    # the source repository is left as exported
    assert 'string_value: "2"' in (repo / "sentiment" / "config.pbtxt").read_text()


def test_overlay_is_rebuilt_each_time(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "fp32")
    threads_overlay(repo, tmp_path / "served", threads=1, precision="int8")
    served = threads_overlay(repo, tmp_path / "served", threads=1, precision="fp32")
    config = (served / "topic" / "config.pbtxt").read_text()
    assert config.count('key: "precision"') == 1
    assert 'string_value: "fp32"' in config


def test_replicas() -> None:
    assert parse_replicas("classify=2, ner=1") == {"classify": 2, "ner": 1}
    assert instances({"classify": 2}) == ["ingest", "classify", "classify-2", "ner"]
    for bad in ("alert=2", "classify=0", "classify"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected SERVICE=N"):
            parse_replicas(bad)


def test_missing_events_fail_the_report() -> None:
    from bench.bench_pipeline import Reference, Run, report

    ceiling = Reference("ceiling", 100, 2.0, 10.0)
    naive = Reference("naive", 100, 10.0, 20.0)
    complete = Run("local", events=100, sent=100, events_per_s=40.0, latency_events=50, latency_sent=50)
    complete.latency_ms = {"p50": 100.0, "p95": 200.0, "p99": 300.0}
    assert complete.missing == 0
    assert report([complete], [ceiling], naive) == 0
    short = Run("local", events=98, sent=100, events_per_s=40.0, latency_events=49, latency_sent=50)
    assert short.missing == 3
    assert report([short], [ceiling], naive) == 1


def test_a_pipeline_faster_than_its_ceiling_fails_the_report() -> None:
    from bench.bench_pipeline import Reference, Run, report

    slow, fast = Reference("one process", 100, 4.0, 8.0), Reference("two processes", 100, 2.0, 8.0)
    naive = Reference("naive", 100, 10.0, 20.0)
    run = Run("local", events=100, sent=100, events_per_s=40.0, latency_events=50, latency_sent=50)
    assert report([run], [slow, fast], naive) == 0  # the best ceiling (50 ev/s) is the reference
    assert report([run], [slow], naive) == 1  # 40 ev/s beats 25 ev/s: the reference is too weak
