"""What every remote target shares: the agent it ships, the job it sends, the answer it accepts, and the
fields a record measured there carries.

A remote target (`latvit.targets.ssh.SSHTarget`, `latvit.targets.adb.AdbTarget`) turns a `TimingJob` into a
plain JSON job, runs it on the device, and accepts back only data: a JSON object whose samples are finite,
non-negative numbers, or a runner's text output read by `latvit.targets.parsers`. Nothing from the device
is executed or unpickled here. Two kinds of failure stay apart:

- `TargetError`: the device cannot be used (unknown name, unreachable, refused key, unknown host key, no
  Python, no disk space, unauthorized adb device): one line naming the target and the fix;
- `RemoteRunError`: this job failed on the device (the runner crashed, timed out, or raised): the row
  fails with the reason and the rest of a run goes on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from latvit.errors import LatvitError
from latvit.runtimes.openvino import compile_config
from latvit.targets.base import Target, TimingJob, TimingResult
from latvit.targets.config import TargetConfig
from latvit.targets.parsers import RunnerStats, parse_trtexec_times, parse_trtexec_version
from latvit.targets.reference import reference_fields

IDENTITY_FIELDS = ("cpu", "board", "cores", "machine", "system")  # what makes two devices the same device
# the Python distributions that run each runtime on an agent device, preferred first
RUNTIME_PACKAGES = {
    "ort": ("onnxruntime",),
    "openvino": ("openvino",),
    "openvino_bf16": ("openvino",),
    "executorch": ("executorch",),
    "litert": ("ai-edge-litert", "tflite-runtime"),
    "coreml": ("coremltools",),
    "tensorrt": ("tensorrt",),
    "tensorrt_fp16": ("tensorrt",),
}
MAX_ANSWER_BYTES = 64 << 20  # an agent's answer larger than this is not a result


class TargetError(LatvitError):
    """A target cannot be used; the message names it and the fix."""


class RemoteRunError(LatvitError):
    """A job failed on the target (crash, timeout, runtime error); the message says why."""


# -- the agent bundle --------------------------------------------------------------------------------------
_PACKAGE = Path(__file__).resolve().parent.parent  # the latvit package directory
_STUB = b"# latvit's device agent bundle: only the measurement protocol, no training stack\n"


def _latvit_imports(source: bytes) -> set[str]:
    """The latvit modules a file imports at module level ("latvit.errors", ...): its unindented import lines
    (a regex rather than `ast`, whose parser is not thread-safe in CPython 3.11 and targets probe in threads)."""
    text = source.decode()
    return set(re.findall(r"^from (latvit(?:\.\w+)*) import ", text, re.M)) | set(
        re.findall(r"^import (latvit(?:\.\w+)*)", text, re.M)
    )


def agent_bundle() -> dict[str, bytes]:
    """The files shipped to an SSH device, by path in the bundle: the agent, the protocol module it runs and
    every latvit module those import (followed transitively, e.g. errors), with empty package markers, so that
    `latvit.targets.protocol` imports there exactly as here. The agent must stay free of torch: the device
    tests run it in an environment with only numpy and the runtime."""
    files = {"agent.py": (_PACKAGE / "targets" / "agent.py").read_bytes()}
    todo = sorted(_latvit_imports(files["agent.py"]))
    while todo:
        module = todo.pop()
        parts = module.split(".")
        name = "/".join(parts) + ".py"
        if name in files or not (_PACKAGE.parent / name).is_file():
            continue
        files[name] = (_PACKAGE.parent / name).read_bytes()
        todo.extend(sorted(_latvit_imports(files[name]) - {m for m in todo}))
        for depth in range(1, len(parts)):
            files.setdefault("/".join(parts[:depth]) + "/__init__.py", _STUB)
    return files


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_digest(files: dict[str, bytes]) -> str:
    """One hash over every bundle file's path and content: the bundle's directory name on the device."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + file_sha256(files[name]).encode() + b"\n")
    return digest.hexdigest()


def artifact_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- the job and the answer --------------------------------------------------------------------------------
def job_options(job: TimingJob, config: TargetConfig) -> dict[str, Any]:
    """Runtime settings the agent applies: CoreML compute units (the job's, else the target's), OpenVINO's
    compile config as `latvit.runtimes.openvino` builds it (so a device compiles exactly as here)."""
    options = dict(getattr(job, "options", None) or {})
    runtime = job.artifact.runtime
    if runtime == "coreml":
        options.setdefault("compute_units", config.compute_units or "cpu")
    if runtime in ("openvino", "openvino_bf16"):
        precision = "bf16" if runtime.endswith("bf16") else "f32"
        options.setdefault("openvino_config", compile_config(job.threads, precision))
    return options


