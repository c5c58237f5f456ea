"""ONNX Runtime profiler: the session's own profiling JSON, node names mapped back to torch modules
through the ONNX export's name-scope metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn

from latvit.analysis.profile.model import RawProfile, paths_with_neighbours, timed_artifact
from latvit.runtimes import runnable_runtime
from latvit.targets.protocol import measure_latency

_ORT_SUFFIXES = re.compile(r"(_token_\d+|_nchwc|_bn|_fused|_Fused\w*)$")


def _onnx_scopes(onnx_path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Node name -> torch module scopes (outermost first), and output name -> node name."""
    import onnx

    scopes, producer = {}, {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        raw = meta.get("pkg.torch.onnx.name_scopes")
        try:
            scopes[node.name] = [s for s in json.loads(raw.replace("'", '"'))] if raw else []
        except ValueError:
            scopes[node.name] = []
        for out in node.output:
            producer[out] = node.name
    return scopes, producer


def _resolve_onnx_name(name: str, scopes: dict, producer: dict) -> str | None:
    """The ONNX node behind a runtime's (possibly rewritten) node name, or None."""
    candidates = [name, name.split("/")[0]]
    for base in list(candidates):
        stripped = base
        while True:
            new = _ORT_SUFFIXES.sub("", stripped)
            if new == stripped:
                break
            stripped = new
            candidates.append(stripped)
    for c in candidates:
        if c in scopes:
            return c
        if c in producer:
            return producer[c]
    return None


def profile_ort(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """ONNX Runtime's profiler JSON: node `_kernel_time` events inside the timed `model_run`s."""
    rt = runnable_runtime("ort")
    path, latency = timed_artifact("ort", model, x, threads, proto, workdir)
    xn = x.numpy()
    sess = rt.session(path, threads, profile_prefix=str(workdir / "ort_profile"))
    name = sess.get_inputs()[0].name
    e2e = measure_latency(lambda: sess.run(None, {name: xn}), **proto)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-e2e.iters :]
    nodes = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")), key=lambda e: e["ts"]
    )
    scopes, producer = _onnx_scopes(path)
    locator_paths: dict[str, str | None] = {}
    totals: dict[str, list] = {}
    r, seq, prev_end, gaps = 0, [], None, {}
    for ev in nodes:
        while r < len(runs) and ev["ts"] > runs[r]["ts"] + runs[r]["dur"]:
            r, prev_end = r + 1, None
        if r >= len(runs) or ev["ts"] < runs[r]["ts"]:
            continue
        node = ev["name"][: -len("_kernel_time")]
        acc = totals.setdefault(node, [ev["args"].get("op_name", "?"), 0.0, 0])
        acc[1] += ev["dur"]
        acc[2] += 1
        if prev_end is not None:  # the executor's time between the previous node event and this one
            gaps[node] = gaps.get(node, 0.0) + max(0.0, ev["ts"] - prev_end)
        prev_end = ev["ts"] + ev["dur"]
        if r == len(runs) - 1:
            seq.append(node)  # execution order of one run, for the neighbour rule
    for node in seq or totals:
        onnx_name = _resolve_onnx_name(node, scopes, producer)
        locator_paths[node] = None if onnx_name is None else "\x00".join(scopes.get(onnx_name, []))
    order = list(locator_paths)
    filled = paths_with_neighbours(order, [locator_paths[n] for n in order], [totals[n][0] for n in order])
    scope_of = dict(zip(order, filled))
    ops = [(n, t, scope_of.get(n, ""), us, c) for n, (t, us, c) in totals.items()]
    ops += [(f"{n} (executor)", "ORT executor", scope_of.get(n, ""), us, totals[n][2]) for n, us in gaps.items()]
    executor = sorted((e for e in events if e.get("name") == "SequentialExecutor::Execute"), key=lambda e: e["ts"])
    mean_ms = lambda evs: sum(e["dur"] for e in evs) / len(evs) / 1e3 if evs else 0.0  # noqa: E731
    import onnxruntime

    return RawProfile(
        ops,
        len(runs),
        e2e,
        latency,
        "onnxruntime profiler (enable_profiling JSON, node kernel times; the "
        "executor's time between node events as `runtime`)",
        f"onnxruntime {onnxruntime.__version__}",
        {"model_run": mean_ms(runs), "SequentialExecutor::Execute": mean_ms(executor[-len(runs) :])},
    )
