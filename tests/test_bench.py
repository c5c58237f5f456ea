"""`latvit bench` and the measurement protocol: records, isolation, bad input, reports.

Real latencies are never asserted (they belong to benchmarks/); rows are measured with tiny settings.
"""

import json
import sys
import textwrap

import pytest
import torch

from latvit.cli import main
from latvit.errors import LatvitError
from latvit.latency.bench import (
    RECORD_FIELDS,
    BenchRequest,
    measure_row,
    pareto_front,
    plot_records,
    records_csv,
    records_json,
    run_bench,
)
from latvit.targets.protocol import (
    NETWORK_SESSIONS,
    Timing,
    measure_interleaved,
    measure_latency,
    median_ratio,
    run_isolated,
)

FAST = dict(warmup=1, iters=3, min_seconds=0.0, max_seconds=2.0, sessions=1)  # one load: rounds take time


def test_timing_statistics():
    t = Timing.from_samples([0.001, 0.002, 0.003, 0.004, 0.010])
    assert t.median_ms == pytest.approx(3.0)
    assert t.min_ms == pytest.approx(1.0)
    assert t.p90_ms == pytest.approx(10.0)
    assert t.mean_ms == pytest.approx(4.0)
    assert t.cv == pytest.approx(0.7906, rel=1e-3)  # population std sqrt(50 / 5) / mean 4
    assert t.iters == 5


def test_measure_latency_respects_iters_and_min_seconds():
    calls = []
    timing = measure_latency(lambda: calls.append(1), warmup=2, iters=7, min_seconds=0.0, target_rel=None)
    assert timing.iters == 7 and len(calls) == 9
    timing = measure_latency(lambda: calls.append(1), warmup=0, iters=1, min_seconds=0.05)
    assert timing.iters > 1  # kept going until min_seconds
    with pytest.raises(LatvitError):
        measure_latency(lambda: None, iters=0)


def test_measure_interleaved_times_each_runner_once_per_round():
    calls = []
    medians = measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        3,
        alternate=True,
        warmup=0,
        iters=1,
        min_seconds=0.0,
        target_rel=None,
    )
    assert calls == ["a", "b", "b", "a", "a", "b"]  # odd rounds reversed
    assert {k: len(v) for k, v in medians.items()} == {"a": 3, "b": 3} and all(ms > 0 for ms in medians["a"])
    calls.clear()
    measure_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        2,
        warmup=0,
        iters=1,
        min_seconds=0.0,
        target_rel=None,
    )
    assert calls == ["a", "b", "a", "b"]
    assert median_ratio([2.0, 9.0, 4.0], [1.0, 3.0, 1.0]) == 3.0  # median of 2, 3, 4


def test_run_isolated_returns_value_error_crash_and_timeout():
    ok = run_isolated("latvit.targets.protocol:cpu_model", {}, timeout=60)
    assert ok.ok and isinstance(ok.value, str) and ok.value
    err = run_isolated("latvit.targets.protocol:set_threads", {"threads": 0}, timeout=60)
    assert not err.ok and "threads must be >= 1" in err.error
    crash = run_isolated("os:abort", {}, timeout=60)
    assert not crash.ok and "crashed" in crash.error
    hang = run_isolated("time:sleep", {"secs": 30}, timeout=2)
    assert not hang.ok and "timed out after 2 s" in hang.error and hang.seconds < 20


def test_measure_row_record_and_numerics():
    fast = FAST | {"sessions": NETWORK_SESSIONS}  # the default
    record = measure_row("mobilevit_xxs", "ort", img_size=64, threads=1, deploy=True, peak_gflops=100.0, **fast)
    assert set(RECORD_FIELDS) <= set(record)
    assert record["status"] == "ok" and record["deployed"] is True and record["source"] == "latvit"
    assert record["export_abs_diff"] < 1e-4  # ONNX Runtime against the deployed model in PyTorch
    assert record["compression_abs_diff"] < 1e-4  # deploy folding alone: fp32 rounding
    assert 0 < record["min_ms"] <= record["median_ms"] <= record["p90_ms"]
    assert record["gflops_per_s"] == pytest.approx(record["gflops"] / (record["median_ms"] / 1e3))
    assert record["pct_peak"] == pytest.approx(record["gflops_per_s"])  # peak 100 GFLOP/s
    assert record["runtime_version"].startswith("onnxruntime") and record["cpu"] and record["torch_version"]
    assert record["top1"] == 69.0 and record["img_size"] == 64 and record["threads"] == 1
    # the reference workload, timed on ORT in the same rounds: the device's speed while the row was measured
    assert record["ref_ms"] > 0 and record["ref_gemm_ms"] > 0 and record["ref_runtime"] == "ort"
    assert record["ref_ratio"] == pytest.approx(record["median_ms"] / record["ref_ms"])
    assert "load_1m" in record["conditions"]
    assert record["sessions"] == NETWORK_SESSIONS > 1  # the artifact loaded that many times, timed in turn


