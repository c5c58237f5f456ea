"""Compression: int8 through the runtimes' own tooling, integer-only ops, sparsity."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import latvit
from latvit.deploy import deploy
from latvit.deploy.compress import check_compression, compress
from latvit.deploy.quantize import calibration_batches, quantize, validation_batches
from latvit.deploy.sparsity import make_permanent, parse_sparsity, prune_2_4, prune_magnitude, sparsify, sparsity_report
from latvit.deploy.token_merging import MergingTransformer
from latvit.errors import LatvitError
from latvit.latency.int8 import compare_int8
from latvit.layers.integer import IntegerAttention, IntLayerNorm, ShiftGELU, Shiftmax, integer_sqrt, quantize_symmetric
from latvit.space import build_model
from latvit.space.spec import BlockSpec, NetSpec, StageSpec


# -- integer-only operators: the error bounds documented in latvit/layers/integer.py -----------------------
def test_shiftmax_bound_and_integer_dtype():
    torch.manual_seed(0)
    x = torch.randn(64, 49) * 3
    q, s = quantize_symmetric(x, 16)
    p, sp = Shiftmax()(q, s)
    assert p.dtype == torch.int64
    assert (p * sp - x.softmax(-1)).abs().max() <= 0.02
    assert torch.allclose((p * sp).sum(-1), torch.ones(64), atol=0.05)


def test_shiftgelu_bound():
    x = torch.linspace(-6, 6, 2001)
    q, s = quantize_symmetric(x, 16)
    g, sg = ShiftGELU()(q, s)
    assert g.dtype == torch.int64 and (g * sg - nn.functional.gelu(x)).abs().max() <= 0.05


def test_integer_sqrt_is_exact():
    n = torch.cat([torch.arange(0, 1000), torch.randint(0, 2**40, (1000,))])
    assert [int(v) for v in integer_sqrt(n)] == [math.isqrt(int(v)) for v in n]


def test_int_layernorm_bound():
    torch.manual_seed(0)
    ln = nn.LayerNorm(96)
    nn.init.normal_(ln.weight, 1, 0.2)
    nn.init.normal_(ln.bias, 0, 0.2)
    x = torch.randn(8, 49, 96) * 2 + 0.5
    q, s = quantize_symmetric(x, 16)
    y, sy = IntLayerNorm.from_float(ln)(q, s)
    assert y.dtype == torch.int64 and (y * sy - ln(x)).abs().max() <= 0.005


def test_integer_attention_bound():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 49, 32) for _ in range(3))
    ref = ((q @ k.transpose(-2, -1)) * 32**-0.5).softmax(-1) @ v
    assert (IntegerAttention(32)(q, k, v) - ref).abs().max() <= 0.1


# -- sparsity ------------------------------------------------------------------------------------------------
def test_magnitude_pruning_reaches_sparsity_and_survives_finetuning():
    model = latvit.create_model("efficientformerv2_s0", img_size=64, num_classes=4)
    pruned = prune_magnitude(model, 0.6)
    assert sparsity_report(pruned)["prunable_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert sparsity_report(model)["prunable_sparsity"] < 0.01  # the original is untouched
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    loss = pruned(torch.randn(2, 3, 64, 64)).logsumexp(-1).mean()
    loss.backward()
    opt.step()  # the mask hook keeps pruned weights at zero after an update
    for transform, what in ((deploy, "deploy"), (lambda m: tome(m, 1), "token merging")):  # masks still on
        with pytest.raises(LatvitError, match=f"{what} needs plain weights.*make_permanent"):
            transform(pruned)
    dense = make_permanent(pruned)
    assert sparsity_report(dense)["prunable_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert deploy(dense) is not dense
    assert not any(n.endswith("_orig") for n, _ in dense.named_parameters())


def test_two_four_pattern():
    layer = nn.Linear(16, 8)
    pruned = make_permanent(prune_2_4(nn.Sequential(layer)))
    groups = pruned[0].weight.reshape(8, 4, 4)
    assert ((groups != 0).sum(-1) == 2).all()
    kept = groups.abs().sort(-1).values[..., 2:]  # the two kept are the two largest of each group
    original = layer.weight.reshape(8, 4, 4).abs().sort(-1).values[..., 2:]
    assert torch.equal(kept, original)
    conv = nn.Conv2d(8, 4, 3)  # groups of 4 input channels at each kernel tap, never across taps
    weight = make_permanent(prune_2_4(nn.Sequential(conv)))[0].weight  # (4, 8, 3, 3)
    groups = weight.permute(0, 2, 3, 1).reshape(4, 3, 3, 2, 4)
    assert ((groups != 0).sum(-1) == 2).all()


def test_bad_sparsity():
    with pytest.raises(LatvitError, match=r"sparsity must be in \[0, 1\)"):
        prune_magnitude(nn.Linear(4, 4), 1.5)
    for bad in ("1.5", "1", "-0.2", "3:4", "half"):
        with pytest.raises(LatvitError, match=f"sparsity '{bad}': expected a pruned fraction in \\(0, 1\\)"):
            parse_sparsity(bad)


def test_sparsity_settings_as_the_command_line_writes_them():
    assert [parse_sparsity(t) for t in (None, "", "0", "none", "0.5", 0.25, "2:4")] == [None] * 4 + [0.5, 0.25, "2:4"]
    model = latvit.create_model("mobilevit_xxs", img_size=64, num_classes=4)
    for setting, expected in ((0.5, 0.5), ("2:4", 0.5)):
        pruned = sparsify(model, setting)  # zeros baked in: plain weights, no masks left
        assert not any(n.endswith("_orig") for n, _ in pruned.named_parameters())
        # 2:4 leaves layers whose fan-in is not a multiple of 4 dense (the 27-input stem conv): just under half
        assert sparsity_report(pruned)["prunable_sparsity"] == pytest.approx(expected, abs=0.01)
    assert sparsity_report(model)["prunable_sparsity"] < 0.01


def test_compress_applies_pruning_and_merging_or_nothing():
    torch.manual_seed(0)
    model = latvit.create_model("mobilevit_xxs", img_size=64, num_classes=4).eval()
    assert compress(model, "0", None) is model  # nothing asked: the model itself, untouched
    both = compress(model, "keep0.5", "0.5")
    assert any(isinstance(m, MergingTransformer) for m in both.modules())
    assert sparsity_report(both)["prunable_sparsity"] == pytest.approx(0.5, abs=1e-3)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(both(x), model(x), atol=1e-3)
    with pytest.raises(LatvitError, match="token merging setting 'keep2'"):
        check_compression("keep2", None)
    with pytest.raises(LatvitError, match="sparsity '0.5x'"):
        check_compression("0", "0.5x")


# -- int8 ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return deploy(latvit.create_model("efficientformerv2_s0", img_size=64, num_classes=10))


def test_calibration_batches_from_generated_data():
    batches = calibration_batches("synthetic", 64, (0.5,) * 3, (0.25,) * 3, count=8, batch=4)
    assert [b.shape for b in batches] == [(4, 3, 64, 64)] * 2 and batches[0].dtype == np.float32
    # full batches only: an artifact takes one static batch size
    batches = calibration_batches("synthetic", 32, (0.5,) * 3, (0.25,) * 3, count=7, batch=3)
    assert [b.shape[0] for b in batches] == [3, 3]
    with pytest.raises(LatvitError, match="at least one batch"):
        calibration_batches("synthetic", 32, (0.5,) * 3, (0.25,) * 3, count=2, batch=3)
    with pytest.raises(LatvitError, match="differ in shape"):
        quantize(
            torch.nn.Identity(),
            "ort",
            [np.zeros((2, 3, 8, 8), np.float32), np.zeros((1, 3, 8, 8), np.float32)],
            "x.onnx",
        )
    # the message names the dataset, not a flag: quantize takes it as --calib, validate as --data
    with pytest.raises(LatvitError, match="^dataset '/nonexistent/data': no such directory"):
        calibration_batches("/nonexistent/data", 64, (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("recipe", ["vit", "all"])
def test_ort_int8_runs_and_agrees(small_model, tmp_path, recipe):
    pytest.importorskip("onnxruntime")
    batches = calibration_batches("synthetic", 64, small_model.spec.mean, small_model.spec.std, count=8)
    path = quantize(small_model, "ort", batches, tmp_path / "m.onnx", recipe=recipe)
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    report = compare_int8(small_model, "ort", path, batches, threads=1, min_seconds=0.0)
    # int8 stays close to fp32 on logits of an untrained net (stated tolerance: 10% of the logit range)
    logit_range = float(np.ptp(small_model(torch.from_numpy(batches[0])).detach().numpy()))
    assert report["max_abs_diff"] <= 0.1 * logit_range
    assert report["int8_ms"] > 0 and report["fp32_ms"] > 0


def test_quantize_leaves_the_callers_model_alone_and_no_staging_files(tmp_path):
    pytest.importorskip("onnxruntime")
    model = latvit.create_model("efficientformerv2_s0", img_size=64, num_classes=10).train()
    batches = calibration_batches("synthetic", 64, model.spec.mean, model.spec.std, count=2)
    (tmp_path / "m.onnx").write_bytes(b"old")
    path = quantize(model, "ort", batches, tmp_path / "m.onnx")
    assert model.training  # quantize worked on an eval copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"] and path.read_bytes() != b"old"


def test_quantize_bad_arguments(small_model, tmp_path):
    batch = [np.zeros((1, 3, 64, 64), np.float32)]
    with pytest.raises(LatvitError, match="implemented for ort, openvino, executorch"):
        quantize(small_model, "eager", batch, tmp_path / "x")
    with pytest.raises(LatvitError, match="unknown quantization recipe"):
        quantize(small_model, "ort", batch, tmp_path / "x.onnx", recipe="fast")
    with pytest.raises(LatvitError, match="recipe 'transformer' is NNCF's .*use vit or all"):
        quantize(small_model, "ort", batch, tmp_path / "x.onnx", recipe="transformer")
    labelled = [(batch[0], np.zeros(1, np.int64))]
    with pytest.raises(LatvitError, match="--max-drop is NNCF's accuracy control .*not available on ort"):
        quantize(small_model, "ort", batch, tmp_path / "x.onnx", max_drop=0.5, validation=labelled)
    with pytest.raises(LatvitError, match="needs max_drop >= 0 .* labelled validation batches"):
        quantize(small_model, "openvino", batch, tmp_path / "x.xml", max_drop=0.5)
    with pytest.raises(LatvitError, match="needs max_drop >= 0"):
        quantize(small_model, "openvino", batch, tmp_path / "x.xml", max_drop=-1, validation=labelled)
    assert not list(tmp_path.iterdir())


def test_validation_batches_are_labelled_and_apart_from_calibration():
    import torch.nn.functional as F

    mean, std = (0.5,) * 3, (0.25,) * 3
    batches = validation_batches("synthetic", 32, mean, std, count=8, batch=2, crop_pct=0.875)
    assert [(x.shape, y.shape) for x, y in batches] == [((2, 3, 32, 32), (2,))] * 4
    assert all(y.dtype.kind == "i" for _, y in batches)
    calibration = np.concatenate(calibration_batches("synthetic", 32, mean, std, count=8))
    validation = np.concatenate([x for x, _ in batches])
    distance = F.pairwise_distance(
        torch.from_numpy(validation).flatten(1)[:, None], torch.from_numpy(calibration).flatten(1)[None]
    )
    assert distance.min() > 1e-3  # not one calibration image among them
    with pytest.raises(LatvitError, match="at least one batch"):
        validation_batches("synthetic", 32, mean, std, count=1, batch=2, crop_pct=0.875)


def test_calibration_and_validation_images_take_the_given_crop():
    """int8 calibrates on images cropped as the model sees them when deployed (a Fashion-MNIST run's 1.0,
    not timm's 0.875): the crop reaches the transform, and a bad one is one clear error."""
    from latvit.data import eval_transform, open_dataset

    mean, std = (0.5,) * 3, (0.25,) * 3
    full = calibration_batches("synthetic", 32, mean, std, count=2, crop_pct=1.0)[0]
    cropped = calibration_batches("synthetic", 32, mean, std, count=2)[0]
    train = open_dataset("synthetic", "train")
    first = train[0][0]
    assert np.allclose(full[0], eval_transform(32, mean, std, crop_pct=1.0)(first).numpy())
    assert np.allclose(cropped[0], eval_transform(32, mean, std, crop_pct=0.875)(first).numpy())
    assert not np.allclose(full, cropped)
    labelled = validation_batches("synthetic", 32, mean, std, count=2, crop_pct=1.0)
    second = train[len(train) // 4][0]  # 2 images: stride len/2, validation starts half a stride on
    assert np.allclose(labelled[0][0][0], eval_transform(32, mean, std, crop_pct=1.0)(second).numpy())
    with pytest.raises(LatvitError, match="crop_pct 0 must be in"):
        calibration_batches("synthetic", 32, mean, std, count=2, crop_pct=0)


def test_cli_quantize_crops(tmp_path, monkeypatch):
    """`latvit quantize`: calibration images at --calib-crop (0.875 by default, for runs too); accuracy
    control's validation images at the crop of RUN/config.yaml, as `latvit validate` evaluates the run."""
    from latvit.cli import main as cli
    from latvit.train.evaluate import run_config

    latvit.save(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), tmp_path / "run" / "best")
    (tmp_path / "run" / "config.yaml").write_text("crop_pct: 1.0\nimg_size: 64\n")
    assert run_config(tmp_path / "run" / "best") == {"crop_pct": 1.0, "img_size": 64}
    assert run_config("mobilevit_xxs") == {} and run_config(tmp_path / "run") == {}
    seen = []

    def record(purpose):
        def fake(*args, crop_pct, **kwargs):
            seen.append((purpose, crop_pct))
            if purpose == "validation":
                raise LatvitError("recorded")  # stop before NNCF runs
            return [np.zeros((1, 3, 64, 64), np.float32)]

        return fake

    # where the CLI looks them up (it imports both from latvit.deploy.quantize at the top of cli.py)
    monkeypatch.setattr("latvit.cli.calibration_batches", record("calibration"))
    monkeypatch.setattr("latvit.cli.validation_batches", record("validation"))
    common = [
        "quantize",
        "--calib",
        "synthetic",
        "-o",
        str(tmp_path / "m.xml"),
        "--no-compare",
        "--runtime",
        "openvino",
        "--max-drop",
        "0.5",
    ]
    assert cli([*common, str(tmp_path / "run" / "best")]) == 2
    assert cli([*common, str(tmp_path / "run" / "best"), "--calib-crop", "0.9"]) == 2
    latvit.save(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), tmp_path / "saved")  # not a run
    assert cli([*common, str(tmp_path / "saved")]) == 2
    assert seen == [
        ("calibration", 0.875),
        ("validation", 1.0),
        ("calibration", 0.9),
        ("validation", 1.0),
        ("calibration", 0.875),
        ("validation", 0.875),
    ]
    assert not (tmp_path / "m.xml").exists()


