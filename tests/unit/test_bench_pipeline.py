"""Pure helpers of the pipeline benchmark: the served config overlay and the replica option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from textpulse.ml.export import render_config_pbtxt
from textpulse.ml.triton.config import parameters_of, parse

from bench.bench_pipeline import MODELS, Limit, instances, parse_replicas, threads_overlay


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
        assert parameters_of(parse(config))["torch_threads"] == "1"
        assert config.count('key: "precision"') == 1
        assert parameters_of(parse(config))["precision"] == "int8"
        assert (served / model / "1").is_symlink()
        assert (served / model / "1" / "model.safetensors").read_bytes() == b"weights"
    # the source repository is left as exported
    assert 'string_value: "2"' in (repo / MODELS[0] / "config.pbtxt").read_text()


def test_overlay_is_rebuilt_each_time(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "fp32")
    threads_overlay(repo, tmp_path / "served", threads=1, precision="int8")
    served = threads_overlay(repo, tmp_path / "served", threads=1, precision="fp32")
    config = (served / MODELS[-1] / "config.pbtxt").read_text()
    assert config.count('key: "precision"') == 1
    assert 'string_value: "fp32"' in config


def test_overlay_instances(tmp_path: Path) -> None:
    """``--triton-instances N`` sets every model's instance count; 0 keeps the exported one."""
    repo = _repo(tmp_path, "fp32")
    kept = threads_overlay(repo, tmp_path / "kept", threads=1, precision="fp32")
    assert [g.count for g in parse((kept / MODELS[0] / "config.pbtxt").read_text()).instance_group] == [2]
    served = threads_overlay(repo, tmp_path / "served", threads=1, precision="fp32", instances=3)
    for model in MODELS:
        assert [g.count for g in parse((served / model / "config.pbtxt").read_text()).instance_group] == [3]


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


def _weights(layers: int, hidden: int, intermediate: int, labels: int) -> dict[str, tuple[int, ...]]:
    """BERT-style weight shapes (torch Linear: [out, in]) with embeddings and biases that must not count."""
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.embeddings.word_embeddings.weight": (100, hidden),
        "encoder.embeddings.LayerNorm.weight": (hidden,),
        "head.weight": (labels, hidden),
        "head.bias": (labels,),
    }
    for i in range(layers):
        p = f"encoder.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"] = (hidden, hidden)
            shapes[p + name + ".bias"] = (hidden,)
        shapes[p + "intermediate.dense.weight"] = (intermediate, hidden)
        shapes[p + "output.dense.weight"] = (hidden, intermediate)
    return shapes


def _config(kind: str, layers: int = 2, hidden: int = 4, max_length: int = 16) -> dict[str, object]:
    return {"num_hidden_layers": layers, "hidden_size": hidden, "textpulse": {"kind": kind, "max_length": max_length}}


def test_flops_count_weights_tokens_and_attention() -> None:
    from bench.bench_pipeline import flops_per_event, layer_shapes, model_cost

    weights = _weights(layers=2, hidden=4, intermediate=8, labels=3)
    seq = model_cost("finance", _config("sequence"), weights)
    # per layer 4 x 4x4 + 2 x 4x8 = 128 matmul weights, 2 layers; the pooled head once per text
    assert (seq.token_params, seq.text_params) == (256, 12)
    # 2 x 256 x 5 tokens + 2 x 12 + attention 4 x 2 layers x 4 hidden x 5²
    assert seq.flops(5) == 2 * 256 * 5 + 2 * 12 + 4 * 2 * 4 * 25
    tok = model_cost("ner", _config("token", max_length=4), weights)
    assert (tok.token_params, tok.text_params) == (268, 0)  # a token head runs on every token
    assert tok.flops(9) == tok.flops(4) == 2 * 268 * 4 + 4 * 2 * 4 * 16  # truncated at max_length
    per_event = flops_per_event([seq, tok], {"finance": [5, 5], "ner": [4, 2]})
    assert per_event == seq.flops(5) + (tok.flops(4) + tok.flops(2)) / 2
    # q, k, v as the fused graph's one [hidden, 3 x hidden] GEMM, then the output, FFN up and down
    assert layer_shapes(weights) == [(4, 12), (4, 4), (4, 8), (8, 4)]


def test_minilm_flops_per_token() -> None:
    from bench.bench_pipeline import model_cost

    cost = model_cost("sentiment", _config("sequence", 6, 384, 64), _weights(6, 384, 1536, 3))
    assert cost.token_params == 6 * (4 * 384 * 384 + 2 * 384 * 1536) == 10_616_832


def test_int8_passes_split_their_flops_and_the_limit_weighs_each_precision() -> None:
    from bench.bench_pipeline import flops_by_precision, model_cost

    weights = _weights(layers=2, hidden=4, intermediate=8, labels=3)
    seq = model_cost("finance", _config("sequence"), weights)
    assert seq.ffn_down_params == 2 * 4 * 8  # the FFN down-projection of each layer (kept FP32 by the int8 graph)
    assert seq.split(5, "fp32") == {"fp32": seq.flops(5)}
    int8 = seq.split(5, "int8")
    assert int8["int8"] == 2 * (256 - 64) * 5
    assert int8["int8"] + int8["fp32"] == seq.flops(5)
    split = flops_by_precision([seq], {"finance": [5, 5]}, {"finance": "int8"})
    assert split == int8
    limit = Limit(
        seq.flops(5),
        1000,
        {"fp32 lib": 1e9, "int8 lib": 4e9},
        ["classify:finance"],
        [],
        split,
        {"fp32 lib": "fp32", "int8 lib": "int8"},
    )
    assert limit.events_per_s == pytest.approx(1 / (split["fp32"] / 1e9 + split["int8"] / 4e9))
    assert limit.best_of("int8") == ("int8 lib", 4e9)
    assert limit.best[1] == pytest.approx(limit.flops_per_event * limit.events_per_s)


