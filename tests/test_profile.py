"""`latvit profile` and `latvit density`: per-op profiles on eager and ONNX Runtime, the >= 90% accounting
bound, the category mapping on every seed family, JSON schemas, density rows for every block kind, errors."""

from __future__ import annotations

import json

import pytest
import torch.nn as nn

import latvit
from latvit.analysis.density import BLOCK_TYPES, RESOLUTIONS, density_cases, measure_density, plot_density
from latvit.analysis.profile import CATEGORIES, COVERAGE_MIN, Locator, plot_profile, profile_model
from latvit.cli import main
from latvit.errors import LatvitError
from latvit.space import BLOCK_KINDS, plan_network

SEEDS = ["efficientformer_l1", "efficientformerv2_s0", "mobilevit_xxs"]  # one model of each family
SIZE = 96  # small, but large enough that the runtimes' per-op bookkeeping is not most of the time
EXPLAINED_OTHER = {"classifier head", "residual add", "eager Python glue"}
FAST = dict(img_size=SIZE, warmup=1, iters=3, min_seconds=0.0, threads=1)


@pytest.fixture(
    scope="module", params=[(m, r) for r in ("eager", "ort") for m in SEEDS], ids=lambda p: f"{p[1]}-{p[0]}"
)
def prof(request):
    model, runtime = request.param
    if runtime == "ort":
        pytest.importorskip("onnxruntime")
    return profile_model(model, runtime, **FAST)


def _overloaded() -> bool:
    """More runnable processes than 1.5x the cores: other jobs' preemptions land between the runtime's ops
    and inflate its overhead, so the accounting bound says nothing about latvit then."""
    import os

    return os.getloadavg()[0] > 1.5 * (os.cpu_count() or 1)


# ONNX Runtime's node profiler times kernels only; the executor's 3-4 us between nodes (dispatch and the
# profiler's bookkeeping) is attributed to the following node as the `runtime` category. With it, ops explain
# the run at the models' own sizes (>= 98% measured); kernels alone explain (quiet 2-core machine, 1 thread,
# deployed models) L1 94-95%, V2-S0 91%, MobileViT-XXS 87% (~360 small nodes), which docs/analysis.md
# states. The per-node overhead is the host's: on a slower day of the same kind of machine (session 7, load
# < 1, three runs) kernels explained L1 92-93%, V2-S0 87.5-89.5%, MobileViT-XXS 78-81% while `coverage`
# stayed at 95-98%; later that day, the host slower still, MobileViT-XXS fell to 67%. The kernel share
# follows the host's per-node overhead, so it is a floor against lost kernels here, not a measurement;
# `coverage` is the accounting check.
KERNEL_MIN = {"efficientformer_l1": 0.6, "efficientformerv2_s0": 0.6, "mobilevit_xxs": 0.5}


@pytest.mark.parametrize("model", SEEDS)
def test_ort_ops_account_for_the_end_to_end_latency_at_full_size(model):
    pytest.importorskip("onnxruntime")
    prof = profile_model(model, "ort", warmup=2, iters=5, min_seconds=0.0, threads=1)
    if (prof.coverage < COVERAGE_MIN or prof.kernel_coverage < KERNEL_MIN[model]) and _overloaded():
        pytest.xfail(
            f"machine overloaded (load {__import__('os').getloadavg()[0]:.1f}): ops explain {prof.coverage:.1%}"
        )
    assert prof.coverage >= COVERAGE_MIN, f"{model}/ort: ops explain {prof.coverage:.1%}"
    assert prof.kernel_coverage >= KERNEL_MIN[model], f"{model}/ort: kernels explain {prof.kernel_coverage:.1%}"
    assert prof.kernel_coverage <= prof.coverage <= 1.05


@pytest.mark.parametrize("runtime", ["eager", "ort"])
def test_a_noisy_host_does_not_keep_the_profiler_running(runtime, tmp_path):
    """A host too noisy for the stopping target (here a target no interval meets) runs the unprofiled latency
    to its cap, but the profiler records exactly `iters` calls: every profiled call keeps its events in
    memory, so profiling until the interval closes grew an eager L1 profile past 18 GB."""
    import torch

    from latvit.analysis.profile import PROFILERS

    if runtime == "ort":
        pytest.importorskip("onnxruntime")
    model = latvit.deploy(latvit.create_model("mobilevit_xxs", img_size=32)).eval()
    proto = dict(warmup=1, iters=3, min_seconds=0.0, max_seconds=0.5, target_rel=1e-9)
    raw = PROFILERS[runtime](model, torch.randn(1, 3, 32, 32), 1, proto, tmp_path)
    assert raw.latency.noisy and raw.latency.iters > 3  # the stopping rule ran the plain latency to its cap
    assert raw.e2e.iters == 3 and raw.runs == 3


