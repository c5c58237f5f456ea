"""OpenVINO on the CPU: the torch model converted in memory, saved as IR (.xml + .bin), compiled for latency.

Conversion goes straight from the torch model (`ov.convert_model(model, example_input=...)`, OpenVINO's
TorchScript/FX frontend) rather than through ONNX: on the seed models it is about twice as fast to
convert (no ONNX export step) and its outputs match eager PyTorch at least as closely (MobileViT-XXS:
1e-8 vs 3e-6 max abs diff at 64 px). If the direct frontend cannot capture a model, the ONNX route is
the fallback, so anything ORT can run, OpenVINO can too.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.runtimes.base import Runner, Runtime, export_onnx
from latvit.utils import repair_signal_stack

# precision -> OpenVINO's INFERENCE_PRECISION_HINT
PRECISIONS = {"f32": "f32", "bf16": "bf16"}


def compile_config(threads: int, precision: str = "f32") -> dict[str, str]:
    """CPU plugin settings: explicit threads, one inference at a time (latency, not throughput), and the
    arithmetic precision. f32 by default so outputs match PyTorch: on CPUs with bf16 units (AMX,
    AVX512-BF16) OpenVINO's own default is bf16, which moves logits by ~0.5% of their scale.

    In f32 the "snippets" subgraph compiler is off: on static shapes (which `convert` gives) it fused
    MobileViT's attention with an approximate exp, 3e-4 of the logit scale off PyTorch against 1e-6
    without it, for 1-2% of latency."""
    config = {
        "INFERENCE_NUM_THREADS": str(threads),
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
    }
    if precision == "f32":
        config["SNIPPETS_MODE"] = "DISABLE"
    return config


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 natively here (AMX or AVX512-BF16)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRuntime(Runtime):
    """precision "f32" (runtime `openvino`, outputs match PyTorch) or "bf16" (runtime `openvino_bf16`: a
    precision change, 1.2-2.6x faster than f32 on the seed models on an AMX CPU, logits within ~0.7%
    of their scale; the artifact is the same fp32 IR, only the compiled kernels differ)."""

    extra, suffix = "openvino", ".xml"
    requires = ("openvino",)

    def __init__(self, precision: str = "f32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.name = "openvino" if precision == "f32" else f"openvino_{precision}"

    def cannot_run(self) -> str | None:
        reason = self.missing()
        if reason is None and self.precision == "bf16" and not cpu_has_bf16():
            reason = "openvino_bf16 needs a CPU with bf16 units (AMX or AVX512-BF16); use openvino (f32) here"
        return reason

    def version(self) -> str:
        import openvino

        return f"openvino {openvino.__version__.split('-')[0]}"

    def convert(self, model: nn.Module, example: torch.Tensor):
        """An `ov.Model` of `model` at `example`'s static shape (direct frontend, ONNX as the fallback).

        `convert_model(example_input=...)` alone leaves the batch and spatial dims dynamic; pinning them
        made the seed models 1.03-1.12x faster in fp32 (MobileViT most), fixed a trained MobileViT-XXS at
        32 px whose dynamic-shape logits were 7% of their scale off PyTorch, and avoids a CPU-plugin
        segfault in NNCF int8 MobileViT-XXS at 32 px (docs/runtimes.md)."""
        import tempfile
        import warnings

        import openvino as ov

        model = model.eval()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                converted = ov.convert_model(model, example_input=example)
                converted.reshape(list(example.shape))
            except Exception:  # noqa: BLE001 - any frontend failure: go through ONNX instead
                # e.g. token-merged EfficientFormer-L1: the PyTorch frontend gives `tokens[:, ::2]` of its 49
                # tokens length 49, not 25, which the static reshape's shape inference rejects
                with tempfile.TemporaryDirectory(prefix="latvit-ov-") as tmp:
                    onnx_path = export_onnx(model, example, Path(tmp) / "model.onnx")
                    converted = ov.convert_model(str(onnx_path))
                converted.reshape(list(example.shape))
        return converted

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        """Write OpenVINO IR: `path` (.xml, the graph) and the .bin next to it (the weights)."""
        import openvino as ov

        path = Path(path).with_suffix(".xml")
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(self.convert(model, example), str(path), compress_to_fp16=False)  # fp32 weights
        return path

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", compile_config(threads, self.precision))
        repair_signal_stack()  # the CPU plugin swaps this thread's alternate signal stack (see there)
        held = [compiled, compiled.create_infer_request()]  # one reusable request: no per-call allocation

        def run(x: np.ndarray) -> np.ndarray:
            return held[1].infer({0: x})[0]

        weakref.finalize(run, _release, held)
        return run


def _release(held: list) -> None:
    """Free a runner's compiled model and request, then mend the signal stack OpenVINO may have left
    dangling on the way out (`latvit.utils.repair_signal_stack`)."""
    held.clear()
    repair_signal_stack()


RUNTIME = OpenVinoRuntime()
RUNTIME_BF16 = OpenVinoRuntime("bf16")
