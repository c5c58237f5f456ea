"""TorchInductor on the CPU: `torch.compile(model)` in the default mode; no artifact.

`prepare` compiles and runs the model once at the example's shape, so the compile time (and the on-disk
kernel cache warm-up) stays out of the timed calls; later calls at that shape reuse the compiled graph.
The default mode is used because "max-autotune" mostly tunes GPU kernels and on a CPU multiplies the
compile time for little gain; `mode` can be changed on a new instance (`InductorRuntime(mode=...)`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.runtimes.base import Runner, Runtime


class InductorRuntime(Runtime):
    name = "inductor"

    def __init__(self, mode: str | None = None):
        self.mode = mode  # torch.compile mode; None is torch's "default"

    def version(self) -> str:
        return f"torch {torch.__version__} (inductor, mode={self.mode or 'default'})"

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int, workdir: Path) -> Runner:
        torch.set_num_threads(threads)
        compiled = torch.compile(model.eval(), mode=self.mode, dynamic=False, fullgraph=False)
        with torch.inference_mode():
            compiled(example)  # compile now (and fill the kernel cache), not inside the timed calls

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            return compiled(torch.from_numpy(x)).numpy()

        return run


RUNTIME = InductorRuntime()