def test_openvino_accuracy_control_keeps_top1_within_max_drop(tmp_path):
    """NNCF's accuracy control end to end: the artifact it writes runs, and its top-1 on the validation
    batches is within max_drop of fp32's. (An untrained model predicts one class whatever the input, so
    plain int8 keeps its top-1 too; that accuracy control recovers a real loss is measured on a trained
    EfficientFormer-L1 in docs/compression.md.)"""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from latvit.runtimes import get_runtime

    torch.manual_seed(0)
    model = deploy(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10)).eval()
    calibration = calibration_batches("synthetic", 64, model.spec.mean, model.spec.std, count=4)
    validation = validation_batches("synthetic", 64, model.spec.mean, model.spec.std, count=16, crop_pct=0.875)
    with pytest.raises(LatvitError, match="the calibration batches' shape"):
        quantize(
            model,
            "openvino",
            calibration,
            tmp_path / "m.xml",
            max_drop=0.0,
            validation=[
                (np.concatenate([x for x, _ in validation[:2]]), np.concatenate([y for _, y in validation[:2]]))
            ],
        )
    path = quantize(model, "openvino", calibration, tmp_path / "m.xml", max_drop=0.0, validation=validation)
    run = get_runtime("openvino").load(path, torch.from_numpy(validation[0][0]), 1)

    def top1(predict) -> float:
        return float(np.mean(np.concatenate([predict(x).argmax(-1) == y for x, y in validation])))

    with torch.no_grad():
        assert top1(run) >= top1(lambda x: model(torch.from_numpy(x)).numpy())


