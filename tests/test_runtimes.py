"""Runtimes and `latvit export`: numerics against eager PyTorch, clear errors, atomic artifacts.

Every runtime that can run here round-trips the seed models. The cheap runtimes (ONNX Runtime, OpenVINO)
take the full seed models at 64 px; the ones whose export or compile costs tens of seconds per model
(ExecuTorch, Inductor, CoreML) take a *small copy* of each seed (first and last block of every stage,
one transformer layer per MobileViT block), which still has every block kind of the family.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import latvit
from latvit.cli import main
from latvit.errors import LatvitError
from latvit.pipeline.export import export_model
from latvit.runtimes import get_runtime

SEEDS = ["mobilevit_xxs", "efficientformerv2_s0", "efficientformer_l1"]
SIZE = 64  # the smallest size all three seeds take (EfficientFormer's last stage is 2x2 here)
RTOL = 1e-4


def small_spec(name: str) -> latvit.NetSpec:
    """The seed `name` cut to the first and last block of each stage and one transformer layer per
    MobileViT block: the same block kinds in the same places, a fraction of the export time."""
    spec = latvit.get_spec(name)
    stages = tuple(dataclasses.replace(s, blocks=(s.blocks[0],) + s.blocks[1:][-1:]) for s in spec.stages)
    spec = dataclasses.replace(spec, stages=stages, name=f"small_{name}")
    return spec.map_blocks(lambda b: dataclasses.replace(b, depth=1) if b.kind == "mobilevit" else b)


def build(ref, randomize, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor, np.ndarray]:
    """A model, a batch of two different images and its logits.

    EfficientFormer models are randomised (a fresh one has BN as identity and LayerScale at 1e-5, which
    would hide wrong numerics); MobileViT keeps its initialisation, because randomised BN/LN statistics
    make its 64 px logits independent of the input, which would let a runner that ignores its input pass.
    """
    model = latvit.create_model(ref, img_size=SIZE, num_classes=10).eval()
    if model.spec.family != "mobilevit":
        randomize(model, seed)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        ref = model(x).numpy()
    assert np.abs(ref[0] - ref[1]).max() > 10 * RTOL * np.abs(ref).max(), "logits must depend on the input"
    return model, x, ref


def usable(name: str):
    rt = get_runtime(name)
    reason = rt.cannot_run()
    if reason:
        pytest.skip(reason)
    return rt


def assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    # rtol 1e-4 on the logits, atol 1e-4 of their scale for logits near 0
    np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=RTOL, atol=RTOL * float(np.abs(ref).max()))


# -- numerics ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", ["ort", "openvino"])
@pytest.mark.parametrize("name", SEEDS)
def test_seed_round_trip(runtime, name, randomize, tmp_path):
    rt = usable(runtime)
    model, x, ref = build(name, randomize)
    run = rt.prepare(model, x, threads=1, workdir=tmp_path)
    assert_close(run(x.numpy()), ref)


# ExecuTorch lowers each family's ops to XNNPACK its own way: all of them. Inductor compiles any graph the
# same way and costs 20-50 s a model here: the hybrid with attention, unfold and fold (MobileViT) stands for all.
@pytest.mark.slow
@pytest.mark.parametrize("runtime, name", [("executorch", n) for n in SEEDS] + [("inductor", "mobilevit_xxs")])
def test_small_seed_round_trip(runtime, name, randomize, tmp_path):
    rt = usable(runtime)
    model, x, ref = build(small_spec(name), randomize)
    run = rt.prepare(model, x, threads=1, workdir=tmp_path)
    assert_close(run(x.numpy()), ref)
    assert_close(run(x.numpy()), ref)  # a prepared runner is reusable


def test_executorch_threads():
    rt = get_runtime("executorch")
    if rt.missing():
        pytest.skip(rt.missing())
    from executorch.extension.pybindings import portable_lib

    from latvit.runtimes.executorch import set_threads

    before = portable_lib._threadpool_get_thread_count()
    try:
        assert set_threads(1) == 1
    finally:
        set_threads(before)


def test_executorch_delegation_counts():
    rt = get_runtime("executorch")
    if rt.missing():
        pytest.skip(rt.missing())
    from latvit.runtimes.executorch import delegation

    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    assert delegation(tiny, torch.randn(1, 3, 16, 16)) == {"xnnpack_partitions": 1, "portable_ops": 0}


def test_executorch_softmax_after_conv(tmp_path):
    """XNNPACK computes softmax(-1) of a conv output over the wrong (channels-last) axis; latvit's lowering
    gives that softmax a 3-D view, so it is right and still delegated (EfficientFormerV2's talking heads)."""
    rt = usable("executorch")
    from latvit.runtimes.executorch import delegation

    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.Softmax(dim=-1)).eval()
    x = 4 * torch.randn(2, 4, 8, 8)  # peaky: a softmax over channels instead of W is far off
    assert_close(rt.prepare(model, x, threads=1, workdir=tmp_path)(x.numpy()), model(x).detach().numpy())
    assert delegation(model, x) == {"xnnpack_partitions": 1, "portable_ops": 0}


