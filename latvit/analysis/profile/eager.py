"""Eager PyTorch profiler: torch.profiler with a range around every module call (forward hooks)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from latvit.analysis.profile.model import RawProfile, profiled_calls
from latvit.targets.protocol import measure_latency, set_threads


def profile_eager(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """torch.profiler with a range per module call; the top-level aten ops are the ops."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    set_threads(threads)
    model = model.eval()

    @torch.inference_mode()
    def run():
        model(x)

    latency = measure_latency(run, **proto)
    ranges: list = []
    prefix = "latvit.module::"

    def enter(mod, _inp):
        rf = record_function(prefix + mod._latvit_path)
        rf.__enter__()
        ranges.append(rf)

    def leave(mod, _inp, _out):
        ranges.pop().__exit__(None, None, None)

    handles = []
    for path, mod in model.named_modules():
        mod._latvit_path = path
        handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    try:
        for _ in range(2):  # the hooks' first calls
            run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            e2e = measure_latency(run, **profiled_calls({**proto, "warmup": 0}))
    finally:
        for h in handles:
            h.remove()
        for mod in model.modules():
            del mod._latvit_path
    # ops partition the root module's range: a leaf-module call is one op (its aten ops and the Python
    # around them); in a non-leaf module each top-level aten op is one op and what remains of the
    # module's own time (its Python between children, and the hooks of its children) is a "python" op
    leaves = {path: type(m).__name__ for path, m in model.named_modules() if not any(True for _ in m.children())}
    totals: dict[tuple[str, str], list] = {}
    inner_us: dict[int, float] = {}  # id(module range event) -> time of its direct children ops/ranges
    module_ranges = []

    def owner(ev):
        parent = ev.cpu_parent
        while parent is not None and not parent.name.startswith(prefix):
            if parent.name.startswith("aten::"):
                return None, True  # nested inside another aten op
            parent = parent.cpu_parent
        return parent, False

    def add(key, us):
        acc = totals.setdefault(key, [0.0, 0])
        acc[0] += us
        acc[1] += 1

    for ev in prof.events():
        is_range = ev.name.startswith(prefix)
        if not is_range and not ev.name.startswith("aten::"):
            continue
        parent, nested = owner(ev)
        if nested or (parent is not None and parent.name[len(prefix) :] in leaves):
            continue  # inside a top-level aten op or inside a leaf module: counted there
        us = ev.time_range.elapsed_us()
        if parent is not None:
            inner_us[id(parent)] = inner_us.get(id(parent), 0.0) + us
        if is_range:
            path = ev.name[len(prefix) :]
            if path in leaves:
                add((path, leaves[path]), us)
            else:
                module_ranges.append((ev, path, us))
        else:
            add((parent.name[len(prefix) :] if parent is not None else "", ev.name), us)
    for ev, path, us in module_ranges:
        add((path, "python"), max(0.0, us - inner_us.get(id(ev), 0.0)))
    ops = [(f"{p}:{t}", t, p, us, n) for (p, t), (us, n) in totals.items()]
    return RawProfile(
        ops,
        e2e.iters,
        e2e,
        latency,
        "torch.profiler: leaf-module calls (forward-hook ranges), the aten ops between them, each module's own Python",
        f"torch {torch.__version__}",
    )
