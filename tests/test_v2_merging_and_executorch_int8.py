"""EfficientFormerV2 key/value token merging, ExecuTorch int8 end to end,
and the accuracy columns of benchmarks/compression.py. Tiny specs at 32 px, one thread."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import latvit
from latvit.cli import main as cli
from latvit.deploy.token_merging import (
    KVMergingAttention,
    MergingTransformer,
    TomeReport,
    match_tokens,
    merge_keys_values,
    merge_tokens,
    parse_tome,
    tome,
)
from latvit.layers.efficientformer import AttentionDownsample, TalkingHeadAttention2d
from latvit.space import build_model
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

ROOT = Path(__file__).resolve().parents[1]


def tiny_v2_spec() -> NetSpec:
    """EfficientFormerV2 in miniature at 32 px: stride-2 attention on 4x4, attention downsampling, attention on 2x2."""
    attn = dict(heads=2, key_dim=8, attn_ratio=2.0, expansion=2.0)
    return NetSpec(
        name="tiny_v2",
        img_size=32,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        family="efficientformerv2",
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="gelu"), BlockSpec("conv_bn_act", 16, stride=2)),
        stages=(
            StageSpec(
                (
                    BlockSpec("conv_bn_act", 24, stride=2),
                    BlockSpec("ffn_local", 24),
                    BlockSpec("attn_ffn", 24, attn_stride=2, **attn),
                )
            ),
            StageSpec(
                (
                    BlockSpec("attn_downsample", 32, heads=2, key_dim=8, attn_ratio=2.0),
                    BlockSpec("attn_ffn", 32, **attn),
                )
            ),
        ),
        head=HeadSpec(),
    )


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Random position biases and talking heads, and layer scales of 1: an untrained net otherwise hides its
    attention behind 1e-5 layer scales and zero biases."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "attention_biases" in name or "talking_head" in name:
                p.normal_(0, 1)
            elif name.endswith(".gamma"):
                p.fill_(1.0)
    return model.eval()


# -- EfficientFormerV2 key/value merging -------------------------------------------------------------------
@pytest.fixture(scope="module")
def v2():
    return randomized(latvit.create_model(tiny_v2_spec(), num_classes=10))


def test_v2_tome_r0_is_exactly_the_original_and_r_changes_it(v2):
    x = torch.randn(2, 3, 32, 32)
    report = TomeReport()
    with torch.no_grad():
        ref = v2(x)
        assert torch.equal(tome(v2, 0, report)(x), ref)
        merged = tome(v2, 2)(x)
    assert report.merged_layers == 3 and not report.skipped  # two attn_ffn + one attn_downsample
    assert merged.shape == ref.shape and not torch.allclose(merged, ref, atol=1e-6)
    assert sum(isinstance(m, KVMergingAttention) for m in tome(v2, 2).modules()) == 3
    assert not any(isinstance(m, KVMergingAttention) for m in v2.modules())  # the input model is untouched


def _attention(kind: str) -> torch.nn.Module:
    torch.manual_seed(1)
    kw = dict(resolution=(4, 4), key_dim=8, heads=4, attn_ratio=2.0)
    a = TalkingHeadAttention2d(16, **kw) if kind == "talking" else AttentionDownsample(16, 24, **kw)
    return randomized(a)


@pytest.mark.parametrize("kind", ["talking", "downsample"])
def test_merging_identical_keys_is_exact_with_proportional_attention(kind):
    """Keys that are exact duplicates merge without changing the output: proportional attention (+ log size
    before the softmax) and the size-weighted talking-head bias make a merged key count as the keys it holds.
    Column pairs (2i, 2i+1) of the grid are equal, so each a-token's best match is its twin; the position
    bias is made equal within each twin pair (merging averages it)."""
    a = _attention(kind)
    a.fuse()  # the bias becomes a (heads, Nq, Nk) buffer; make it equal on each twin pair of keys
    a.bias_cache[..., 1::2] = a.bias_cache[..., ::2]
    x = torch.randn(2, 16, 4, 4)
    x[..., 1::2] = x[..., ::2]
    with torch.no_grad():
        ref = a(x)
        for r in (3, 8):
            assert torch.allclose(KVMergingAttention(a, r)(x), ref, atol=1e-5)
        y = torch.randn(2, 16, 4, 4)  # distinct keys: merging is an approximation, and visibly one
        assert not torch.allclose(KVMergingAttention(a, 8)(y), a(y), atol=1e-4)


def test_merge_keys_values_averages_bias_columns_of_each_group():
    torch.manual_seed(0)
    k, v, bias = torch.randn(2, 3, 5, 10), torch.randn(2, 3, 10, 4), torch.randn(3, 7, 10)
    k2, v2_, bias2, size = merge_keys_values(k, v, bias, 4)
    assert k2.shape == (2, 3, 5, 6) and v2_.shape == (2, 3, 6, 4) and bias2.shape == (2, 3, 7, 6)
    assert torch.equal(size.sum(-1).flatten(), torch.full((2,), 10.0))  # sizes sum to the original count
    M = merge_tokens(match_tokens(k.mean(1).transpose(1, 2), 4), torch.eye(10).expand(2, 10, 10))  # (2, 6, 10) members
    for b in range(2):
        for j in range(6):
            members = M[b, j].nonzero().flatten()
            assert torch.allclose(bias2[b, :, :, j], bias[:, :, members].mean(-1), atol=1e-6)
            assert torch.allclose(v2_[b, :, j], v[b, :, members].mean(1), atol=1e-6)


def test_v2_tome_exports_to_onnx_runtime(v2, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from latvit.runtimes import get_runtime

    model = tome(v2, 2)
    x = torch.randn(1, 3, 32, 32)
    run = get_runtime("ort").prepare(model, x, 1, tmp_path)
    with torch.no_grad():
        assert np.abs(run(x.numpy()) - model(x).numpy()).max() < 1e-4
    ops = {n.op_type for f in tmp_path.rglob("*.onnx") for n in onnx.load(str(f)).graph.node}
    assert "ScatterElements" not in ops and ops  # no scatter-reduce


# -- ExecuTorch int8 ----------------------------------------------------------------------------------------
def tiny_et_spec() -> NetSpec:
    """Conv stem, local FFN and MobileViT attention at 32 px: the op mix of the hybrids, small enough to
    quantize and lower in seconds."""
    return NetSpec(
        name="tiny_et",
        img_size=32,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="relu"),),
        stages=(
            StageSpec((BlockSpec("conv_bn_act", 24, stride=2, act="relu"), BlockSpec("ffn_local", 24))),
            StageSpec(
                (
                    BlockSpec("mv2", 32, stride=2, expansion=2.0),
                    BlockSpec("mobilevit", 32, dim=32, depth=1, heads=2, expansion=2.0),
                )
            ),
        ),
        head=HeadSpec(),
    )


@pytest.mark.slow  # ExecuTorch's XNNPACK lowering has a fixed cost of tens of seconds per process
def test_executorch_int8_end_to_end(tmp_path):
    """`latvit quantize --runtime executorch` (PT2E + XNNPACK quantizer, lowered to a .pte) -> the ExecuTorch
    runtime: within 5% of the fp32 logit range (stated tolerance), the same top-1 on most images."""
    from latvit.runtimes import get_runtime

    et = get_runtime("executorch")
    if et.missing():
        pytest.skip(et.missing())
    from latvit.deploy import deploy
    from latvit.deploy.quantize import calibration_batches

    torch.manual_seed(0)
    model = latvit.create_model(tiny_et_spec(), num_classes=10).eval()
    latvit.save(model, tmp_path / "saved")
    assert cli(
        [
            "quantize",
            str(tmp_path / "saved"),
            "--runtime",
            "executorch",
            "--calib",
            "synthetic",
            "--calib-images",
            "8",
            "-o",
            str(tmp_path / "tiny.pte"),
            "--no-compare",
        ]
    ) in (0, None)
    batches = calibration_batches("synthetic", 32, (0.5,) * 3, (0.25,) * 3, count=8)
    run = et.load(tmp_path / "tiny.pte", torch.from_numpy(batches[0]), 1)
    with torch.no_grad():
        ref = np.concatenate([deploy(model)(torch.from_numpy(b)).numpy() for b in batches])
    out = np.concatenate([run(b) for b in batches])
    assert np.abs(out - ref).max() <= 0.05 * np.ptp(ref)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.75
    assert not np.array_equal(out, ref)  # it really is the quantized program


def test_executorch_int8_takes_a_merged_model(tmp_path):
    """Token merging's index arithmetic stays integer through XNNPACK's int8 quantizer, which turns a scalar
    operand of add/mul into a float constant (an index computed as `2 * order` or `n_kept + partner` failed
    calibration with "tensors used as indices must be long"); the merged model quantizes and runs."""
    from test_compression import ONE_BLOCK_MOBILEVIT  # one merging MobileViT block: a seed model lowers 4x slower

    from latvit.deploy.quantize import quantize
    from latvit.runtimes import get_runtime

    et = get_runtime("executorch")
    if et.missing():
        pytest.skip(et.missing())
    model = tome(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), **parse_tome("keep0.5"))
    assert any(isinstance(m, MergingTransformer) for m in model.modules())
    calibration = [np.random.default_rng(i).standard_normal((1, 3, 64, 64), dtype=np.float32) for i in range(2)]
    path = quantize(model, "executorch", calibration, tmp_path / "merged.pte")
    x = torch.from_numpy(calibration[0])
    assert np.asarray(et.load(Path(path), x, 1)(calibration[0])).shape == (1, 10)


@pytest.mark.slow  # ExecuTorch's XNNPACK lowering has a fixed cost of tens of seconds per process
def test_executorch_int8_talking_head_attention(tmp_path):
    """EfficientFormerV2's talking heads (1x1 conv over heads, then softmax over the last dim) in an int8
    program: the softmax reads the conv through a dequantize node, and XNNPACK's channels-last layout once
    made it normalise over heads (63% of the output range off). Quantization error alone is ~4%."""
    from latvit.deploy import deploy
    from latvit.deploy.quantize import quantize
    from latvit.layers.efficientformer import TalkingHeadAttention2d
    from latvit.runtimes import get_runtime

    et = get_runtime("executorch")
    if et.missing():
        pytest.skip(et.missing())
    torch.manual_seed(0)
    attn = TalkingHeadAttention2d(64, resolution=(7, 7), key_dim=16, heads=4).eval()
    with torch.no_grad():
        attn.talking_head1.weight.mul_(8.0)  # peaky attention, so that the wrong axis shows
    attn = deploy(attn).eval()
    calib = [torch.randn(1, 64, 7, 7).numpy() for _ in range(4)]
    run = et.load(quantize(attn, "executorch", calib, tmp_path / "attn.pte"), torch.from_numpy(calib[0]), 1)
    x = torch.randn(1, 64, 7, 7)
    with torch.no_grad():
        ref = attn(x).numpy()
    assert np.abs(run(x.numpy()) - ref).max() <= 0.15 * np.abs(ref).max()
    # a batch of two: calibrated on whole batches (the export is specialised to the batch shape)
    pairs = [torch.randn(2, 64, 7, 7).numpy() for _ in range(2)]
    run2 = et.load(quantize(attn, "executorch", pairs, tmp_path / "attn2.pte"), torch.from_numpy(pairs[0]), 1)
    with torch.no_grad():
        ref2 = attn(torch.from_numpy(pairs[1])).numpy()
    assert np.abs(run2(pairs[1]) - ref2).max() <= 0.15 * np.abs(ref2).max()


# -- benchmarks/compression.py accuracy columns ------------------------------------------------------------
def _benchmark(script: str = "compression"):
    """benchmarks/SCRIPT.py imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{script}_bench", ROOT / "benchmarks" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compression_benchmark_reports_accuracy_per_variant(tmp_path):
    """A tiny model trained for two short epochs on generated 4-class data, saved, then measured: every
    variant has a latency ratio and a top-1; int8 is evaluated on the runtime's own artifact."""
    pytest.importorskip("onnxruntime")
    from latvit.errors import LatvitError
    from latvit.train import make_config, train

    run_dir = tmp_path / "run"
    train(
        make_config(
            model=str(_spec_file(tmp_path)),
            epochs=2,
            output=str(run_dir),
            data="synthetic",
            synthetic_train=128,
            batch_size=16,
            num_workers=0,
            threads=1,
            progress=False,
            warmup_epochs=0.5,
            lr=5e-3,
            ema_decay=0.7,
            seed=3,
        )
    )
    bench = _benchmark()
    out = tmp_path / "result.json"
    result = bench.main(
        [
            "--checkpoint",
            f"tiny={run_dir / 'best'}",
            "--data",
            "synthetic",
            "--runtimes",
            "ort",
            "--eval-images",
            "63",
            "--calib-images",
            "8",
            "--tome",
            "2,1x1",
            "--rounds",
            "1",
            "--seconds",
            "0",
            "--threads",
            "1",
            "--batch",
            "2",
            "--json",
            str(out),
        ]
    )
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"fp32", "tome r=2", "tome r=1x1", "sparse 50%", "int8"}
    assert all(0 <= r["top1"] <= 100 and r["speedup"] > 0 for r in rows.values())
    assert rows["fp32"]["top1"] > 40  # learned something (4 classes: chance is 25%)
    assert rows["fp32"]["top1_drop"] == 0 and rows["fp32"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    # int8 ran at a static batch of 2 over 63 images (the last call padded): its top-1 counts 63 images
    assert result["batch"] == 2 and round(rows["int8"]["top1"] * 63 / 100, 6).is_integer()
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    # --tome none --sparsity 0: no merged or sparse variant (eager: nothing to export, so this costs no export)
    only = bench.main(
        [
            "--checkpoint",
            f"tiny={run_dir / 'best'}",
            "--data",
            "synthetic",
            "--runtimes",
            "eager",
            "--eval-images",
            "16",
            "--calib-images",
            "2",
            "--tome",
            "none",
            "--sparsity",
            "0",
            "--rounds",
            "1",
            "--seconds",
            "0",
            "--threads",
            "1",
            "--json",
            str(tmp_path / "only.json"),
        ]
    )
    assert [r["variant"] for r in only["rows"]] == ["fp32"] and "sparsity" not in only["rows"][0]
    with pytest.raises(LatvitError, match="MODEL=RUN_DIR/best"):
        bench.main(["--checkpoint", "no-equals-sign"])
    with pytest.raises(SystemExit):  # argparse: one usage line naming the bad --tome value
        bench.main(["--tome", "2,x"])
    with pytest.raises(LatvitError, match="not a latvit.save directory"):
        bench.main(["--checkpoint", f"x={tmp_path}"])
    with pytest.raises(LatvitError, match="no model.safetensors"):
        bench.main(["--checkpoint", f"timm:deit_tiny_patch16_224={tmp_path}"])
    with pytest.raises(SystemExit):
        bench.main(["--batch", "0"])


def test_compression_benchmark_loads_a_trained_timm_model(tmp_path):
    """`--checkpoint timm:NAME=RUN` takes the weights train_timm_fashion_mnist.py writes, head size included."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    trained = timm.create_model("deit_tiny_patch16_224", num_classes=10).eval()
    save_file(trained.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "train.json").write_text(json.dumps({"crop_pct": 1.0}))
    bench = _benchmark()
    resolved = bench.load_trained("timm:deit_tiny_patch16_224", tmp_path)
    model, size, source = resolved.model, resolved.img_size, resolved.source
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x)) and model(x).shape == (1, 10)
    assert (size, source) == (224, "timm") and bench.training_crop_pct(tmp_path) == 1.0


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    tiny_et_spec().to_json(path)
    return path


def test_compression_benchmark_turns_a_runtime_crash_into_an_error(tmp_path, monkeypatch):
    """A program that kills the runtime's process (as merged EfficientFormerV2 segfaults ExecuTorch) is
    probed in a child process first, so the benchmark gets a one-line error instead of dying."""
    from latvit.errors import LatvitError
    from latvit.runtimes import get_runtime

    package = tmp_path / "crashpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "runtime.py").write_text(
        "import os\nfrom pathlib import Path\nfrom latvit.runtimes.base import Runtime\n\n"
        "class CrashingRuntime(Runtime):\n"
        "    name, suffix = 'crashpkg.runtime', '.bin'\n\n"
        "    def export(self, model, example, path):\n"
        "        Path(path).write_bytes(b'program')\n"
        "        return Path(path)\n\n"
        "    def load(self, path, example, threads):\n"
        "        os.abort()  # what a segfault in native code does: the process dies with a signal\n\n"
        "RUNTIME = CrashingRuntime()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    x = np.zeros((1, 3, 8, 8), dtype=np.float32)
    with pytest.raises(LatvitError, match=r"fails on crashpkg.runtime: crashed \(killed by signal 6\)"):
        _benchmark().prepare_checked(get_runtime("crashpkg.runtime"), torch.nn.Identity(), x, 1, tmp_path)


def test_timm_training_script_writes_weights_the_benchmark_loads_and_resumes(tmp_path, capsys):
    """benchmarks/train_timm_fashion_mnist.py on generated data: weights + train.json, which compression.py
    loads (head sized to the data's classes); started again, it resumes from last.pt instead of retraining."""
    script = _benchmark("train_timm_fashion_mnist")
    out = tmp_path / "run"
    argv = [
        "--data",
        "synthetic",
        "--subset",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--output",
        str(out),
    ]
    summary = script.main(argv)
    assert summary["steps"] == 2 and (out / "model.safetensors").is_file() and (out / "last.pt").is_file()
    again = script.main(argv)
    assert "resuming" in capsys.readouterr().out and again["steps"] == 2
    with pytest.raises(SystemExit):  # the run directory holds a run with other settings: not mixed
        script.main([*argv, "--lr", "0.01"])
    resolved = _benchmark().load_trained("timm:deit_tiny_patch16_224", out)
    model, size = resolved.model, resolved.img_size
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 4)  # synthetic data: 4 classes
    with pytest.raises(SystemExit):  # no full batch: a usage error, not an empty run
        script.main(["--data", "synthetic", "--subset", "4", "--batch-size", "8", "--output", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_activation_cap_benchmark(tmp_path):
    """benchmarks/activation_cap.py on a tiny model and its ReLU variant: four timings per pair, and the cap
    is Amdahl's law over the measured activation share and the variant's int8 speed-up."""
    pytest.importorskip("onnxruntime")
    bench = _benchmark("activation_cap")
    gelu, relu = tmp_path / "tiny.json", tmp_path / "tiny_relu.json"
    tiny_v2_spec().to_json(gelu)
    tiny_v2_spec().with_act("relu", name="tiny_relu").to_json(relu)
    out = tmp_path / "cap.json"
    result = bench.main(
        [
            "--pairs",
            f"{gelu}={relu}",
            "--runtime",
            "ort",
            "--rounds",
            "2",
            "--seconds",
            "0",
            "--threads",
            "1",
            "--calib-images",
            "2",
            "--json",
            str(out),
        ]
    )
    (row,) = result["rows"]
    assert set(row["median_ms"]) == {"model fp32", "model int8", "variant fp32", "variant int8"}
    assert all(ms > 0 for ms in row["median_ms"].values())
    share, gain = row["activation_share"], row["variant_int8_speedup"]
    assert row["int8_cap"] == pytest.approx(1 / (share + (1 - share) / gain), rel=2e-3)
    assert json.loads(out.read_text())["rows"] == [row] and result["machine"]["threads"] == 1
    with pytest.raises(SystemExit):  # argparse: one usage line naming the expected form
        bench.main(["--pairs", "mobilevit_s"])
