"""The device's "speed now": a small fixed workload timed interleaved with the work being measured.

A latency is a property of a model *and* of the device's state at that moment: frequency scaling, thermal
throttling, other jobs and a hypervisor's neighbours move it by 1.4x within half an hour on a shared CPU,
while each measurement's own spread stays at a few percent. So every measurement that matters times a
fixed reference beside it, in short alternating rounds, so that drift hits both alike:

- the reference network: a tiny EfficientFormer (conv stem, pool-mixer MB4D blocks, one attention MB3D
  block, 64 px) prepared on the *same runtime* and thread count as the work (`Runtime.prepare`), so it
  moves with what the work moves with;
- a GEMM in torch (256 x 256, fp32): the device's raw compute, whatever the runtime does.

`measure_with_reference(run, prepare_reference(runtime, threads, workdir))` returns the work's `Timing`
and the reference's, whose medians every record carries as `ref_ms` and `ref_gemm_ms`. Two records from
different moments then compare as ratios `median_ms / ref_ms`; a table built at one `ref_ms` is rescaled
by `ref_ms now / ref_ms then` (latvit.latency.predictor).
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latvit.models.efficientformer import efficientformer_spec
from latvit.runtimes import runnable_runtime
from latvit.space.builder import build_model
from latvit.space.spec import NetSpec
from latvit.targets.protocol import (
    CONFIDENCE,
    TARGET_REL,
    Sampler,
    StoppingRule,
    Timing,
    cpu_times,
    device_state,
    set_threads,
)

REFERENCE_VERSION = 1  # bump when the workload changes: reference times of other versions do not compare
GEMM_SIZE = 256  # 34 MFLOP on 0.5 MB of operands: sub-millisecond, in cache, compute-bound
ROUND_SECONDS = 0.2  # work per round; the reference gets REFERENCE_SHARE of that on top
REFERENCE_SHARE = 0.25
# Idle time before each round: a thread pool that just ran (ORT's, OpenMP's) spin-waits for new work for a
# while, and spinning threads of the last workload would steal the cores of the next one.
SWITCH_PAUSE = 0.005


def reference_spec() -> NetSpec:
    """The reference network: a fixed tiny EfficientFormer at 64 px (every kind of op the zoo runs:
    strided convs, BatchNorm, pooling mixer, MLP, LayerNorm, attention, the head)."""
    return efficientformer_spec(
        f"latvit_reference_v{REFERENCE_VERSION}", (32, 64, 96, 128), (1, 1, 2, 2), 1, img_size=64
    )


@dataclass
class Reference:
    """Runners of the reference workload, ready to call: `net()` the reference network on the runtime,
    `gemm()` the torch GEMM. `describe` says what it is, for records."""

    net: Callable[[], Any]
    gemm: Callable[[], Any]
    describe: dict[str, Any] = field(default_factory=dict)


def reference_cache_dir() -> Path:
    """Where reference artifacts are kept between runs: `$XDG_CACHE_HOME/latvit/reference` (default
    ~/.cache). An artifact is written once per reference version, runtime and runtime version, then loaded:
    exporting it (up to ~20 s for LiteRT) would otherwise be paid by every bench row and table."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "latvit" / "reference"