def test_ops_account_for_the_end_to_end_latency(prof):
    assert prof.ops and prof.e2e.iters >= 3
    if prof.runtime == "eager":  # ORT at 96 px: see the full-size test above
        if prof.coverage < COVERAGE_MIN and _overloaded():
            pytest.xfail(
                f"machine overloaded (load {__import__('os').getloadavg()[0]:.1f}): ops explain {prof.coverage:.1%}"
            )
        assert prof.coverage >= COVERAGE_MIN, f"{prof.model}/{prof.runtime}: ops explain {prof.coverage:.1%}"
    assert prof.coverage <= 1.05  # op times are inside the inference they belong to
    cats = prof.by_category()
    assert set(cats) == set(CATEGORIES) | {"overhead"}
    assert sum(cats.values()) == pytest.approx(max(prof.e2e.mean_ms, prof.op_ms), rel=1e-6)


def test_every_op_is_located_and_categorised(prof):
    plan = plan_network(latvit.get_spec(prof.model), SIZE)
    wheres = {b.where for b in plan.blocks}
    # eager's `python` rows (the interpreter between module calls, e.g. a stage's own loop) are not ops
    compute = [op for op in prof.ops if op.op_type != "python"]
    located = sum(op.ms for op in compute if op.block in wheres or op.block == "head")
    assert located >= 0.95 * sum(op.ms for op in compute)  # nearly all time lands on a planned block or the head
    unexplained = {
        (op.op_type, op.module, op.reason)
        for op in prof.ops
        if op.category == "other" and op.reason not in EXPLAINED_OTHER
    }
    assert not unexplained
    assert {op.category for op in prof.ops} <= set(CATEGORIES)
    # the compute of every family shows up where it belongs
    assert sum(op.ms for op in prof.ops if op.category in ("token_mixer", "mlp")) > 0
    assert any(op.category == "stem" for op in prof.ops)


def test_profile_json_schema(prof, tmp_path):
    path = tmp_path / "p.json"
    prof.to_json(path)
    d = json.loads(path.read_text())
    assert d["schema"] == "latvit.profile" and d["schema_version"] == 1
    for key in (
        "model",
        "runtime",
        "runtime_version",
        "img_size",
        "threads",
        "source",
        "e2e",
        "latency",
        "op_ms",
        "overhead_ms",
        "coverage",
        "categories",
        "blocks",
        "plan",
        "ops",
        "machine",
    ):
        assert key in d, key
    assert d["img_size"] == SIZE and d["runtime"] == prof.runtime
    assert {"median_ms", "p90_ms", "cv", "iters"} <= set(d["e2e"])
    op = d["ops"][0]
    assert set(op) == {"name", "op_type", "module", "block", "kind", "category", "reason", "ms", "calls"}
    assert sum(b["ms"] for b in d["blocks"]) == pytest.approx(d["op_ms"], rel=1e-6)


def test_plot_profile_writes_png(tmp_path):
    prof = profile_model("mobilevit_xxs", "eager", **FAST)
    path = tmp_path / "p.png"
    plot_profile(prof, path)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_classification_rules():
    net = latvit.create_model("efficientformer_l1", img_size=SIZE)
    loc = Locator(net, plan_network(net.spec, SIZE))
    assert loc.classify("Transpose", "stages.3.blocks.4.token_mixer")[0] == "reshape"
    assert loc.classify("Erf", "stages.0.blocks.0.mlp.act")[0] == "activation"  # decomposed GELU
    assert loc.classify("ReduceMean", "stages.3.blocks.4.norm1")[0] == "norm"  # decomposed LayerNorm
    assert loc.classify("Conv", "stages.0.blocks.0.mlp.norm1")[0] == "mlp"  # BN folded into its conv
    assert loc.classify("Conv", "stem.0.conv")[0] == "stem"
    assert loc.classify("Conv", "stages.1.blocks.0.conv")[0] == "downsampling"
    assert loc.classify("MatMul", "stages.3.blocks.4.token_mixer")[0] == "token_mixer"
    assert loc.classify("Gemm", "head.fc") == ("other", "classifier head")
    assert loc.locate("stages.3.blocks.4.mlp.fc1") == ("stages[3][4]", "meta3d")


def test_every_block_kind_part_has_a_role():
    """Compute ops anywhere inside any density block (TRT-ViT kinds included) never land in `other`."""
    for case in density_cases(resolutions=(7,)):
        net = latvit.create_model(case.spec(), num_classes=0)
        loc = Locator(net, plan_network(case.spec(), num_classes=0))
        for path, m in net.named_modules():  # modules with weights: where compute ops come from
            if path.startswith("stages.0.blocks.0.") and any(True for _ in m.parameters(recurse=False)):
                cat, why = loc.classify("Conv", path)
                assert cat != "other", (case.kind, path, why)


