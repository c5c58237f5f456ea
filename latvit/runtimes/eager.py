"""Eager PyTorch on the CPU: the reference every other runtime is checked against."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.runtimes.base import Runner, Runtime


class EagerRuntime(Runtime):
    name = "eager"

    def version(self) -> str:
        return f"torch {torch.__version__}"

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int, workdir: Path) -> Runner:
        torch.set_num_threads(threads)
        model = model.eval()

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            return model(torch.from_numpy(x)).numpy()

        return run


RUNTIME = EagerRuntime()
