"""fp32 against int8 on one runtime: latency measured interleaved (drift hits both alike), here or on a
target, and the outputs' agreement. `latvit quantize` prints it after writing the int8 artifact; `latvit tune`
uses the same rule."""

from __future__ import annotations

import copy
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.pipeline.prepare import build_artifact
from latvit.runtimes import get_runtime
from latvit.runtimes.base import Artifact
from latvit.targets import DEFAULT_TARGET, Protocol, Target, TimingJob, get_target
from latvit.targets.protocol import measure_interleaved, median_ratio, set_threads
from latvit.targets.schedule import time_interleaved


def compare_int8(
    model: nn.Module,
    runtime: str,
    int8_path: str | Path,
    batches: list[np.ndarray],
    threads: int,
    min_seconds: float = 1.0,
    rounds: int = 5,
    target: str | Target = DEFAULT_TARGET,
) -> dict:
    """The fp32 `model` on `runtime` against the int8 artifact at `int8_path`: per-round median latency of
    both, timed round-robin for `rounds` rounds (about `min_seconds` each in all) on `target`, the speed-up
    as the median of the per-round ratios, and the output agreement on `batches` (max |logit| difference,
    top-1 agreement; computed here). Returns {"runtime", "target", "fp32_ms", "int8_ms", "speedup", "rounds",
    "max_abs_diff", "top1_agreement"}."""
    set_threads(threads)
    tgt = get_target(target) if isinstance(target, str) else target
    rt = get_runtime(runtime)
    example = torch.from_numpy(batches[0])
    per_round = max(min_seconds / rounds, 0.0)
    with tempfile.TemporaryDirectory(prefix="latvit-quant-") as tmp:
        fp32 = build_artifact(copy.deepcopy(model).eval(), example, rt, Path(tmp), threads=threads)
        run32, run8 = fp32.runner, rt.load(Path(int8_path), example, threads)
        out32 = [np.asarray(run32(x)) for x in batches]
        out8 = [np.asarray(run8(x)) for x in batches]
        x = batches[0]
        if tgt.kind == "local":
            medians = measure_interleaved(
                {"fp32": lambda: run32(x), "int8": lambda: run8(x)},
                rounds,
                alternate=True,
                warmup=3,
                iters=5,
                min_seconds=per_round,
            )
        else:  # each artifact shipped and timed there, in alternating rounds as here
            protocol = Protocol(warmup=3, iters=5, min_seconds=per_round)
            int8 = Artifact(rt.name, Path(int8_path), tuple(example.shape))
            medians = time_interleaved(
                tgt,
                {"fp32": TimingJob(fp32.artifact, threads, protocol), "int8": TimingJob(int8, threads, protocol)},
                rounds,
            )
    agree = np.mean([np.array_equal(a.argmax(-1), b.argmax(-1)) for a, b in zip(out32, out8)])
    return {
        "runtime": runtime,
        "target": tgt.name,
        "fp32_ms": statistics.median(medians["fp32"]),
        "int8_ms": statistics.median(medians["int8"]),
        "speedup": median_ratio(medians["fp32"], medians["int8"]),
        "rounds": rounds,
        "max_abs_diff": float(max(np.abs(a - b).max() for a, b in zip(out32, out8))),
        "top1_agreement": float(agree),
    }