def test_openvino_transformer_recipe_keeps_norms_and_adds_float(tmp_path):
    """`transformer` (NNCF's transformer model type) quantizes fewer tensors than `vit`: LayerNorm inputs and
    residual adds stay float; both artifacts run on OpenVINO close to fp32. One MobileViT block (LayerNorms,
    attention, residual adds) shows it at a fifth of a seed model's NNCF time."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    from latvit.runtimes import get_runtime

    torch.manual_seed(0)
    small_model = build_model(ONE_BLOCK_MOBILEVIT, num_classes=10)
    for m in small_model.modules():  # PyTorch's default init: the timm-style 0.02 std leaves logits ~0.005 apart
        if isinstance(m, nn.Linear):
            m.reset_parameters()
    small_model = deploy(small_model)
    batches = calibration_batches("synthetic", 64, small_model.spec.mean, small_model.spec.std, count=4)
    x = torch.from_numpy(batches[0])
    with torch.no_grad():
        fp32 = small_model(x).numpy()
    fake_quantizes = {}
    for recipe in ("vit", "transformer"):
        path = quantize(small_model, "openvino", batches, tmp_path / recipe / "m.xml", recipe=recipe)
        fake_quantizes[recipe] = sum(
            op.get_type_name() == "FakeQuantize" for op in ov.Core().read_model(str(path)).get_ordered_ops()
        )
        int8 = np.asarray(get_runtime("openvino").load(path, x, 1)(batches[0]))
        assert np.abs(int8 - fp32).max() <= 0.1 * np.ptp(fp32)
    assert 0 < fake_quantizes["transformer"] < fake_quantizes["vit"]


# -- token merging -----------------------------------------------------------------------------------------
from latvit.deploy.token_merging import (  # noqa: E402
    TomeReport,
    follow_merge,
    match_tokens,
    merge_tokens,
    merge_weighted,
    parse_schedule,
    parse_tome,
    tome,
)


def test_match_tokens_merges_the_r_most_similar_and_tracks_where_tokens_go():
    torch.manual_seed(0)
    metric = torch.randn(2, 9, 8)
    m = match_tokens(metric, 3, protect_first=True)
    # merging the identity gives the membership matrix: which original tokens each new token holds
    members = merge_tokens(m, torch.eye(9).expand(2, 9, 9))  # (2, 6, 9)
    assert members.shape == (2, 6, 9)
    assert torch.equal(members.sum(1), torch.ones(2, 9))  # every token goes to exactly one place
    # the protected token: first, alone
    assert torch.equal(members[:, 0, 0], torch.ones(2)) and torch.equal(members[:, 0].sum(-1), torch.ones(2))
    unit = metric / metric.norm(dim=-1, keepdim=True)
    for b in range(2):
        for group in members[b]:
            held = group.nonzero().flatten()
            if len(held) > 1:  # a merged pair: an even (set a) token and its most similar odd (set b) token
                a, dst = [int(i) for i in held if i % 2 == 0], [int(i) for i in held if i % 2 == 1]
                assert len(dst) == 1
                for i in a:
                    assert dst[0] == int((unit[b, 1::2] @ unit[b, i]).argmax()) * 2 + 1
    position = follow_merge(m, torch.arange(9).expand(2, 9))  # each original token's new index
    assert torch.equal(members.gather(1, position.unsqueeze(1)).squeeze(1), torch.ones(2, 9))
    x, size = torch.randn(2, 9, 4), torch.ones(2, 9)
    merged, new_size = merge_weighted(m, x, size)
    assert torch.equal(new_size, members.sum(-1)) and new_size.sum() == 2 * 9  # sizes sum to N
    assert torch.allclose((merged * new_size.unsqueeze(-1)).sum(1), x.sum(1), atol=1e-5)  # mass is conserved
    assert torch.allclose(merged, (members @ x) / new_size.unsqueeze(-1), atol=1e-6)  # means over each group


@pytest.mark.parametrize("name", ["efficientformerv2_s0", "trtvit_a", "mobilevit_xxs"])
def test_deploy_and_tome_commute(name, randomize):
    """Either order gives the same model (EfficientFormerV2's fold reached through the merging wrapper)."""
    model = randomize(latvit.create_model(name, img_size=64 if "mobilevit" in name else 224)).eval()
    x = torch.randn(1, 3, model.img_size, model.img_size)
    with torch.no_grad():
        assert (deploy(tome(model, 8))(x) - tome(deploy(model), 8)(x)).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["mobilevit_xxs", "efficientformer_l1", "timm:deit_tiny_patch16_224"])
