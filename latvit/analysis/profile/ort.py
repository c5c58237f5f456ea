"""ONNX Runtime profiler: the session's own profiling JSON, node names mapped back to torch modules
through the ONNX export's name-scope metadata. Taken here (`profile_ort`) or on a device through its
target's agent (`profile_ort_on`); both attribute the events with `profile_from_events`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn

from latvit.analysis.profile.model import RawProfile, paths_with_neighbours, profiled_calls, timed_artifact
from latvit.errors import LatvitError
from latvit.pipeline.prepare import build_artifact
from latvit.runtimes import runnable_runtime
from latvit.targets import Protocol, Target, TimingJob
from latvit.targets.protocol import Timing, measure_latency

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


SOURCE = (
    "onnxruntime profiler (enable_profiling JSON, node kernel times; the executor's time between node events as "
    "`runtime`)"
)


def profile_ort(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """ONNX Runtime's profiler JSON, on this machine: node `_kernel_time` events inside the timed `model_run`s."""
    import onnxruntime

    rt = runnable_runtime("ort")
    path, latency = timed_artifact("ort", model, x, threads, proto, workdir)
    xn = x.numpy()
    sess = rt.session(path, threads, profile_prefix=str(workdir / "ort_profile"))
    name = sess.get_inputs()[0].name
    e2e = measure_latency(lambda: sess.run(None, {name: xn}), **profiled_calls(proto))
    events = json.loads(Path(sess.end_profiling()).read_text())
    return profile_from_events(events, e2e, latency, path, f"onnxruntime {onnxruntime.__version__}")


def profile_ort_on(target: Target, model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path):
    """The same profile taken on a device: the artifact is exported and checked here, timed there without the
    profiler (the latency the shares scale to) and with it; the profiler's events come back as data
    (`TimingJob.profile`) and are attributed here exactly as local ones."""
    built = build_artifact(model, x, "ort", workdir, threads=threads)
    # a fixed number of calls, the plain timing too: the events of every profiled run travel back
    protocol = Protocol(**profiled_calls(proto))
    plain = target.time(TimingJob(built.artifact, threads, protocol))
    profiled = target.time(TimingJob(built.artifact, threads, protocol, profile=True))
    if not profiled.profile_events:
        raise LatvitError(f"target '{target.name}' returned no profiler events for {built.artifact.path.name}")
    version = str(profiled.fingerprint.get("runtime_version") or "onnxruntime")
    return profile_from_events(profiled.profile_events, profiled.timing, plain.timing, built.artifact.path, version)


def profile_from_events(events: list[dict], e2e: Timing, latency: Timing | None, onnx_path: Path, version: str):
    """Per-node totals from ONNX Runtime profiler events: the node `_kernel_time` events inside the last
    `e2e.iters` `model_run`s (warm-up runs excluded), each located in the model through the ONNX file's
    name scopes; the executor's time between two node events is given to the node that follows."""
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-e2e.iters :]
    nodes = sorted(
        (e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")), key=lambda e: e["ts"]
    )
    scopes, producer = _onnx_scopes(onnx_path)
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
    return RawProfile(
        ops,
        len(runs),
        e2e,
        latency,
        SOURCE,
        version,
        {"model_run": mean_ms(runs), "SequentialExecutor::Execute": mean_ms(executor[-len(runs) :])},
    )