def job_flags(job: TimingJob, config: TargetConfig) -> dict[str, Any]:
    """Everything besides the artifact and the device that changes a measurement: the key of a result."""
    flags = {"threads": job.threads, "protocol": job.protocol.as_kwargs(), "options": job_options(job, config)}
    # one session is what every result cached before `Protocol.sessions` was measured with: same key
    return flags | ({"sessions": job.protocol.sessions} if job.protocol.sessions > 1 else {})


def parse_answer(text: str, target: str) -> dict[str, Any]:
    """The agent's answer: its last stdout line, a JSON object; anything else is a failed run."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines or len(text) > MAX_ANSWER_BYTES:
        raise RemoteRunError(f"target '{target}': the agent gave no answer")
    try:
        payload = json.loads(lines[-1])
    except ValueError:
        raise RemoteRunError(
            f"target '{target}': the agent answered something that is not JSON: {lines[-1][:120]!r}"
        ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get("ok"), bool):
        raise RemoteRunError(f"target '{target}': the agent answered a JSON value that is not a result")
    return payload


def _non_negative_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def checked_samples(samples: Any, target: str) -> list[float]:
    """Per-call seconds from the device: a non-empty list of finite, non-negative numbers."""
    if not isinstance(samples, list) or not samples or not all(_non_negative_number(s) for s in samples):
        raise RemoteRunError(f"target '{target}': the agent sent samples that are not a list of non-negative seconds")
    return [float(s) for s in samples]


def checked_profile_events(events: Any, target: str) -> list[dict[str, Any]]:
    """ONNX Runtime profiler events from the device, rebuilt from their checked fields only: name and cat
    (strings), ts and dur (finite, non-negative microseconds), args.op_name (a string)."""

    if not isinstance(events, list):
        raise RemoteRunError(f"target '{target}': the agent sent a profile that is not a list of events")
    checked = []
    for e in events:
        args = e.get("args") if isinstance(e, dict) else None
        if not (
            isinstance(e, dict)
            and isinstance(e.get("name"), str)
            and isinstance(e.get("cat"), (str, type(None)))
            and _non_negative_number(e.get("ts"))
            and _non_negative_number(e.get("dur"))
            and isinstance(args, dict)
            and isinstance(args.get("op_name"), str)
        ):
            raise RemoteRunError(f"target '{target}': the agent sent a profile event that is not one: {str(e)[:120]}")
        checked.append(
            {"name": e["name"], "cat": e["cat"], "ts": e["ts"], "dur": e["dur"], "args": {"op_name": args["op_name"]}}
        )
    return checked


def result_from_answer(
    payload: dict[str, Any], target: str, fingerprint: dict[str, Any], reference: dict[str, Any] | None = None
) -> TimingResult:
    """A TimingResult from a successful agent answer (its own samples, or trtexec's export file).
    reference: what the job's reference workload was (`reference_describe`), when it asked for one."""
    state = payload.get("state") if isinstance(payload.get("state"), dict) else {}
    if payload.get("runner") == "trtexec":
        stats = parse_trtexec_times(str(payload.get("trtexec_times", "")))
        version = parse_trtexec_version(str(payload.get("trtexec_log", ""))) or "tensorrt (trtexec)"
        samples, state = stats.samples, {**state, "runner": "trtexec"}
    else:
        samples = checked_samples(payload.get("samples"), target)
        version = str(payload.get("runtime_version", ""))[:200]
    timed_ref = payload.get("reference")
    if reference is not None and isinstance(timed_ref, dict):
        net, gemm = (checked_samples(timed_ref.get(k), target) for k in ("net", "gemm"))
        reference = {"net": net, "gemm": gemm, **reference}
    else:
        reference = None
    events = payload.get("profile_events")
    return TimingResult(
        samples=samples,
        state=state,
        fingerprint={**fingerprint, "target": target, "runtime_version": version},
        reference=reference,
        profile_events=None if events is None else checked_profile_events(events, target),
        sessions=payload["sessions"] if isinstance(payload.get("sessions"), int) and payload["sessions"] >= 1 else 1,
    )


def result_from_runner(
    stats: RunnerStats, state: dict[str, Any], target: str, fingerprint: dict[str, Any]
) -> TimingResult:
    """A TimingResult from a device tool's parsed output: its samples, or its aggregates in `state`."""
    state = {**state, "runner": stats.runner, **({"runner_extra": stats.extra} if stats.extra else {})}
    if stats.stats_source == "aggregate":
        state["aggregate"] = stats.aggregate
    return TimingResult(
        samples=stats.samples,
        state=state,
        stats_source=stats.stats_source,
        fingerprint={**fingerprint, "target": target},
    )


# -- what a record carries -----------------------------------------------------------------------------------
def timing_fields(result: TimingResult, job: TimingJob | None = None) -> dict[str, Any]:
    """The latency fields of a record: `Timing` of the samples (with the job's stopping target, for `noisy`),
    or, for a runner that reports only aggregates, its own numbers (median None where it gave none)."""
    if result.stats_source == "aggregate":
        agg = result.state.get("aggregate", {})
        mean, std = agg.get("mean_ms"), agg.get("std_ms")
        return {
            "median_ms": agg.get("median_ms"),
            "p90_ms": agg.get("p90_ms"),
            "min_ms": agg.get("min_ms"),
            "mean_ms": mean,
            "cv": std / mean if std is not None and mean else None,
            "iters": agg.get("count"),
            "stats_source": "aggregate",
        }
    rule = result.stopping_rule(job)
    timing = rule.timing(result.samples)
    fields = {**timing.as_dict(), "stats_source": "samples", "sessions": result.sessions}
    if result.reference:  # timed with the reference workload: the device's speed meanwhile
        ref = dict(result.reference)
        ref_rule = replace(rule, iters=5, min_seconds=0.0)
        fields |= reference_fields(timing, ref_rule.timing(ref.pop("net")), ref_rule.timing(ref.pop("gemm")), ref)
    return fields


def result_record(target: Target, result: TimingResult, job: TimingJob | None = None) -> dict[str, Any]:
    """Everything a bench row or LUT entry takes from a target's answer: which device (name, kind,
    fingerprint), the runtime version there, the timing fields and the measurement conditions."""
    fingerprint = dict(result.fingerprint)
    device = fingerprint.pop("target", target.name)
    version = fingerprint.pop("runtime_version", None)
    return {
        "target": device,
        "target_kind": target.kind,
        "target_fingerprint": fingerprint,
        **({"runtime_version": version} if version else {}),
        **timing_fields(result, job),
        "conditions": result.state,
    }


def target_meta(target: Target) -> dict[str, Any]:
    """What a latency table built on `target` records about it (`lut build --target`)."""
    return {
        "target": target.name,
        "target_kind": target.kind,
        "target_fingerprint": {k: v for k, v in target.fingerprint().items() if k in IDENTITY_FIELDS},
    }


def target_mismatch(meta: dict[str, Any], target: Target, runtime_version: str | None = None) -> list[str]:
    """Why a table with `meta` (from `target_meta` and the build) was not measured on `target`, one phrase per
    difference ([] when it was): another target, another device behind the name, another runtime version.
    Tables from before targets existed were measured on 'local'."""
    built_on = meta.get("target", "local")
    if built_on != target.name:
        return [f"target '{built_on}' (asked for '{target.name}')"]
    recorded = meta.get("target_fingerprint") or {}
    here = target.fingerprint()
    diffs = [
        f"{k} '{recorded.get(k)}' (now '{here.get(k)}')"
        for k in IDENTITY_FIELDS
        if k in recorded and recorded.get(k) != here.get(k)
    ]
    if runtime_version is not None and meta.get("runtime_version") not in (None, runtime_version):
        diffs.append(f"runtime version '{meta.get('runtime_version')}' (on the target now '{runtime_version}')")
    return diffs


class RemoteTarget(Target):
    """Base of the targets that measure on another device. Subclasses implement `probe_device` (what the
    device is: the agent's `probe` answer, or adb's equivalent), `time`, and `runner_version`."""

    def __init__(self, config: TargetConfig):
        self.config = config
        self.name = config.name
        self.url = config.parsed
        self._probe: dict[str, Any] | None = None

    def probe(self, refresh: bool = False) -> dict[str, Any]:
        """The device's probe answer (cached for the target object's life unless `refresh`)."""
        if self._probe is None or refresh:
            self._probe = self.probe_device()
        return self._probe

    def probe_device(self) -> dict[str, Any]:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        p = self.probe()
        return {k: p.get(k) for k in (*IDENTITY_FIELDS, "platform", "python") if p.get(k) is not None}

    def record_fields(self) -> dict[str, Any]:
        return {"target": self.name, "target_kind": self.kind, "target_fingerprint": self.fingerprint()}

    def check(self) -> dict[str, Any]:
        p = self.probe(refresh=True)
        return {"name": self.name, "kind": self.kind, "url": str(self.url), "reachable": True, **p}

    def runner_version(self, runtime: str) -> str | None:
        """The version of what times `runtime` on the device (part of a result's key), None when absent."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {str(self.url)!r})"
