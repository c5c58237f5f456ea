"""What every runtime provides: availability, version, export to an artifact, and a prepared runner.

A runtime is measured through a *runner*: a callable taking one float32 numpy array (B, 3, H, W) and
returning the logits as a numpy array. Everything expensive (export, compilation, session creation,
thread settings) happens when the runner is prepared, so timing the runner times inference only.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError, missing_extra

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Artifact:
    """What a runtime's export wrote, as a target sees it.

    runtime: the runtime's registered name ("ort", "openvino", ...).
    path: the file (or directory, e.g. a CoreML .mlpackage) to load; None for in-process runtimes (eager,
        inductor), which only the local target can time, through `TimingJob.runner`.
    input_shape: the static input (B, 3, H, W); inputs are float32.
    """

    runtime: str
    path: Path | None
    input_shape: tuple[int, ...]

    def sha256(self) -> str | None:
        """Content hash of the artifact (every file of a directory artifact, in name order), for caches."""
        if self.path is None:
            return None
        digest = hashlib.sha256()
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())
        for f in files:
            digest.update(f.relative_to(self.path.parent).as_posix().encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


class Runtime:
    """Base class: subclasses set the class attributes and override what their runtime supports.

    name:   the CLI name (`--runtimes ort`).
    extra:  the pip extra that installs it (`pip install "latvit[onnx]"`), or None when always present.
    suffix: file suffix of the exported artifact, or None when the runtime has no artifact (eager).
    requires: the modules it imports; `missing()` names the first one absent and the extra to install.
    """

    name: str = ""
    extra: str | None = None
    suffix: str | None = None
    requires: tuple[str, ...] = ()
    # where it cannot run, bench still exports and reports "export only" (CoreML off macOS: the artifact is
    # the deliverable); other runtimes that cannot run here (TensorRT without CUDA) are "unavailable"
    export_only_where_it_cannot_run: bool = False

    # -- what this machine can do --------------------------------------------------------------------
    def missing(self) -> str | None:
        """Why this runtime cannot export here (a missing package: name the extra), or None."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                return str(missing_extra(module.split(".")[0], self.extra))
        return None

    def cannot_run(self) -> str | None:
        """Why exported models cannot be *run* here (e.g. CoreML off macOS, TensorRT without CUDA)."""
        return self.missing()

    def version(self) -> str:
        raise NotImplementedError

    # -- export and run ------------------------------------------------------------------------------
    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        """Write `model` traced at `example`'s shape to `path` (a file or directory); return the path."""
        raise LatvitError(
            f"runtime '{self.name}' has no export format; export to onnx, openvino, executorch, coreml or tensorrt"
        )

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        """A runner over an artifact written by `export`."""
        raise NotImplementedError

    def prepare(self, model: nn.Module, example: torch.Tensor, threads: int, workdir: Path) -> Runner:
        """A runner for `model` at `example`'s shape using `threads` CPU threads (export, then load)."""
        reason = self.cannot_run()
        if reason:
            raise LatvitError(reason)
        path = self.export(model, example, Path(workdir) / f"model{self.suffix or ''}")
        return self.load(path, example, threads)

    def describe(self) -> str:
        reason = self.cannot_run()
        return f"{self.name}: {'available ' + self.version() if reason is None else reason}"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 20) -> Path:
    """Export to ONNX with torch's dynamo exporter (the maintained one), falling back to the TorchScript
    exporter for graphs dynamo cannot capture. Shared by the ONNX-based runtimes.

    Opset 20 by default because it has a `Gelu` operator: at opset 18 GELU is exported as Erf, Div, Add and
    Mul nodes that ONNX Runtime runs one by one, and EfficientFormer-L1 runs 1.25x faster on ORT with the
    single fused op (13.0 -> 10.4 ms, 2 threads, identical outputs; docs/benchmarks.md)."""
    import logging
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["image"],
                output_names=["logits"],
                verbose=False,
                external_data=False,
            )
        except Exception:  # noqa: BLE001 - any capture failure: retry with the legacy tracer
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=["image"],
                output_names=["logits"],
            )
    return path