def test_tome_r0_is_the_original_and_r_changes_little(name):
    import timm

    torch.manual_seed(0)
    model = (
        timm.create_model(name[5:])
        if name.startswith("timm:")
        else latvit.create_model(name, img_size=64 if "mobilevit" in name else 224)
    ).eval()
    size = 64 if "mobilevit" in name else 224
    x = torch.randn(1, 3, size, size)
    report = TomeReport()
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(tome(model, 0, report)(x), ref, atol=1e-5)
        assert torch.allclose(tome(model, 0, keep=1.0)(x), ref, atol=1e-5)
        merged = tome(model, 4)(x)
        entrance = tome(model, 0, keep=0.5)(x)
    assert report.merged_layers > 0 and not report.skipped
    assert merged.shape == ref.shape and not torch.allclose(merged, ref, atol=1e-7)
    assert entrance.shape == ref.shape and not torch.allclose(entrance, ref, atol=1e-7)


def test_entrance_merge_is_exact_on_twin_tokens_and_leaves_the_fraction_kept():
    """Tokens that come in identical (a, b) pairs: merging each into its twin at the entrance, with
    size-weighted means and proportional attention, computes what the full run computes, so the unmerged
    output (and a protected class token's) is the original's. The layers see round(N * keep) tokens."""
    block = latvit.create_model("mobilevit_xxs", img_size=64).eval().stages[2].blocks[1]  # a MobileViTBlock
    layers = list(block.transformer)
    C = layers[0].norm1.normalized_shape[0]
    twins = torch.randn(2, 32, C).repeat_interleave(2, dim=1)  # (B, 64, C): tokens 2i and 2i + 1 equal
    with_cls = torch.cat([torch.randn(2, 1, C), twins], dim=1)  # (B, 65, C): twins at 2i + 1, 2i + 2
    seen = []
    layers[0].norm1.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].shape[1]))

    def run(x, **kw):
        with torch.no_grad():
            return MergingTransformer(layers, [0, 0], **kw)(x)

    full, half = run(twins, unmerge=True), run(twins, unmerge=True, keep=0.5)
    assert torch.allclose(half, full, atol=1e-5) and seen == [64, 32]
    quarter = run(torch.randn(2, 64, C), unmerge=True, keep=0.25)  # two rounds: 64 -> 32 -> 16
    assert quarter.shape == (2, 64, C) and seen[-1] == 16
    cls_full = run(with_cls, unmerge=False, protect_first=True)
    cls_half = run(with_cls, unmerge=False, protect_first=True, keep=33 / 65)
    assert seen[-2:] == [65, 33] and cls_half.shape == (2, 33, C)
    assert torch.allclose(cls_half[:, 0], cls_full[:, 0], atol=1e-5)  # never merged, stays in front


