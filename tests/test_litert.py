"""LiteRT (TFLite): export through litert-torch, run on the ai-edge-litert interpreter, int8, and its errors.

Conversion costs seconds per model even when it is small (torch.export, StableHLO, the LiteRT converter),
so every family is exported once, as a cut-down copy (first and last block of each stage, one layer per
transformer) at 64 px; the slowest converters are marked slow.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

import latvit
from latvit.cli import main
from latvit.errors import LatvitError
from latvit.pipeline.export import export_model
from latvit.runtimes import get_runtime

RT = get_runtime("litert")
pytestmark = pytest.mark.skipif(RT.missing() is not None, reason=str(RT.missing()))
SIZE = 64
RTOL = 1e-4


def small_spec(name: str) -> latvit.NetSpec:
    """The zoo model `name` cut to the first and last block of each stage, one transformer layer per
    MobileViT block: every block kind of the family, a fraction of the conversion time."""
    spec = latvit.get_spec(name)
    stages = tuple(dataclasses.replace(s, blocks=(s.blocks[0],) + s.blocks[1:][-1:]) for s in spec.stages)
    spec = dataclasses.replace(spec, stages=stages, name=f"small_{name}")
    return spec.map_blocks(lambda b: dataclasses.replace(b, depth=1) if b.kind == "mobilevit" else b)


# Mobile-Former's blocks open and close its global tokens in order: cutting stages breaks that, and the
# whole model is small (26 MFLOPs), so it is exported as it is
WHOLE = ("mobileformer_26m",)


def small_model(name: str, randomize) -> torch.nn.Module:
    spec = latvit.get_spec(name) if name in WHOLE else small_spec(name)
    model = latvit.create_model(spec, img_size=SIZE, num_classes=10).eval()
    if model.spec.family != "mobilevit":  # random BN/LN statistics make MobileViT's logits input-independent
        randomize(model)
    return model


FAMILIES = [
    "efficientformer_l1",
    "efficientformerv2_s0",
    "mobilevit_xxs",
    pytest.param("trtvit_a", marks=pytest.mark.slow),
    pytest.param("mobileformer_26m", marks=pytest.mark.slow),  # the whole model: ~35 s to convert here
    pytest.param("mixformer_b0", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_exports_and_matches_pytorch(name, randomize, tmp_path):
    """`export_model(..., "litert")`: a .tflite whose logits match PyTorch on a fresh input (the export
    check uses its own), and that depend on the input (a runner that ignored it would pass the first)."""
    model = small_model(name, randomize)
    info = export_model(model, "litert", tmp_path / "m.tflite")
    assert info["checked"] and info["max_rel_diff"] < RTOL, info
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    run = RT.load(tmp_path / "m.tflite", x, threads=2)
    with torch.inference_mode():
        ref = latvit.deploy(model)(x).numpy()
    out = run(x.numpy())
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=RTOL * float(np.abs(ref).max()))
    assert np.abs(out - run(np.zeros_like(x.numpy()))).max() > RTOL * np.abs(ref).max()  # above rounding


def test_token_merged_model_exports(tmp_path):
    """ToMe's gathers and one-hot merges convert: the .tflite matches the merged model in PyTorch (one
    merging MobileViT block: the gathers and merges are the same in every block)."""
    from test_compression import ONE_BLOCK_MOBILEVIT

    torch.manual_seed(0)
    model = latvit.create_model(ONE_BLOCK_MOBILEVIT, num_classes=10).eval()
    info = export_model(model, "litert", tmp_path / "m.tflite", tome="keep0.5")
    assert info["checked"] and info["max_rel_diff"] < RTOL and info["tome"] == "keep0.5"


def test_cli_export(tmp_path, capsys):
    spec = tmp_path / "small.json"
    small_spec("efficientformerv2_s0").to_json(spec)
    out = tmp_path / "m.tflite"
    assert main(["export", str(spec), "--format", "litert", "--img-size", "32", "-o", str(out)]) in (0, None)
    assert out.is_file() and "m.tflite" in capsys.readouterr().out


class Median(torch.nn.Module):
    """An operator LiteRT has no lowering for (aten.median.dim), after a convolution."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x).flatten(2).median(dim=-1).values


