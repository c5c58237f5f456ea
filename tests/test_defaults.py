"""Defaults that spare the user a warning: `latvit quantize` without --runtime picks the runtime measured
fastest for int8 on this kind of CPU among those installed (or the one -o's suffix names) and says which;
bench groups skip, with the reason, the members that cannot run at the requested size."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from latvit.cli import expand_models
from latvit.cli import main as cli
from latvit.errors import LatvitError
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

q = importlib.import_module("latvit.deploy.quantize")  # the module (latvit.deploy.quantize is also a function)
XEON = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"
EPYC = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n"


def test_cpu_int8_class_reads_the_flags():
    assert q.cpu_int8_class(XEON) == "amx"
    assert q.cpu_int8_class(XEON.replace(" amx_int8", "")) == "vnni"
    assert q.cpu_int8_class(EPYC) == "avx2"
    assert q.cpu_int8_class("processor : 0\n") == "other"


def test_default_int8_runtime(monkeypatch):
    assert q.default_int8_runtime("m.onnx")[0] == "ort"  # the suffix names the artifact's runtime
    assert q.default_int8_runtime("m.pte")[0] == "executorch"
    installed = {"onnxruntime", "onnx", "openvino", "nncf", "executorch", "torchao"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: name in installed or None)
    runtime, why = q.default_int8_runtime("m-int8", cpu="amx")
    assert runtime == "openvino" and "measured on" in why and "3.3x" in why
    runtime, why = q.default_int8_runtime("m-int8", cpu="other")  # unmeasured class: the AMX ranking, said so
    assert runtime == "openvino" and "not measured on this CPU (other)" in why
    installed -= {"nncf"}  # OpenVINO without its quantizer cannot quantize: the next measured runtime
    runtime, why = q.default_int8_runtime("m-int8", cpu="amx")
    assert runtime == "executorch" and "openvino not installed" in why
    installed.clear()
    with pytest.raises(LatvitError, match="latvit\\[openvino\\]"):
        q.default_int8_runtime("m-int8", cpu="amx")
    for cpu, ranking in q.INT8_MEASURED.items():  # a ranking names int8 runtimes, each with its packages
        assert set(ranking) <= set(q.QUANT_RUNTIMES) and set(ranking) <= set(q.INT8_PACKAGES), cpu


def test_quantize_without_runtime_says_which(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    spec = NetSpec(
        name="tiny_q",
        img_size=32,
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="relu"),),
        stages=(StageSpec((BlockSpec("conv_bn_act", 24, stride=2, act="relu"),)),),
        head=HeadSpec(),
    )
    path = tmp_path / "tiny.json"
    spec.to_json(path)
    assert (
        cli(
            [
                "quantize",
                str(path),
                "--calib",
                "synthetic",
                "--calib-images",
                "4",
                "-o",
                str(tmp_path / "tiny-int8.onnx"),
                "--no-compare",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "runtime: ort (the output's suffix .onnx is its artifact)" in out and (tmp_path / "tiny-int8.onnx").is_file()


def test_bench_groups_skip_members_that_cannot_run_at_the_size(capsys):
    assert expand_models("seeds", 100) == []
    err = capsys.readouterr().err
    assert "skipped efficientformer_l1 from seeds: input size 100 is not valid" in err
    # a model named on its own stays, to fail with its reason before any measurement
    assert expand_models("seeds,mobilevit_xxs", 100) == ["mobilevit_xxs"]
    capsys.readouterr()
    assert "efficientformer_l1" in expand_models("seeds", 224) and not capsys.readouterr().err