def test_tome_settings_parse_and_bad_keep_is_refused():
    assert parse_tome("13") == {"r": 13, "keep": 1.0} and parse_tome("26x6") == {"r": [26] * 6, "keep": 1.0}
    assert parse_tome("keep0.25") == {"r": 0, "keep": 0.25} and parse_tome("8+keep0.5") == {"r": 8, "keep": 0.5}
    for bad in ("keep0", "keep1.5", "8keep0.5", "8+", "+keep0.5", "26x"):
        with pytest.raises(LatvitError, match="expected R, RxL, keepF or R\\+keepF"):
            parse_tome(bad)
    model = latvit.create_model("efficientformerv2_s0", img_size=224)
    with pytest.raises(LatvitError, match="no token-sequence transformer to merge at the entrance"):
        tome(model, 4, keep=0.5)
    with pytest.raises(LatvitError, match="0 < keep <= 1"):
        tome(model, 4, keep=0.0)


def test_tome_reports_where_it_cannot_merge_and_rejects_bad_r():
    model = latvit.create_model("mixformer_b0", img_size=224)
    report = TomeReport()
    tome(model, 0, report)
    assert report.merged_layers == 0 and report.skipped  # window attention: said, not hidden
    for name in ("mixformer_b0", "mobileformer_26m"):  # asked to merge and nothing to merge: an error, not a copy
        with pytest.raises(LatvitError, match=f"token merging does not apply to {name}"):
            tome(latvit.create_model(name, img_size=224), 4)
    import timm

    with pytest.raises(LatvitError, match="this model has 2 prefix tokens"):  # DeiT's distillation token
        tome(timm.create_model("deit_tiny_distilled_patch16_224"), 8)
    with pytest.raises(LatvitError, match="r must be >= 0"):
        tome(model, -1)
    with pytest.raises(LatvitError, match="expected R .* or RxL"):
        parse_schedule("26x")
    assert parse_schedule("13") == 13 and parse_schedule("26x6") == [26] * 6


