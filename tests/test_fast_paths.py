"""Fast paths on the deployment runtimes: OpenVINO's bf16 runner (`openvino_bf16`) and its guard rails.

bf16 is a precision change, never a silent default: the plain `openvino` runtime pins f32 (outputs match
PyTorch to 1e-5 of their scale), `openvino_bf16` asks for bf16 and must really compute in it (its logits
move measurably), stay within 2% of the logits' scale, and refuse CPUs without bf16 units in one line.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

from latvit.runtimes import openvino as ovrt

pytestmark = pytest.mark.skipif(ovrt.RUNTIME.missing() is not None, reason="openvino is not installed")


def small_net() -> nn.Module:
    """Conv-GELU-conv-pool-linear: enough multiply-adds per output that bf16 rounding shows in the logits."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    ).eval()


def test_compile_config_pins_precision():
    assert ovrt.compile_config(2)["INFERENCE_PRECISION_HINT"] == "f32"  # default: match PyTorch
    assert ovrt.compile_config(2, "bf16")["INFERENCE_PRECISION_HINT"] == "bf16"
    assert ovrt.compile_config(3)["INFERENCE_NUM_THREADS"] == "3"
    with pytest.raises(KeyError):
        ovrt.compile_config(2, "fp64")


def test_runtime_names_and_bad_precision():
    assert (ovrt.RUNTIME.name, ovrt.RUNTIME.precision) == ("openvino", "f32")
    assert (ovrt.RUNTIME_BF16.name, ovrt.RUNTIME_BF16.precision) == ("openvino_bf16", "bf16")
    with pytest.raises(ValueError, match="precision"):
        ovrt.OpenVinoRuntime("int4")


def test_bf16_refuses_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(ovrt, "cpu_has_bf16", lambda: False)
    reason = ovrt.RUNTIME_BF16.cannot_run()
    assert reason is not None and "bf16" in reason and "\n" not in reason
    assert ovrt.RUNTIME.cannot_run() is None  # f32 does not care


def test_bf16_is_a_bounded_precision_change(tmp_path):
    if ovrt.RUNTIME_BF16.cannot_run():
        pytest.skip(ovrt.RUNTIME_BF16.cannot_run())
    model, x = small_net(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ref = model(x).numpy()
    scale = float(np.abs(ref).max())
    f32 = ovrt.RUNTIME.prepare(model, x, threads=1, workdir=tmp_path / "f32")(x.numpy())
    bf16 = ovrt.RUNTIME_BF16.prepare(model, x, threads=1, workdir=tmp_path / "bf16")(x.numpy())
    f32_err, bf16_err = np.abs(f32 - ref).max() / scale, np.abs(bf16 - ref).max() / scale
    assert f32_err < 1e-5
    assert bf16_err > 10 * f32_err  # the hint was applied: the kernels really ran in bf16
    assert bf16_err < 2e-2