def test_bad_runtime_and_model_give_one_line():
    with pytest.raises(LatvitError, match="unknown runtime 'onxx'"):
        profile_model("mobilevit_xxs", "onxx")
    with pytest.raises(LatvitError, match="no per-op profiler"):
        profile_model("mobilevit_xxs", "tensorrt")
    with pytest.raises(LatvitError, match="runtime 'latvit.runtimes.eager' has no per-op profiler"):
        profile_model("mobilevit_xxs", "latvit.runtimes.eager")  # a third-party (dotted) runtime: loads, no profiler
    with pytest.raises(LatvitError, match="unknown model 'mobilevit_xxx'"):
        profile_model("mobilevit_xxx", "eager")
    with pytest.raises(LatvitError, match="input size 100"):
        profile_model("efficientformer_l1", "eager", img_size=100)


def test_cli_errors_exit_2(capsys):
    assert main(["profile", "mobilevit_xxs", "--runtime", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latvit: error: unknown runtime 'nope'") and "\n" not in err
    assert main(["density", "--kinds", "meta9d"]) == 2
    assert "no density rows for kind(s) meta9d" in capsys.readouterr().err
    assert main(["density", "--resolutions", "56,x"]) == 2
    assert "--resolutions must be comma-separated integers" in capsys.readouterr().err


def test_cli_profile_eager(tmp_path, capsys):
    js, png = tmp_path / "p.json", tmp_path / "p.png"
    assert (
        main(
            [
                "profile",
                "efficientformerv2_s0",
                "--runtime",
                "eager",
                "--img-size",
                str(SIZE),
                "--iters",
                "3",
                "--warmup",
                "1",
                "--threads",
                "1",
                "--json",
                str(js),
                "--plot",
                str(png),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "token mixer / attention" in out and "per block" in out
    assert json.loads(js.read_text())["model"] == "efficientformerv2_s0"
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- density ---------------------------------------------------------------------------------------------
def test_density_rows_for_every_block_kind():
    cases = density_cases()
    kinds = {bt.kind for bt in BLOCK_TYPES if bt.kind in BLOCK_KINDS}
    assert {"bottleneck", "meta4d", "meta3d", "ffn_local", "attn_ffn", "mobilevit"} <= kinds
    for kind in kinds:
        assert sorted(c.resolution for c in cases if c.kind == kind) == sorted(RESOLUTIONS), kind
    for c in cases:
        p = c.plan()
        assert (p.h, p.w, p.c_in) == (c.resolution, c.resolution, c.c_in)
        assert p.cost.flops > 0 and p.cost.params > 0
    # the family's own blocks are used where the family has them
    l1 = {c.resolution: c for c in cases if c.kind == "meta4d"}
    assert l1[7].c_in == 448 and l1[7].source.startswith("efficientformer_l1 stages[3]")


def test_measure_density_eager(tmp_path):
    cases = [c for c in density_cases(["meta4d", "ffn_local"], resolutions=(14, 7))]
    report = measure_density(cases, "eager", threads=1, warmup=1, iters=3, min_seconds=0.0, peak=False)
    assert len(report.rows) == 4
    for row in report.rows:
        assert row["error"] is None
        assert row["gflops_per_s"] == pytest.approx(row["gflops"] / (row["ms"] / 1e3))
        assert row["mparams_per_s"] == pytest.approx(row["mparams"] / (row["ms"] / 1e3))
    report.to_json(tmp_path / "d.json")
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["schema"] == "latvit.density" and d["rows"][0]["kind"] == "meta4d"
    plot_density(report, tmp_path / "d.png")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"


def test_density_flops_match_the_built_block():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    for c in density_cases(["meta3d", "mobilevit"], resolutions=(7,)):
        stage = latvit.build_model(c.spec(), num_classes=0).stages[0].eval()
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            stage(torch.randn(1, c.c_in, 7, 7))
        assert fc.get_total_flops() == c.plan().cost.flops
        assert sum(p.numel() for p in stage.parameters()) == c.plan().cost.params
        assert isinstance(stage, nn.Module)


def test_profile_on_a_device_that_cannot_take_it_says_what_to_use_instead(capsys):
    """An SSH device profiles ort (tests/test_targets_ssh.py); another runtime there, or an adb phone (whose
    benchmark tools give no per-op events), is one line naming what works, before anything connects."""
    from latvit.cli import main

    assert main(["profile", "mobilevit_xxs", "--runtime", "openvino", "--target", "ssh://pi@10.0.0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "per-op profiles there are taken with ort" in err
    assert "latvit bench --target ssh://pi@10.0.0.7 --runtimes openvino" in err
    assert main(["profile", "mobilevit_xxs", "--target", "adb://emulator-5554"]) == 2
    assert "it takes no per-op profiles" in capsys.readouterr().err