def test_tome_on_trtvit_shares_the_mlp_of_merged_tokens(tmp_path):
    """TRT-ViT's one-layer spatial-reduction transformers: merged for the MLP only, each token keeps its own
    value, so exact duplicates merge with no change; r = 0 is the original; it exports to ONNX Runtime."""
    from latvit.deploy.token_merging import MergingMapTransformer
    from latvit.layers.trtvit import SRTransformer

    torch.manual_seed(0)
    model = latvit.deploy(latvit.create_model("trtvit_a", img_size=64)).eval()
    x = torch.randn(2, 3, 64, 64)
    report = TomeReport()
    with torch.no_grad():
        assert torch.equal(tome(model, 0, report)(x), model(x))
        assert report.merged_layers == 4 and not report.skipped  # three MixBlock branches and one block
        assert not torch.allclose(tome(model, 8)(x), model(x), atol=1e-6)
        for sr in (2, 1):
            layer = SRTransformer(32, 32, sr=sr).eval()
            twins = torch.randn(2, 32, 4, 2).repeat_interleave(2, dim=-1)  # neighbours (one even, one odd) equal
            assert torch.allclose(MergingMapTransformer(layer, 8)(twins), layer(twins), atol=1e-6)
        single = torch.randn(2, 32, 1, 1)  # nothing to merge (sr = 1: the last layer above)
        assert torch.allclose(MergingMapTransformer(layer, 4)(single), layer(single), atol=1e-6)
    pytest.importorskip("onnxruntime")
    from latvit.runtimes import get_runtime

    merged = tome(model, 8)
    run = get_runtime("ort").prepare(merged, x[:1], 1, tmp_path)
    with torch.no_grad():
        assert np.abs(run(x[:1].numpy()) - merged(x[:1]).numpy()).max() < 1e-4