def reference_artifact(rt: Any, model: Any, example: Any) -> Path:
    """The reference network's artifact for runtime `rt` (one with files), from the cache or exported
    into it. Written under a temporary name and renamed, so concurrent runs never load half a file."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"v{REFERENCE_VERSION}-{rt.name}-{rt.version()}")
    path = reference_cache_dir() / name / f"reference{rt.suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
            written = Path(rt.export(model, example, Path(tmp) / path.name))
            try:
                written.rename(path)
            except OSError:  # another run got there first (a directory artifact cannot replace one)
                pass
    return path


def prepare_reference(runtime: str | Any, threads: int, workdir: str | Path | None = None) -> Reference:
    """The reference workload on `runtime` (a name or a `latvit.runtimes.Runtime`) with `threads` threads.
    Runtimes with artifact files load the cached one (`reference_artifact`); the in-process runtimes
    (eager, inductor) are prepared with their artifact, if any, in `workdir` (default: a temporary
    directory kept as long as the runners)."""
    import torch

    rt = runnable_runtime(runtime) if isinstance(runtime, str) else runtime
    set_threads(threads)
    torch.manual_seed(0)
    spec = reference_spec()
    model = build_model(spec).eval()
    example = torch.randn(1, spec.in_chans, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(0))
    keep = None
    if rt.suffix:
        run = rt.load(reference_artifact(rt, model, example), example, threads)
    else:
        if workdir is None:
            keep = tempfile.TemporaryDirectory(prefix="latvit-ref-")
            workdir = keep.name
        run = rt.prepare(model, example, threads, Path(workdir))
    x = example.numpy()
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)

    def net() -> Any:
        _ = keep  # the artifact's directory lives as long as this runner
        return run(x)

    return Reference(
        net, lambda: torch.mm(a, b), {"ref_version": REFERENCE_VERSION, "ref_runtime": rt.name, "ref_threads": threads}
    )


def reference_fields(work: Timing, ref: Timing, gemm: Timing, describe: dict[str, Any]) -> dict[str, Any]:
    """The record fields of a measurement timed with the reference: ref_ms (the reference network's median),
    ref_min_ms, ref_ci_rel, ref_gemm_ms, ref_ratio (the work's median / ref_ms: comparable across moments
    when the device drifts) and the reference's identity (ref_version, ref_runtime, ref_threads)."""
    return {
        "ref_ms": ref.median_ms,
        "ref_min_ms": ref.min_ms,
        "ref_ci_rel": ref.ci_rel,
        "ref_gemm_ms": gemm.median_ms,
        "ref_ratio": work.median_ms / ref.median_ms,
        **describe,
    }


@dataclass(frozen=True)
class ReferencedTiming:
    """The work's timing and the reference's, measured in the same alternating rounds, with the device's
    state over the whole measurement (`latvit.targets.protocol.device_state`)."""

    timing: Timing
    ref: Timing
    gemm: Timing
    device: dict[str, Any]
    describe: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """The work in reference units: comparable across moments when the device drifts."""
        return self.timing.median_ms / self.ref.median_ms

    def as_record(self) -> dict[str, Any]:
        """Flat record fields: the work's Timing fields, then ref_ms (the reference's median), ref_min_ms,
        ref_ci_rel, ref_gemm_ms, ref_ratio (median_ms / ref_ms), the reference's identity (ref_version,
        ref_runtime, ref_threads) and the device state fields."""
        return {
            **self.timing.as_dict(),
            **reference_fields(self.timing, self.ref, self.gemm, self.describe),
            **self.device,
        }


def _round(sampler: Sampler, run: Callable[[], Any], seconds: float, clock: Callable[[], float]) -> None:
    """Time `run` for `seconds` (at least one call), after SWITCH_PAUSE of idling. One untimed call first
    when calls are short: it re-warms the caches the other workload evicted, at under a tenth of the round."""
    time.sleep(SWITCH_PAUSE)
    samples = sampler.samples
    if not samples or statistics.median(samples[-20:]) < seconds / 10:
        run()
    start = clock()
    sampler.time_call(run)
    while clock() - start < seconds:
        sampler.time_call(run)


@dataclass
class ReferencedSamples:
    """Raw per-call seconds of the work, the reference network and the GEMM from the same alternating
    rounds, and the device state over them: what a target returns before statistics are taken."""

    work: list[float]
    net: list[float]
    gemm: list[float]
    device: dict[str, Any]
    rule: StoppingRule

    def timings(self) -> tuple[Timing, Timing, Timing]:
        return self.rule.timing(self.work), self.rule.timing(self.net), self.rule.timing(self.gemm)

    def describe_reference(self, reference: Reference) -> dict[str, Any]:
        """The reference half as `TimingResult.reference` carries it: raw seconds and identity."""
        return {"net": self.net, "gemm": self.gemm, **reference.describe}


def collect_with_reference(
    run: Callable[[], Any],
    reference: Reference,
    *,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    target_rel: float | None = TARGET_REL,
    confidence: float = CONFIDENCE,
    round_seconds: float = ROUND_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> ReferencedSamples:
    """Time `run()` (one inference) and the reference in alternating rounds: `round_seconds` of work, then
    a quarter of that on the reference network and on the GEMM, again and again. Stops when both the work's
    and the reference network's medians are known to +-`target_rel` (and the work has at least `iters`
    calls and `min_seconds` of the whole measurement), or at `max_seconds` in all (then `noisy`). The
    arguments mean what they mean for `latvit.targets.protocol.collect_samples`."""
    rule = StoppingRule(iters, min_seconds, max_seconds, target_rel, confidence)
    rule.check()
    ref_rule = StoppingRule(5, 0.0, max_seconds, target_rel, confidence)
    for _ in range(warmup):
        run()
    for _ in range(3):
        reference.net()
        reference.gemm()
    work, net, gemm = Sampler(rule, clock), Sampler(ref_rule, clock), Sampler(ref_rule, clock)
    since = cpu_times()
    start = clock()
    while True:
        _round(work, run, round_seconds, clock)
        _round(net, reference.net, round_seconds * REFERENCE_SHARE, clock)
        _round(gemm, reference.gemm, round_seconds * REFERENCE_SHARE / 4, clock)
        elapsed = clock() - start
        if rule.capped(len(work.samples), elapsed) or (work.done(elapsed) and net.done(elapsed)):
            break
    return ReferencedSamples(work.samples, net.samples, gemm.samples, device_state(since), rule)


def measure_with_reference(run: Callable[[], Any], reference: Reference, **protocol: Any) -> ReferencedTiming:
    """`collect_with_reference` (same arguments), summarised: the work's, the reference network's and the
    GEMM's Timing, the device state, and the reference's identity."""
    samples = collect_with_reference(run, reference, **protocol)
    return ReferencedTiming(*samples.timings(), samples.device, dict(reference.describe))