class _QK(torch.nn.Module):
    def forward(self, x):  # (B, heads, N, d) -> (B, heads, N, N)
        return (x @ x.transpose(-2, -1)).softmax(-1)


def test_executorch_no_noop_expand_between_partitions():
    """A 4-D matmul decomposes into expand + bmm; the no-op expands must not break the graph into several
    XNNPACK partitions with portable ops in between (they did: 17 partitions for EfficientFormerV2-S1)."""
    usable("executorch")
    from latvit.runtimes.executorch import delegation

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), _QK(), torch.nn.Linear(6, 6)).eval()
    assert delegation(model, torch.randn(1, 2, 6, 8)) == {"xnnpack_partitions": 1, "portable_ops": 0}


# -- availability messages -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "runtime, package, extra",
    [
        ("openvino", "openvino", "openvino"),
        ("executorch", "executorch", "executorch"),
        ("coreml", "coremltools", "coreml"),
        ("tensorrt", "tensorrt", "tensorrt"),
        ("ort", "onnxruntime", "onnx"),
    ],
)
def test_missing_package_names_the_extra(runtime, package, extra, monkeypatch):
    for mod in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    rt = get_runtime(runtime)
    assert rt.missing() == f"{package} is not installed: pip install 'latvit[{extra}]'"
    assert rt.cannot_run() == rt.missing()


def test_coreml_runs_only_on_macos(monkeypatch):
    rt = get_runtime("coreml")
    if rt.missing():
        pytest.skip(rt.missing())
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    assert rt.cannot_run() == "CoreML predicts only on macOS: export only"
    with pytest.raises(LatvitError, match="only on macOS"):
        rt.load(Path("x.mlpackage"), torch.zeros(1, 3, SIZE, SIZE), 1)
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert rt.cannot_run() is None


# -- TensorRT: the builder logic without a GPU ---------------------------------------------------------
class FakeTensorRT:
    """Just enough of the `tensorrt` module to drive `build_engine`, recording the builder config."""

    def __init__(self, parses: bool = True):
        self.calls: list[tuple] = []
        self.parses = parses
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(FP16="fp16", TF32="tf32")
        fake = self

        class Config:
            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                fake.calls.append(("set", flag))

            def clear_flag(self, flag):
                fake.calls.append(("clear", flag))

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return "network"

            def create_builder_config(self):
                return Config()

            def build_serialized_network(self, network, config):
                return b"engine"

        class Parser:
            num_errors = 1

            def __init__(self, network, logger):
                pass

            def parse(self, data):
                fake.calls.append(("parse", data))
                return fake.parses

            def get_error(self, i):
                return "Unsupported op Foo"

        self.Builder, self.OnnxParser = Builder, Parser


@pytest.mark.parametrize("precision, flag", [("fp32", ("clear", "tf32")), ("fp16", ("set", "fp16"))])
def test_tensorrt_builder_config(precision, flag):
    from latvit.runtimes.tensorrt import build_engine

    trt = FakeTensorRT()
    assert build_engine(trt, b"onnx", precision) == b"engine"
    assert ("parse", b"onnx") in trt.calls and flag in trt.calls
    assert len([c for c in trt.calls if c[0] in ("set", "clear")]) == 1


def test_tensorrt_errors():
    from latvit.runtimes.tensorrt import NO_CUDA, TensorRTRuntime, build_engine

    with pytest.raises(LatvitError, match="cannot parse the ONNX export: Unsupported op Foo"):
        build_engine(FakeTensorRT(parses=False), b"onnx", "fp32")
    with pytest.raises(LatvitError, match="unknown TensorRT precision 'int4'"):
        TensorRTRuntime("int4")
    rt = TensorRTRuntime("fp16")
    assert rt.name == "tensorrt_fp16"
    if not torch.cuda.is_available():
        assert rt.cannot_run() in (rt.missing(), NO_CUDA)
        with pytest.raises(LatvitError, match="tensorrt is not installed|needs an NVIDIA GPU"):
            export_model("mobilevit_xxs", "tensorrt", "m.engine", img_size=SIZE)


def test_tensorrt_onnx_part(tmp_path, randomize):
    """The ONNX TensorRT parses is latvit's ORT export: static shape, one input, one output."""
    if get_runtime("ort").missing():
        pytest.skip(get_runtime("ort").missing())
    import onnx

    from latvit.runtimes.base import export_onnx

    model, x, _ = build(small_spec("efficientformerv2_s0"), randomize)
    graph = onnx.load(str(export_onnx(model, x, tmp_path / "m.onnx"))).graph
    assert [i.name for i in graph.input] == ["image"] and [o.name for o in graph.output] == ["logits"]
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, SIZE, SIZE]


# -- export: Python API and CLI ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_json(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("spec") / "small_xxs.json"
    small_spec("mobilevit_xxs").to_json(path)
    return str(path)


def test_export_openvino_writes_xml_and_bin(small_json, tmp_path):
    if get_runtime("openvino").missing():
        pytest.skip(get_runtime("openvino").missing())
    info = export_model(small_json, "openvino", tmp_path / "m.xml", img_size=SIZE, batch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]  # nothing left over
    assert info["checked"] and info["max_abs_diff"] < 1e-4 and info["batch"] == 2 and info["deployed"]


