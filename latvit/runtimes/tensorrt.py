"""TensorRT on an NVIDIA GPU: ONNX -> a serialized engine (`.engine`), fp32 or fp16, timed with CUDA sync.

The engine is built from latvit's ONNX export with the TensorRT Python API (ONNX parser + builder), at a
static input shape. Precision:
- "fp32": TF32 is switched off as well, so outputs match PyTorch in fp32 (TensorRT enables TF32 by
  default on Ampere and newer, which changes results at about 1e-3);
- "fp16": TensorRT may pick fp16 kernels wherever it finds them faster (inputs and outputs stay fp32).
An engine is specific to the GPU model and TensorRT version that built it.

The runner copies the numpy input to the GPU, runs the engine on a CUDA stream, synchronises and copies
the logits back, so a timed call includes the host-device copies, like every other runner (numpy in and
out). Without the `tensorrt` package or without CUDA, `missing()` / `cannot_run()` say which.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError
from latvit.runtimes.base import Runner, Runtime, export_onnx

NO_CUDA = "TensorRT needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False here)"
PRECISIONS = ("fp32", "fp16")
WORKSPACE_BYTES = 1 << 30  # builder scratch memory: enough for tactics on ViTs this size


def builder_flags(precision: str) -> tuple[list[str], list[str]]:
    """(flags to set, flags to clear) on the builder config, as `trt.BuilderFlag` names."""
    if precision not in PRECISIONS:
        raise LatvitError(f"unknown TensorRT precision '{precision}'; choose from {', '.join(PRECISIONS)}")
    return (["FP16"], []) if precision == "fp16" else ([], ["TF32"])


def build_engine(trt: Any, onnx_bytes: bytes, precision: str) -> bytes:
    """A serialized engine built from an ONNX model with the `tensorrt` module `trt`.

    `trt` is passed in (not imported) so the builder logic is testable without a GPU.
    """
    set_flags, clear_flags = builder_flags(precision)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LatvitError(f"TensorRT cannot parse the ONNX export: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in set_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for flag in clear_flags:
        config.clear_flag(getattr(trt.BuilderFlag, flag))
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise LatvitError(f"TensorRT could not build a {precision} engine (see its log above)")
    return bytes(engine)


class TensorRTRuntime(Runtime):
    extra, suffix = "tensorrt", ".engine"
    requires = ("tensorrt",)

    def __init__(self, precision: str = "fp32"):
        builder_flags(precision)  # validates
        self.precision = precision
        self.name = "tensorrt" if precision == "fp32" else f"tensorrt_{precision}"

    def cannot_run(self) -> str | None:
        return self.missing() or (None if torch.cuda.is_available() else NO_CUDA)

    def version(self) -> str:
        import tensorrt

        return f"tensorrt {tensorrt.__version__} ({self.precision})"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        """Build the engine on this machine's GPU (the builder needs one) and write it to `path`."""
        import tempfile

        reason = self.cannot_run()
        if reason:
            raise LatvitError(reason)
        import tensorrt as trt

        with tempfile.TemporaryDirectory(prefix="latvit-trt-") as tmp:
            onnx_path = export_onnx(model.float().cpu(), example.float().cpu(), Path(tmp) / "model.onnx")
            engine = build_engine(trt, onnx_path.read_bytes(), self.precision)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(engine)
        return path

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        reason = self.cannot_run()
        if reason:
            raise LatvitError(reason)
        import tensorrt as trt

        engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
        context = engine.create_execution_context()
        stream = torch.cuda.Stream()
        buffers: dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = torch.from_numpy(np.empty(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
            buffers[name] = torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtype, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        names = list(buffers)
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        x_buf, y_buf = buffers[inputs[0]], buffers[outputs[0]]

        def run(x: np.ndarray) -> np.ndarray:
            with torch.cuda.stream(stream):
                x_buf.copy_(torch.from_numpy(x), non_blocking=False)
                context.execute_async_v3(stream.cuda_stream)
                y = y_buf.float().cpu()  # waits for the stream: the call ends when the GPU is done
            stream.synchronize()
            return y.numpy()

        return run


RUNTIME = TensorRTRuntime("fp32")
RUNTIME_FP16 = TensorRTRuntime("fp16")
