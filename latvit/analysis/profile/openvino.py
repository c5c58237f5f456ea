"""OpenVINO profiler: the CPU plugin's per-layer performance counters (PERF_COUNT)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from latvit.analysis.profile.model import RawProfile, paths_with_neighbours, profiled_calls, timed_artifact
from latvit.runtimes import runnable_runtime
from latvit.runtimes.openvino import compile_config
from latvit.targets.protocol import measure_latency
from latvit.utils import repair_signal_stack


def _ov_module_path(names: list[str]) -> str | None:
    """The torch module path in OpenVINO's torch-frontend layer names ("__module.stem.0.bn/aten::...")."""
    for n in names:
        m = re.search(r"__module\.([^/]+)/", n)
        if m:
            return m.group(1)
    return None


def profile_openvino(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """OpenVINO per-layer performance counters of the model the openvino runtime compiles (direct torch
    frontend, fp32), with PERF_COUNT on; a fused layer maps through its `originalLayersNames`."""

    rt = runnable_runtime("openvino")
    import openvino as ov

    compiled = ov.Core().compile_model(rt.convert(model, x), "CPU", {**compile_config(threads), "PERF_COUNT": "YES"})
    repair_signal_stack()  # the CPU plugin swaps this thread's alternate signal stack (latvit.utils)
    request = compiled.create_infer_request()
    xn = x.numpy()
    _, latency = timed_artifact("openvino", model, x, threads, proto, workdir)
    originals: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        originals[op.get_friendly_name()] = [n for n in names.split(",") if n]
    for _ in range(proto.get("warmup", 0)):
        request.infer({0: xn})
    # the counters describe the last inference only, and reading them costs more than some models' whole
    # inference: time the calls with counting on, then repeat as many calls reading the counters after each
    e2e = measure_latency(lambda: request.infer({0: xn}), **profiled_calls({**proto, "warmup": 0}))
    totals: dict[str, list] = {}
    for _ in range(e2e.iters):
        request.infer({0: xn})
        for p in request.get_profiling_info():
            us = p.real_time.total_seconds() * 1e6
            if us <= 0:
                continue  # fused into another layer (status NOT_RUN) or a constant
            acc = totals.setdefault(p.node_name, [p.node_type, 0.0, 0])
            acc[1] += us
            acc[2] += 1
    order = list(totals)
    paths = [_ov_module_path(originals.get(n, []) + [n]) for n in order]
    filled = paths_with_neighbours(order, paths, [totals[n][0] for n in order])
    ops = [(n, totals[n][0], p, totals[n][1], totals[n][2]) for n, p in zip(order, filled)]
    request = compiled = None  # freed here, so that the signal stack they may leave dangling is mended now
    repair_signal_stack()
    return RawProfile(
        ops,
        e2e.iters,
        e2e,
        latency,
        "openvino PERF_COUNT per-layer counters (real_time), read after each of as many calls as were timed",
        rt.version(),
    )
