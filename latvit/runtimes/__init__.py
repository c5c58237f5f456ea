"""Runtimes latvit exports to and measures on: one module per runtime, one `Runtime` object each.

The table below is the whole registry: a name maps to the module that defines `RUNTIME` (or to
"module:ATTRIBUTE" when a module defines more than one, as TensorRT does for fp16). Modules are
imported only when asked for, so `import latvit` needs none of the optional runtimes.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path

from latvit.errors import LatvitError
from latvit.runtimes.base import Runtime

RUNTIME_MODULES: dict[str, str] = {
    "eager": "latvit.runtimes.eager",
    "inductor": "latvit.runtimes.inductor",
    "ort": "latvit.runtimes.ort",
    "openvino": "latvit.runtimes.openvino",
    "openvino_bf16": "latvit.runtimes.openvino:RUNTIME_BF16",  # a precision change: never a default
    "executorch": "latvit.runtimes.executorch",
    "litert": "latvit.runtimes.litert",
    "tensorrt": "latvit.runtimes.tensorrt",
    "tensorrt_fp16": "latvit.runtimes.tensorrt:RUNTIME_FP16",
    "coreml": "latvit.runtimes.coreml",
}
RUNTIME_NAMES = list(RUNTIME_MODULES)


def get_runtime(name: str) -> Runtime:
    """The runtime called `name` (e.g. "ort"); an unknown name raises with the list of known ones.

    A dotted module path (e.g. "mypkg.my_runtime") names a third-party runtime: a module defining
    `RUNTIME`, an instance of `latvit.runtimes.Runtime`.
    """
    if name not in RUNTIME_MODULES and "." in name:
        try:
            runtime = importlib.import_module(name).RUNTIME
        except (ImportError, AttributeError) as e:
            raise LatvitError(f"cannot load runtime module '{name}' ({e}); it must define RUNTIME") from None
        return runtime
    if name not in RUNTIME_MODULES:
        close = difflib.get_close_matches(name, RUNTIME_NAMES, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise LatvitError(f"unknown runtime '{name}'; {hint}choose from {', '.join(RUNTIME_NAMES)}")
    module, _, attribute = RUNTIME_MODULES[name].partition(":")
    return getattr(importlib.import_module(module), attribute or "RUNTIME")


def runnable_runtime(name: str) -> Runtime:
    """`get_runtime(name)`, raising a one-line LatvitError when it cannot run models on this machine
    (a missing package names its extra; CoreML off macOS and TensorRT without CUDA say so)."""
    runtime = get_runtime(name)
    reason = runtime.cannot_run()
    if reason:
        raise LatvitError(reason)
    return runtime


def run_artifact_once(runtime: str, path: str, shape: list[int]) -> float:
    """Load an artifact that `runtime`'s export wrote at `path`, run it once on zeros of `shape` (B, C, H, W)
    on one thread, and return the largest absolute output value.

    Meant for `latvit.targets.protocol.run_isolated`: a program that crashes the runtime's native code (a
    segfault takes the whole Python process) then becomes a failed probe instead of ending its caller."""
    import numpy as np
    import torch

    example = torch.zeros(*shape)
    out = runnable_runtime(runtime).load(Path(path), example, 1)(example.numpy())
    return float(np.abs(out).max())


__all__ = ["RUNTIME_MODULES", "RUNTIME_NAMES", "Runtime", "get_runtime", "run_artifact_once", "runnable_runtime"]