def test_unsupported_operator_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "m.tflite"
    with pytest.raises(LatvitError) as raised:
        export_model(Median(), "litert", out, img_size=16)
    message = str(raised.value)
    assert "\n" not in message and "aten.median.dim" in message and "no LiteRT lowering" in message
    assert "test_litert.py" in message  # the source line of the layer
    assert list(tmp_path.iterdir()) == []


def test_cli_converter_failure_exits_2(tmp_path, capsys, monkeypatch):
    """A converter exception (multi-line, as litert-torch raises them) reaches the CLI as one
    `latvit: error:` line, exit status 2, and no file."""
    import litert_torch

    def failing_convert(*args, **kwargs):
        raise RuntimeError(
            "Lowering not found: aten.median.dim\n\nWhile executing %median : [num_users=1] = "
            "call_function[target=torch.ops.aten.median.dim](args = (%view, 1), kwargs = {})"
        )

    monkeypatch.setattr(litert_torch, "convert", failing_convert)
    monkeypatch.chdir(tmp_path)
    small_spec("efficientformerv2_s0").to_json(tmp_path / "small.json")
    assert main(["export", "small.json", "--format", "litert", "--img-size", "32", "-o", "m.tflite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "latvit: error: litert cannot convert the model: operator aten.median.dim has no LiteRT lowering; "
        "replace that layer or export another format"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.json"]


def test_missing_extra_names_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # makes `import litert_torch` fail
    hint = "litert_torch is not installed: pip install 'latvit[litert]'"
    assert RT.missing() == hint and RT.cannot_run() == hint
    with pytest.raises(LatvitError, match=r"latvit\[litert\]"):
        export_model(Median(), "litert", tmp_path / "m.tflite", img_size=16)
    assert list(tmp_path.iterdir()) == []


def test_wrong_suffix_names_the_right_one(tmp_path):
    with pytest.raises(LatvitError, match=r"m\.tflite"):
        export_model(Median(), "litert", tmp_path / "m.onnx", img_size=16)


def test_threads_setting_reaches_the_interpreter(tmp_path, monkeypatch):
    """`load(..., threads)` creates the interpreter with exactly that many threads."""
    from ai_edge_litert import interpreter as litert_interpreter

    export_model(torch.nn.Conv2d(3, 4, 3), "litert", tmp_path / "m.tflite", img_size=16, check=False)
    seen = []
    original = litert_interpreter.Interpreter

    class Spy(original):
        def __init__(self, *args, **kwargs):
            seen.append(kwargs.get("num_threads"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(litert_interpreter, "Interpreter", Spy)
    RT.load(tmp_path / "m.tflite", torch.zeros(1, 3, 16, 16), threads=3)
    assert seen == [3]


def test_int8_tiny_model(tmp_path):
    """`quantize(..., "litert")`: an int8 .tflite (float in and out) close to fp32 on its calibration images."""
    from latvit.deploy.quantize import calibration_batches, quantize

    torch.manual_seed(0)
    model = latvit.deploy(latvit.create_model(small_spec("efficientformerv2_s0"), img_size=32, num_classes=10))
    batches = calibration_batches("synthetic", 32, (0.5,) * 3, (0.25,) * 3, count=8)
    path = quantize(model, "litert", batches, tmp_path / "m_int8.tflite")
    assert path == tmp_path / "m_int8.tflite" and [p.name for p in tmp_path.iterdir()] == ["m_int8.tflite"]
    run = RT.load(path, torch.from_numpy(batches[0]), threads=1)
    with torch.no_grad():
        ref = np.concatenate([model(torch.from_numpy(b)).numpy() for b in batches])
    out = np.concatenate([run(b) for b in batches])
    assert np.abs(out - ref).max() <= 0.1 * np.ptp(ref)
    assert not np.array_equal(out, ref)  # it really is the int8 model
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size < 0.5 * fp32_bytes  # int8 weights


def test_accuracy_control_returns_blocks_to_float(tmp_path):
    """`float_fallback`: when int8 loses top-1, blocks go back to float until it is within max_drop. Labels
    are the fp32 model's own predictions on near-tie logits (a fresh 10-class model), so fp32 scores 100 and
    plain int8 flips some: the precondition is checked, the test cannot pass vacuously."""
    from latvit.deploy.quantize import calibration_batches
    from latvit.runtimes.litert import calibrate_ranges, float_fallback, int8_flatbuffer, logits, op_groups, short_scope

    torch.manual_seed(0)
    model = latvit.deploy(latvit.create_model(small_spec("efficientformerv2_s0"), img_size=32, num_classes=10))
    batches = calibration_batches("synthetic", 32, (0.5,) * 3, (0.25,) * 3, count=48)
    fp32 = RT.export(model, torch.from_numpy(batches[0]), tmp_path / "fp32.tflite")
    labels = logits(fp32.read_bytes(), batches, 1).argmax(-1)
    validation = [(x, labels[i : i + 1]) for i, x in enumerate(batches)]
    qsv = calibrate_ranges(fp32, batches[:16], 1)
    plain = logits(int8_flatbuffer(fp32, "vit", qsv), batches, 1).argmax(-1)
    assert (plain != labels).any(), "int8 must lose top-1 here for the test to mean anything"
    lines = []
    model_bytes, kept, drop = float_fallback(fp32, "vit", qsv, validation, max_drop=0.0, threads=1, log=lines.append)
    assert drop <= 0.0 and kept and set(kept) <= set(op_groups(fp32))
    assert (logits(model_bytes, batches, 1).argmax(-1) == labels).all()
    plain_drop = 100.0 * float((plain != labels).mean())  # fp32 scores 100 on these labels
    names = ", ".join(short_scope(label) for label in kept)
    assert lines == [  # the user is told what plain int8 lost and what went back to float
        f"accuracy control: plain int8 top-1 {-plain_drop:+.2f} points on 48 validation images (allowed -0)",
        f"accuracy control: {len(kept)} of {len(op_groups(fp32))} blocks back to float ({names}): +0.00 points",
    ]
    assert "LatvitNet/" in names and "latvit.space" not in names  # block names, not module paths


def test_profile_maps_litert_events_to_blocks():
    """`latvit profile --runtime litert`: LiteRT's profiler events add up to its Invoke, XNNPACK's operators
    land in the modules that compute them (every GEMM / convolution in a module with a conv or linear layer,
    the decomposed LayerNorm in the norm category of a mobilevit block)."""
    from latvit.analysis.profile import profile_model
    from latvit.space import plan_network

    prof = profile_model("mobilevit_xxs", "litert", img_size=SIZE, threads=1, warmup=1, iters=3, min_seconds=0.0)
    assert prof.runtime == "litert" and prof.e2e.iters >= 3
    invoke = prof.runtime_events["Invoke"]
    inside = sum(op.ms for op in prof.ops if op.op_type != "LiteRT run")  # the operators and Invoke's own time
    assert 0 < invoke <= 1.05 * prof.e2e.mean_ms and abs(inside - invoke) <= 0.01 * invoke
    wheres = {b.where for b in plan_network(latvit.get_spec("mobilevit_xxs"), SIZE).blocks}
    located = sum(op.ms for op in prof.ops if op.block in wheres or op.block == "head")
    assert located >= 0.95 * prof.op_ms
    modules = dict(latvit.create_model("mobilevit_xxs", img_size=SIZE).named_modules())
    products = [op for op in prof.ops if op.op_type.startswith(("Convolution", "Fully Connected"))]
    assert products and all(
        any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in modules[op.module].modules()) for op in products
    )
    norms = [op for op in prof.ops if op.op_type.startswith("Squared Difference")]
    assert norms and all(op.category == "norm" and op.kind == "mobilevit" for op in norms)