def test_overlay_default_serves_each_models_measured_precision(tmp_path: Path) -> None:
    repo = _repo(tmp_path, "fp32")
    (repo / MODELS[0] / "1" / "serving.json").write_text('{"defaults": {"onnx": "int8"}}')
    served = threads_overlay(repo, tmp_path / "served", threads=1, precision="default")
    params = [parameters_of(parse((served / m / "config.pbtxt").read_text()))["precision"] for m in MODELS]
    assert params == ["int8", *(["fp32"] * (len(MODELS) - 1))]


def _limit(events_per_s: float) -> Limit:
    return Limit(1e9, 1000, {"numpy": events_per_s * 1e9, "torch": 1.0}, ["classify:finance", "ner:ner"], [])


def test_target_summary_met_and_missed() -> None:
    from bench.bench_pipeline import Reference, Run, targets

    ceiling, naive = Reference("ceiling", 100, 2.0, 1.0), Reference("naive", 100, 50.0, 20.0)  # 50, 2 ev/s
    limit = _limit(100.0)
    good = Run("local", events=100, sent=100, events_per_s=45.0, latency_events=10, latency_sent=10)
    good.cpu_per_1000, good.latency_rate = 12.0, 22.5
    good.latency_ms = {"p50": 50.0, "p95": 100.0, "p99": 200.0}
    good.memory = {"ingest": (900.0, 900.0), "classify": (500.0, 550.0), "triton ner ner_0_0": (300.0, 350.0)}
    summary = {t.name.split(": ", 1)[1]: t for t in targets(good, ceiling, naive, limit)}
    assert summary["pipeline vs naive"].met  # 22.5x
    assert summary["pipeline vs raw ceiling"].met  # 0.90x
    assert summary["CPU-s per 1,000 social events"].met
    assert summary["p99 end to end @ 22 ev/s (half the max)"].met
    assert summary["pipeline / hardware limit"].value == "0.45"
    assert summary["pipeline / hardware limit"].met
    assert summary["peak RSS classify"].met
    assert summary["peak RSS triton ner ner_0_0"].met
    assert "peak RSS ingest" not in summary  # no memory target for ingest
    good.events_per_s = 60.0  # faster than its raw ceiling: the reference is too weak, not a met target
    beyond = next(t for t in targets(good, ceiling, naive, limit) if t.name.endswith("vs raw ceiling"))
    assert beyond.verdict == "MISSED"
    assert "too weak" in beyond.value
    above = next(t for t in targets(good, ceiling, naive, _limit(50.0)) if t.name.endswith("hardware limit"))
    assert above.verdict == "MISSED"  # 60 ev/s over a 50 ev/s limit: the limit was measured too low
    assert "limit too low" in above.value

    bad = Run("triton", events=100, sent=100, events_per_s=8.0, latency_events=9, latency_sent=10)
    bad.cpu_per_1000 = 20.0
    bad.latency_ms = {"p99": 100.0}  # fast, but an event is missing: not met
    bad.memory = {"ner": (700.0, 700.0), "triton finance finance_0_0": (100.0, 450.0)}
    verdicts = {t.name.split(": ", 1)[1].split(" @")[0]: t.verdict for t in targets(bad, ceiling, naive, limit)}
    assert verdicts == {
        "pipeline vs naive": "MISSED",  # 4x < 5x
        "pipeline vs raw ceiling": "MISSED",
        "CPU-s per 1,000 social events": "MISSED",
        "p99 end to end": "MISSED",
        "pipeline / hardware limit": "MISSED",
        "peak RSS ner": "MISSED",
        "peak RSS triton finance finance_0_0": "MISSED",
    }
    assert targets(bad, ceiling, naive, None)[-1].name.endswith("peak RSS triton finance finance_0_0")


def test_report_prints_the_limit_and_targets(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.bench_pipeline import Reference, Run, report

    run = Run("local", events=100, sent=100, events_per_s=40.0, latency_events=50, latency_sent=50)
    run.latency_ms = {"p50": 100.0, "p95": 200.0, "p99": 300.0}
    assert (
        report([run], [Reference("ceiling", 100, 2.0, 8.0)], Reference("naive", 100, 10.0, 20.0), limit=_limit(80.0))
        == 0
    )
    out = capsys.readouterr().out
    for expected in ("hardware limit", "80.0 ev/s", "targets:", "pipeline / hardware limit"):
        assert expected in out


def test_stub_label() -> None:
    from bench.bench_pipeline import stub_label

    cmd = ["triton_python_backend_stub", "/r/served/finance/1/model.py", "triton_python_backend_shm_region_1",
           "1048576", "1048576", "42", "/usr/lib", "123", "finance_0_0", "DEFAULT"]  # fmt: skip
    assert stub_label(cmd) == "triton finance finance_0_0"
    assert stub_label(["stub"]) == "triton ?"


def test_steady_rate_leaves_out_the_fill_and_the_drain() -> None:
    from bench.bench_pipeline import steady_rate

    # 100 outputs one per 10 ms, then a 5 s drain of the last one: the steady rate ignores the tail.
    times = [i * 0.01 for i in range(99)] + [5.99]
    assert steady_rate(times) == pytest.approx(100.0, rel=0.02)
    assert steady_rate([1.0, 2.0]) == 0.0