def test_rows_without_the_reference_carry_none():
    asked = FAST | {"sessions": NETWORK_SESSIONS}
    record = measure_row("mobilevit_xxs", "eager", img_size=64, threads=1, reference=False, **asked)
    assert record["status"] == "ok" and record["ref_ms"] is None and record["ref_ratio"] is None
    assert record["sessions"] == 1  # eager has no artifact file to load again


def test_timm_model_goes_through_the_same_path():
    record = measure_row("timm:mobilenetv2_050", "eager", img_size=64, threads=1, **FAST)
    assert record["status"] == "ok" and record["source"] == "timm" and record["deployed"] is True  # reparameterized
    assert record["export_abs_diff"] == record["compression_abs_diff"] == 0.0 and record["params_m"] > 1


def test_token_merging_rows_count_the_merged_model():
    """`--tome R` and the decreasing schedule `--tome RxL` measure the merged model; its FLOPs are counted."""
    plain = measure_row("timm:deit_tiny_patch16_224", "eager", img_size=224, threads=1, **FAST)
    constant = measure_row("timm:deit_tiny_patch16_224", "eager", img_size=224, threads=1, tome_r=13, **FAST)
    schedule = measure_row("timm:deit_tiny_patch16_224", "eager", img_size=224, threads=1, tome_r="26x6", **FAST)
    entrance = measure_row("timm:deit_tiny_patch16_224", "eager", img_size=224, threads=1, tome_r="keep0.5", **FAST)
    assert (plain["tome_r"], constant["tome_r"], schedule["tome_r"], entrance["tome_r"]) == (0, 13, "26x6", "keep0.5")
    # 197 tokens: 13 fewer in each of 12 layers, or 26 fewer in each of the first 6 (the same 41 tokens, sooner)
    assert schedule["gflops"] < constant["gflops"] < 0.75 * plain["gflops"]
    # keep 0.5: every layer on 98 of the 197 tokens, about half the FLOPs (timm's fused attention in the plain
    # row is counted by its own formula, so the bounds are loose)
    assert 0.4 * plain["gflops"] < entrance["gflops"] < 0.6 * plain["gflops"]


HANGING_RUNTIME = textwrap.dedent("""
    import time
    from latvit.runtimes.eager import EagerRuntime

    class Hanging(EagerRuntime):
        name = "hanging"

        def prepare(self, model, example, threads, workdir):
            time.sleep(600)

    RUNTIME = Hanging()
""")


def test_hanging_runtime_is_killed_and_the_bench_goes_on(tmp_path, monkeypatch):
    (tmp_path / "plugin_runtimes").mkdir()  # a third-party runtime is a dotted module path
    (tmp_path / "plugin_runtimes" / "__init__.py").write_text("")
    (tmp_path / "plugin_runtimes" / "hanging.py").write_text(HANGING_RUNTIME)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + ":" + ":".join(sys.path))
    req = BenchRequest(
        models=["mobilevit_xxs"],
        runtimes=["plugin_runtimes.hanging", "eager"],
        img_size=64,
        threads=1,
        timeout=15,
        **FAST,
    )
    records = run_bench(req, progress=False)
    assert [r["status"] for r in records] == ["failed", "ok"]
    assert "timed out" in records[0]["error"]
    assert records[1]["median_ms"] > 0


