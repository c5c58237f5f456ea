"""CoreML: `torch.export` -> coremltools -> an ML program package (`.mlpackage`, a directory), fp32.

coremltools converts on every OS, but only macOS can load and run a CoreML model, so elsewhere this
runtime is export-only: `cannot_run()` says so and bench reports the row as "export only".
Conversion starts from `torch.export` (coremltools' maintained path): `torch.jit.trace` fails on
MobileViT's size-dependent reshapes, which torch.export records as static shapes.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError
from latvit.runtimes.base import Runner, Runtime

MACOS_ONLY = "CoreML predicts only on macOS: export only"


def _quiet_coremltools():
    """Import coremltools without its import-time chatter (untested torch version, missing native libs)."""
    import io
    import logging
    import warnings

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        import coremltools as ct
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    return ct


@contextlib.contextmanager
def _no_progress_bars():
    """coremltools draws tqdm bars for its conversion passes; a CLI printing one result line needs none."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


class CoreMLRuntime(Runtime):
    name, extra, suffix = "coreml", "coreml", ".mlpackage"
    requires = ("coremltools",)
    export_only_where_it_cannot_run = True

    def cannot_run(self) -> str | None:
        return self.missing() or (None if platform.system() == "Darwin" else MACOS_ONLY)

    def version(self) -> str:
        return f"coremltools {_quiet_coremltools().__version__}"

    def convert(self, model: nn.Module, example: torch.Tensor):
        """An `MLModel` (ML program, fp32 compute) of `model` at `example`'s static shape."""
        import warnings

        ct = _quiet_coremltools()
        with warnings.catch_warnings(), torch.no_grad(), _no_progress_bars():
            warnings.simplefilter("ignore")
            exported = torch.export.export(model.eval(), (example,)).run_decompositions({})
            return ct.convert(
                exported,
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16,
                skip_model_load=True,
                compute_units=ct.ComputeUnit.CPU_ONLY,
            )

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        path = Path(path).with_suffix(".mlpackage")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.convert(model, example).save(str(path))
        return path

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        """A runner on macOS (CPU only, so the numbers compare with the other CPU runtimes; CoreML has no
        thread setting). Elsewhere raises the export-only reason."""

        reason = self.cannot_run()
        if reason:
            raise LatvitError(reason)
        ct = _quiet_coremltools()
        mlmodel = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        spec = mlmodel.get_spec().description
        in_name, out_name = spec.input[0].name, spec.output[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(mlmodel.predict({in_name: x})[out_name])

        return run


RUNTIME = CoreMLRuntime()
