"""Time any module on any runtime and target: the pipeline's artifact step and the target seam, for the
measurements that are not whole models (density's single blocks, a lookup table's block entries).

    timing = time_module(block, torch.randn(1, 64, 28, 28), "ort", threads=2, workdir=tmp)
    timing.median_ms
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from latvit.pipeline.prepare import build_artifact
from latvit.runtimes import get_runtime, runnable_runtime
from latvit.targets import DEFAULT_TARGET, Protocol, TimingJob, get_target
from latvit.targets.protocol import Timing


def time_module(module: nn.Module, example: torch.Tensor, runtime: str, *, threads: int, workdir: Path,
                protocol: Protocol | None = None, target: str = DEFAULT_TARGET) -> Timing:
    """Export `module` at `example`'s shape for `runtime` (into `workdir`), time it on `target` with
    `protocol` and return the timing. Raises what the runtime raises (callers decide what a failure means)."""
    tgt = get_target(target)
    local = tgt.kind == "local"
    rt = runnable_runtime(runtime) if local else get_runtime(runtime)  # remote: exported here, run there
    built = build_artifact(module.eval(), example, rt, Path(workdir), threads=threads, load=local)
    job = TimingJob(built.artifact, threads, protocol or Protocol(), built.runner)
    return tgt.time(job).timing