# stem to 32 x 32, then one MobileViT block over 2 x 2 patches: 4 sequences of 256 tokens
ONE_BLOCK_MOBILEVIT = NetSpec(
    name="one_block_mobilevit",
    stem=(BlockSpec("conv_bn_act", 16, stride=2, act="silu", bias=False),),
    stages=(
        StageSpec(
            (BlockSpec("mobilevit", 16, dim=32, depth=2, heads=4, expansion=2.0, patch=2, act="silu", bias=False),)
        ),
    ),
    img_size=64,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    family="mobilevit",
)


@pytest.mark.parametrize(
    "runtime, package, name, size, setting",
    [
        ("ort", "onnxruntime", "mobilevit_xxs", 64, "8"),
        ("openvino", "openvino", "mobilevit_xxs", 64, "8"),
        # the entrance merge (two bipartite rounds, keep 0.25) in every MobileViT block, then 2 per layer
        ("ort", "onnxruntime", "mobilevit_xxs", 64, "2+keep0.25"),
        ("openvino", "openvino", "mobilevit_xxs", 64, "2+keep0.25"),
        # 49 tokens in L1's last stage: OpenVINO's PyTorch frontend got the merge's strided slice wrong there,
        # so the runtime converts through ONNX when the direct conversion fails its shape check
        ("openvino", "openvino", "efficientformer_l1", 224, "8"),
        # ExecuTorch: the merge must avoid sort (no portable kernel) and scatter, and with 256 tokens per patch
        # position (MobileViT at 256 px) torch.eye, whose decomposition makes a uint16 arange the edge dialect
        # rejects; a one-block MobileViT at 64 px has those 256 tokens and lowers in a quarter of the time
        ("executorch", "executorch", "one_block_mobilevit", 64, "8"),
    ],
)
def test_tome_exports_and_runs_on_runtime(runtime, package, name, size, setting, tmp_path):
    """A merged model (`setting` as `--tome` takes it) exports, runs on the runtime and matches PyTorch."""
    pytest.importorskip(package)
    from latvit.runtimes import get_runtime

    if name == "one_block_mobilevit":
        model = tome(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), **parse_tome(setting))
        assert any(isinstance(m, MergingTransformer) for m in model.modules())
    else:
        model = tome(latvit.create_model(name, img_size=size).eval(), **parse_tome(setting))
    x = torch.randn(1, 3, size, size)
    run = get_runtime(runtime).prepare(model, x, 1, tmp_path)
    with torch.no_grad():
        assert np.abs(run(x.numpy()) - model(x).numpy()).max() < 1e-4