def test_reports_json_csv_plot(tmp_path):
    rows = [
        dict.fromkeys(RECORD_FIELDS)
        | {
            "model": m,
            "runtime": "ort",
            "status": "ok",
            "median_ms": ms,
            "top1": top1,
            "batch": 1,
            "threads": 2,
            "cpu": "cpu",
        }
        for m, ms, top1 in [("a", 1.0, 70.0), ("b", 2.0, 75.0), ("c", 3.0, 72.0)]
    ]
    data = json.loads(records_json(rows))
    assert data["format"] == "latvit-bench/1" and [r["model"] for r in data["records"]] == ["a", "b", "c"]
    header = records_csv(rows).splitlines()[0].split(",")
    assert header == RECORD_FIELDS
    assert pareto_front([(1.0, 70.0), (2.0, 75.0), (3.0, 72.0)]) == [0, 1]
    png = plot_records(rows, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "nosuch_model"], "unknown model 'nosuch_model'"),
        (["--models", "timm:resnet5000"], "unknown timm model"),
        (["--runtimes", "ortt"], "unknown runtime 'ortt'; did you mean ort?"),
        (["--batch", "0"], "batch must be >= 1"),
        (["--tome", "26x"], "token merging setting '26x': expected R"),
        (["--models", "efficientformer_l1", "--img-size", "100"], "multiple of 32"),
        (["--min-seconds", "5", "--max-seconds", "2"], "max-seconds must be at least min-seconds (5)"),
        (["--max-seconds", "400"], "below the row timeout (300)"),
        (["--sessions", "0"], "sessions >= 1"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latvit: error:") and message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())  # no partial files


@pytest.mark.real_probes
def test_cli_writes_json_csv_and_plot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "bench",
            "--models",
            "mobilevit_xxs",
            "--runtimes",
            "eager",
            "--img-size",
            "64",
            "--threads",
            "1",
            "--warmup",
            "1",
            "--iters",
            "2",
            "--min-seconds",
            "0",
            "--max-seconds",
            "1",
            "--csv",
            "b.csv",
        ]
    )
    assert code == 0
    records = json.loads((tmp_path / "latvit-bench.json").read_text())["records"]
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert records[0]["peak_engine"] == "torch.mm 1024 fp32, 1 threads"  # probed in a child, above a 64-px model
    assert (tmp_path / "latvit-bench.png").stat().st_size > 1000
    assert (tmp_path / "b.csv").read_text().count("\n") == 2


def test_input_normalization_follows_the_models_source():
    from latvit.pipeline.resolve import resolve_model

    resolved = resolve_model("mobilevit_xxs", 64)
    spec = resolved.model.spec
    assert resolved.source == "latvit" and (resolved.mean, resolved.std) == (tuple(spec.mean), tuple(spec.std))
    resolved = resolve_model("timm:deit_tiny_patch16_224")
    cfg = resolved.model.pretrained_cfg
    assert resolved.source == "timm" and (resolved.mean, resolved.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))


