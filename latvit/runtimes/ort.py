"""ONNX Runtime on the CPU (the default bench runtime): ONNX export, session with explicit threads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.runtimes.base import Runner, Runtime, export_onnx


class OnnxRuntime(Runtime):
    name, extra, suffix = "ort", "onnx", ".onnx"
    requires = ("onnx", "onnxruntime", "onnxscript")

    def version(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        return export_onnx(model, example, path)

    def session(self, path: Path, threads: int, profile_prefix: str | None = None):
        """An ORT CPU session with all graph optimisations, `threads` intra-op threads, sequential
        execution (one image at a time: inter-op parallelism only adds scheduling noise)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if profile_prefix:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile_prefix
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        sess = self.session(path, threads)
        name = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: x})[0]

        return run


RUNTIME = OnnxRuntime()
