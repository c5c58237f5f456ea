"""Time any module on any runtime and target: the pipeline's artifact step and the target seam, for the
measurements that are not whole bench rows (density's single blocks, a lookup table's blocks and networks,
search's final check).

    timing = time_module(block, torch.randn(1, 64, 28, 28), "ort", threads=2, workdir=tmp)
    timing.median_ms
    record = measure_module(net, example, "ort", threads=2, workdir=tmp, reference=True)
    record["median_ms"], record["ref_ms"]      # the reference workload's median from the same rounds
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from latvit.pipeline.prepare import build_artifact
from latvit.runtimes import get_runtime, runnable_runtime
from latvit.runtimes.base import Runtime
from latvit.targets import DEFAULT_TARGET, Protocol, Target, TimingJob, get_target, result_record
from latvit.targets.protocol import Timing


def measure_module(
    module: nn.Module,
    example: torch.Tensor,
    runtime: str | Runtime,
    *,
    threads: int,
    workdir: Path,
    protocol: Protocol | None = None,
    target: str | Target = DEFAULT_TARGET,
    reference: bool = False,
) -> dict[str, Any]:
    """Export `module` at `example`'s shape for `runtime` (into `workdir`), time it on `target` with
    `protocol` (with the target's reference workload in alternating rounds when `reference`) and return the
    flat record of `latvit.targets.result_record`: Timing fields, ref_* fields, target and conditions.
    Raises what the runtime raises (callers decide what a failure means)."""
    tgt = get_target(target) if isinstance(target, str) else target
    name = runtime if isinstance(runtime, str) else runtime.name
    local = tgt.kind == "local"
    rt = runnable_runtime(name) if local else get_runtime(name)  # remote: exported here, run there
    built = build_artifact(module.eval(), example, rt, Path(workdir), threads=threads, load=local)
    job = TimingJob(built.artifact, threads, protocol or Protocol(), built.runner, reference=reference)
    return result_record(tgt, tgt.time_settled(job), job)


def time_module(
    module: nn.Module,
    example: torch.Tensor,
    runtime: str | Runtime,
    *,
    threads: int,
    workdir: Path,
    protocol: Protocol | None = None,
    target: str | Target = DEFAULT_TARGET,
) -> Timing:
    """`measure_module` without the reference, as a `Timing`."""
    return Timing.from_dict(
        measure_module(module, example, runtime, threads=threads, workdir=workdir, protocol=protocol, target=target)
    )