def test_resolver_builds_the_class_count_and_distillation_head_it_is_asked_for():
    """`latvit validate` resolves its model here too: the head follows the dataset's classes, and a run
    trained with a teacher is rebuilt with its distillation head so its weights load."""
    from latvit.pipeline.resolve import resolve_model

    net = resolve_model("mobilevit_xxs", 64, num_classes=7, distill=True).model
    assert net.spec.head.distill and net(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert not resolve_model("mobilevit_xxs", 64).model.spec.head.distill
    timm_net = resolve_model("timm:mobilenetv3_small_050", 64, num_classes=3).model
    assert timm_net(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_sparsity_rows_measure_the_pruned_model():
    """`--sparsity` prunes the deployed model (zeros baked in) before the runtime sees it; the record says so,
    and compression_abs_diff (against the model as built) shows that the pruning changed the logits, while the
    export's own error stays separate."""
    plain = measure_row("mobilevit_xxs", "eager", img_size=64, threads=1, **FAST)
    pruned = measure_row("mobilevit_xxs", "eager", img_size=64, threads=1, sparsity="0.5", **FAST)
    assert plain["sparsity"] is None and pruned["sparsity"] == 0.5 and pruned["status"] == "ok"
    assert plain["compression_abs_diff"] < 1e-5 < pruned["compression_abs_diff"]
    assert pruned["export_abs_diff"] == 0.0  # eager runs the pruned model itself


def test_failed_rows_keep_top1_in_its_column():
    from latvit.latency.bench import base_record, bench_table

    ok = measure_row("mobilevit_xxs", "eager", img_size=64, threads=1, **FAST)
    failed = base_record("mobilevit_xxs", "ort", 1, 64, 1) | {"status": "failed", "error": "boom"}
    table = bench_table([ok, failed])
    column = {c.header: list(c._cells) for c in table.columns}
    assert len(table.columns) == 14 and column["top-1"] == ["69.0", "69.0"] and column["export |diff|"][1] == ""
    assert column["median ms"][1].endswith("failed[/]: boom")


def test_timm_models_are_built_at_the_requested_size():
    """timm ViTs fix their input size at construction: built at --img-size, or a clear error up front."""
    from latvit.pipeline.resolve import resolve_model

    resolved = resolve_model("timm:deit_tiny_patch16_224", 256)
    assert resolved.img_size == 256 and resolved.model(torch.randn(1, 3, 256, 256)).shape == (1, 1000)
    with pytest.raises(LatvitError, match="timm:efficientformer_l1 does not take 256px input .* use --img-size 224"):
        resolve_model("timm:efficientformer_l1", 256)


def test_installed_runtime_that_cannot_run_here_is_unavailable(monkeypatch):
    """TensorRT installed on a machine without CUDA: an "unavailable" row with the reason, no export attempt
    (only CoreML, whose artifact is the deliverable, is measured as "export only" where it cannot run)."""
    from latvit.runtimes import get_runtime
    from latvit.runtimes.tensorrt import NO_CUDA, TensorRTRuntime

    monkeypatch.setattr(TensorRTRuntime, "missing", lambda self: None)  # as if the package were installed
    if get_runtime("tensorrt").cannot_run() != NO_CUDA:
        pytest.skip("this machine has CUDA: TensorRT can run here")
    req = BenchRequest(models=["mobilevit_xxs"], runtimes=["tensorrt", "eager"], img_size=64, threads=1, **FAST)
    tensorrt, eager = run_bench(req, progress=False)
    assert (tensorrt["status"], tensorrt["error"], eager["status"]) == ("unavailable", NO_CUDA, "ok")
    assert get_runtime("coreml").export_only_where_it_cannot_run


def test_tome_row_keeps_export_error_and_compression_effect_apart():
    """The two errors are separate numbers: merging moves the logits (compression effect), ONNX Runtime
    computes what the merged model computes in PyTorch (export error ~1e-6)."""
    record = measure_row("mobilevit_xxs", "ort", img_size=64, threads=1, tome_r="keep0.5", **FAST)
    assert record["status"] == "ok" and record["tome_r"] == "keep0.5"
    assert record["export_abs_diff"] < 1e-4
    assert record["compression_abs_diff"] > 10 * record["export_abs_diff"]


def test_roofline_is_never_below_a_measured_model(monkeypatch):
    """A busy second during the GEMM probe must not make % peak exceed 100: the roofline is the best of
    the run's probes and of the models measured, and each record says which engine set it and when."""
    import latvit.latency.bench as bench

    monkeypatch.setattr(bench, "_probe", lambda target, kwargs, threads: 0.01)  # a probe that ran while busy
    req = BenchRequest(models=["mobilevit_xxs"], runtimes=["eager"], img_size=64, threads=1, **FAST)
    (record,) = run_bench(req, progress=False)
    assert record["status"] == "ok"
    assert record["pct_peak"] == pytest.approx(100.0) and record["peak_gflops"] == record["gflops_per_s"]
    assert record["peak_engine"] == "model mobilevit_xxs on eager" and record["peak_at"]

    roofline = bench.Roofline()
    roofline.offer(50.0, "torch.mm")
    roofline.offer(20.0, "ort GEMM")  # a lower probe never lowers the roofline
    assert (roofline.gflops, roofline.engine) == (50.0, "torch.mm")
    assert roofline.apply({"status": "ok", "gflops_per_s": 25.0})["pct_peak"] == pytest.approx(50.0)


def test_runtime_gemm_probe_measures_the_runtimes_own_engine():
    from latvit.latency.bench import runtime_gemm_gflops

    assert runtime_gemm_gflops("eager", threads=1, size=256, seconds=0.05) > 0.1


def test_old_records_upgrade_to_todays_fields():
    from latvit.latency.bench import upgrade_record

    old = {"model": "mobilevit_xxs", "runtime": "ort", "status": "ok", "max_abs_diff": 2e-6}
    new = upgrade_record(old)
    assert set(RECORD_FIELDS) <= set(new) and new["export_abs_diff"] == 2e-6 and "max_abs_diff" not in new