def test_cli_quantize_max_drop(tmp_path, capsys):
    """`latvit quantize --max-drop`: accuracy control on OpenVINO with labelled images of --calib's training
    split; on another runtime one line naming the problem, and no file."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from latvit.cli import main as cli

    torch.manual_seed(0)
    latvit.save(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), tmp_path / "saved")
    common = [str(tmp_path / "saved"), "--calib", "synthetic", "--calib-images", "4", "--no-compare"]
    assert cli(["quantize", *common, "--runtime", "ort", "--max-drop", "0.5", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--max-drop is NNCF's accuracy control" in err
    assert not (tmp_path / "m.onnx").exists()
    assert (
        cli(
            [
                "quantize",
                *common,
                "--runtime",
                "openvino",
                "--max-drop",
                "0.5",
                "--val-images",
                "8",
                "-o",
                str(tmp_path / "m.xml"),
            ]
        )
        == 0
    )
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.bin").is_file()


def test_quantize_compresses_the_model_first(tmp_path, monkeypatch):
    """`latvit quantize --tome keep0.5 --sparsity 0.5` (what a tune recipe writes for a merged int8 winner):
    the model handed to the quantizer is the deployed model with merging and the zeros, as in tune."""
    from latvit.cli import main as cli

    latvit.save(build_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval(), tmp_path / "saved")
    seen = []

    def record(model, *args, **kwargs):
        seen.append(model)
        raise LatvitError("recorded")  # stop before the runtime's quantizer

    monkeypatch.setattr("latvit.cli.quantize", record)
    common = ["quantize", str(tmp_path / "saved"), "--calib", "synthetic", "--calib-images", "2", "--no-compare"]
    assert (
        cli([*common, "--runtime", "ort", "-o", str(tmp_path / "m.onnx"), "--tome", "keep0.5", "--sparsity", "0.5"])
        == 2
    )
    (model,) = seen
    assert any(isinstance(m, MergingTransformer) for m in model.modules())
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.02)
    assert cli([*common, "--runtime", "ort", "-o", str(tmp_path / "m.onnx"), "--tome", "keep2"]) == 2  # a bad setting
    assert len(seen) == 1  # refused before the model was built