def test_export_merged_and_pruned_model(small_json, tmp_path):
    """`--tome`/`--sparsity` put the compressed model in the artifact: it matches that model in PyTorch, not
    the original (whose logits merging and pruning change)."""
    from latvit.deploy.compress import compress

    usable("ort")
    model = latvit.create_model(small_json, img_size=SIZE).eval()
    info = export_model(model, "onnx", tmp_path / "m.onnx", tome="keep0.5", sparsity="0.5")
    assert info["checked"] and info["max_abs_diff"] < 1e-4 and (info["tome"], info["sparsity"]) == ("keep0.5", 0.5)
    x = torch.randn(1, 3, SIZE, SIZE)
    out = np.asarray(get_runtime("ort").load(tmp_path / "m.onnx", x, 1)(x.numpy()))
    with torch.inference_mode():
        original, compressed = model(x).numpy(), compress(latvit.deploy(model), "keep0.5", "0.5")(x).numpy()
    assert np.abs(out - compressed).max() < 1e-4 * max(1.0, np.abs(compressed).max())
    assert np.abs(out - original).max() > 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_openvino_model_has_static_shapes(small_json, tmp_path):
    """OpenVINO IR pinned to the example's shape (convert_model alone leaves it dynamic: slower, and it
    crashed the CPU plugin in int8, see the next test)."""
    usable("openvino")
    export_model(small_json, "openvino", tmp_path / "m.xml", img_size=SIZE, batch=2)
    import openvino as ov

    shape = ov.Core().read_model(str(tmp_path / "m.xml")).inputs[0].get_partial_shape()
    assert shape.is_static and list(shape.to_shape()) == [2, 3, SIZE, SIZE]


def test_openvino_mobilevit_at_32px_matches(tmp_path):
    """At 32 px MobileViT's blocks resize maps that do not divide into patches; with dynamic input shapes
    OpenVINO computed garbage there (max abs diff = the logit scale). Static shapes fix it."""
    rt = usable("openvino")
    torch.manual_seed(0)
    model = latvit.create_model("mobilevit_xxs", img_size=32, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    assert_close(rt.prepare(latvit.deploy(model), x, threads=1, workdir=tmp_path)(x.numpy()), ref)


@pytest.mark.slow
def test_openvino_int8_mobilevit_at_32px_runs(tmp_path):
    """NNCF int8 MobileViT-XXS at 32 px with dynamic input shapes made OpenVINO's CPU plugin segfault at
    the first inference (rc -11). A subprocess, so that a crash fails this test, not the whole run; the
    CLI's own comparison runs the int8 model."""
    import subprocess

    usable("openvino")
    pytest.importorskip("nncf")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "latvit",
            "quantize",
            "mobilevit_xxs",
            "--img-size",
            "32",
            "--runtime",
            "openvino",
            "--calib",
            "synthetic",
            "--calib-images",
            "8",
            "--threads",
            "1",
            "-o",
            str(tmp_path / "m.xml"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "int8" in proc.stdout and (tmp_path / "m.xml").is_file()


@pytest.mark.slow
def test_export_coreml_package(small_json, tmp_path):
    rt = get_runtime("coreml")
    if rt.missing():
        pytest.skip(rt.missing())
    info = export_model(small_json, "coreml", tmp_path / "m.mlpackage", img_size=SIZE)
    assert (tmp_path / "m.mlpackage" / "Manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]
    assert info["checked"] == (rt.cannot_run() is None) and info["note"] == rt.cannot_run()


def test_cli_export_onnx(small_json, tmp_path, capsys):
    if get_runtime("ort").missing():
        pytest.skip(get_runtime("ort").missing())
    out = tmp_path / "sub" / "m.onnx"
    assert main(["export", small_json, "--format", "onnx", "-o", str(out), "--img-size", str(SIZE)]) == 0
    assert out.is_file() and out.stat().st_size > 100_000
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}") and "max abs diff vs PyTorch" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["mobilevit_xxs", "--format", "tflite", "-o", "m.tflite"], "unknown export format 'tflite'; choose from onnx"),
        (["mobilevit_xxz", "--format", "onnx", "-o", "m.onnx"], "mobilevit_xxs"),
        (["timm:resnet_5O", "--format", "onnx", "-o", "m.onnx"], "unknown timm model"),
        (["efficientformer_l1", "--format", "onnx", "-o", "m.onnx", "--img-size", "100"], "input size 100"),
        (["mobilevit_xxs", "--format", "onnx", "-o", "m.xml"], "onnx artifacts end in .onnx"),
    ],
)
def test_cli_export_errors_are_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latvit: error: ") and "\n" not in err and message in err
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_no_partial_file(small_json, tmp_path, monkeypatch):
    rt = get_runtime("ort")

    def broken_export(model, example, path):
        Path(path).write_bytes(b"half an onnx file")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(rt, "export", broken_export)
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the previous export")
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_model(small_json, "onnx", out, img_size=SIZE, check=False)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"] and out.read_bytes() == b"the previous export"
