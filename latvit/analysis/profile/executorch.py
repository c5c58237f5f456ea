"""ExecuTorch profiler: the ETDump event tracer read with executorch.devtools.Inspector; XNNPACK's
per-operator events matched in order to the partition's nodes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.analysis.profile.model import RawProfile, paths_with_neighbours, profiled_calls
from latvit.errors import LatvitError
from latvit.runtimes import runnable_runtime
from latvit.runtimes.executorch import export_for_profiling, load_profiled
from latvit.targets.protocol import measure_latency

_XNN_ALIASES = {  # XNNPACK node type (serialized, "XNN" removed) -> operator names it may run as
    "conv2d": ("convolution", "fullyconnected"),  # a 1x1 convolution runs as a GEMM
    "depthwiseconv2d": ("convolution",),
    "convtranspose2d": ("deconvolution",),
    "statictranspose": ("transpose",),
    "staticslice": ("slice",),
    "staticreshape": ("staticreshape", "reshape", "copy"),
    "globalavgpooling2d": ("globalaveragepooling", "mean", "staticmean"),
    "avgpooling2d": ("averagepooling",),
    "maxpooling2d": ("maxpooling",),
    "div": ("divide",),
    "staticresizebilinear2d": ("resizebilinear",),
    "staticconstantpad": ("constantpad",),
}


def _xnn_key(name: str) -> str:
    """ "Convolution (NHWC, F32) IGEMM #3" -> "convolution"; "XNNConcatenate3" -> "concatenate"."""
    key = re.sub(r"[^a-z0-9]", "", re.sub(r"\s*\(.*$|\s*#\d+$", "", name).removeprefix("XNN").lower())
    return "concatenate" if key.startswith("concatenate") else key


def align_xnnpack(op_names: list[str], xnodes: list[tuple[str, int | None]]) -> list[int | None]:
    """The debug handle behind each XNNPACK operator of one partition (names in execution order) from the
    partition's serialized nodes (type, handle) in definition order. XNNPACK runs the nodes in that order,
    one operator per node, except nodes its subgraph passes fuse away (a clamp into its convolution):
    so each operator takes the next node of a compatible type, looking at most `lookahead` nodes ahead
    (a misnamed operator must not swallow the rest); None where no node fits."""
    out: list[int | None] = []
    j, lookahead = 0, 4
    for name in op_names:
        key = _xnn_key(name)
        for k in range(j, min(j + lookahead, len(xnodes))):
            xkey = _xnn_key(xnodes[k][0])
            if key in _XNN_ALIASES.get(xkey, (xkey,)) or key.startswith(xkey) or xkey.startswith(key):
                out.append(xnodes[k][1])
                j = k + 1
                break
        else:
            out.append(None)
    return out


def profile_executorch(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """ExecuTorch's ETDump (event tracer of the Python runtime), read with `executorch.devtools.Inspector`."""

    rt = runnable_runtime("executorch")
    from executorch.devtools import Inspector

    pte = workdir / "model.pte"
    info = export_for_profiling(model, x, pte)
    xn = x.numpy()
    plain = rt.load(pte, x, threads)
    latency = measure_latency(lambda: plain(xn), **proto)
    program, run = load_profiled(pte, threads)
    if not program._program.has_etdump():
        raise LatvitError(
            "the installed executorch pybindings were built without the ETDump event tracer "
            "(EXECUTORCH_ENABLE_EVENT_TRACER); install the executorch wheel from PyPI"
        )
    e2e = measure_latency(lambda: run(xn), **profiled_calls(proto))
    program.write_etdump_result_to_file(str(workdir / "etdump.etdp"), str(workdir / "debug.bin"))
    block = next(
        (b for b in Inspector(etdump_path=str(workdir / "etdump.etdp")).event_blocks if b.name == "Execute"), None
    )
    if block is None:
        raise LatvitError(
            "executorch wrote an ETDump without Execute events; its event tracer is not working "
            "in this install (profile on ort, openvino or eager instead)"
        )
    n = e2e.iters  # the ETDump holds every call since loading: keep the timed ones, the last n

    def us(ev) -> np.ndarray:
        return np.asarray(ev.perf_data.raw[-n:], dtype=float) * 1e3  # Inspector gives ms

    def scopes(handle) -> str:
        return "\x00".join(info.scopes.get(handle, [])) if handle is not None else ""

    partition_of = {tuple(p.handles): p for p in info.partitions}
    xnn: dict[int, list] = {}
    for ev in block.events:
        if ev.is_delegated_op:
            xnn.setdefault(ev._instruction_id, []).append(ev)
    rows: list[tuple[float, str, str, str | None, float]] = []  # (start, name, op type, scopes | None, total us)
    events = {}
    for ev in block.events:
        iid = ev._instruction_id
        if ev.name == "Method::execute":
            events["Method::execute"] = float(us(ev).mean()) / 1e3
        elif ev.name == "OPERATOR_CALL":  # a portable kernel with its argument handling (native_call_* inside)
            handle = info.instructions.get(iid)
            target = info.targets.get(handle, "portable op").replace("aten.", "aten::")
            rows.append((ev._start_time[-1], f"{target}#{iid}", target, scopes(handle) or None, us(ev).sum()))
        elif ev.name == "DELEGATE_CALL":
            handles = info.instructions.get(iid)
            part = partition_of.get(tuple(handles) if isinstance(handles, list) else (handles,))
            ops = sorted(xnn.get(iid, []), key=lambda e: e._start_time[-1])
            if not ops:  # no per-operator events: the partition is one op, at its first node
                first = handles[0] if isinstance(handles, list) and handles else handles
                rows.append(
                    (ev._start_time[-1], f"xnnpack#{iid}", "XNNPACK partition", scopes(first) or None, us(ev).sum())
                )
                continue
            names = [re.sub(r"\s*#\d+$", "", o.name) for o in ops]
            aligned = align_xnnpack([o.name for o in ops], part.xnodes if part else [])
            inside = np.zeros(n)
            for o, name, handle in zip(ops, names, aligned):
                t = us(o)
                inside += t
                rows.append((o._start_time[-1], f"{o.name}@{iid}", name, scopes(handle) or None, t.sum()))
            call = us(ev)
            # the call's time outside its operators, split where it happens: before the first operator
            # (ns timestamps of the last run give the proportion) and after the last
            head_ns = ops[0]._start_time[-1] - ev._start_time[-1]
            end_ns = lambda e: e._start_time[-1] + e.perf_data.raw[-1] * 1e6  # noqa: E731 - raw is in ms
            tail_ns = end_ns(ev) - end_ns(ops[-1])
            rest = np.maximum(call - inside, 0.0).sum()
            share = head_ns / (head_ns + tail_ns) if head_ns + tail_ns > 0 else 0.5
            rows.append(
                (ops[0]._start_time[-1] - 0.5, f"xnnpack#{iid} setup", "XNNPACK delegate setup", None, rest * share)
            )
            rows.append(
                (
                    ops[-1]._start_time[-1] + 0.5,
                    f"xnnpack#{iid} return",
                    "XNNPACK delegate return",
                    None,
                    rest * (1 - share),
                )
            )
    rows.sort(key=lambda r: r[0])
    # delegate setup takes the place of the partition's first operator, return that of its last one;
    # layout transposes XNNPACK inserts (no debug handle) take their producer's place
    paths = [r[3] for r in rows]
    types = ["input" if r[2] == "XNNPACK delegate setup" else r[2] for r in rows]
    filled = paths_with_neighbours([r[1] for r in rows], paths, types)
    ops = [(r[1], r[2], path, r[4], n) for r, path in zip(rows, filled)]
    return RawProfile(
        ops,
        n,
        e2e,
        latency,
        "executorch ETDump (event tracer) via executorch.devtools.Inspector: portable "
        "OPERATOR_CALLs, XNNPACK per-operator events, delegate time outside them as `runtime`",
        rt.version(),
        events,
    )
