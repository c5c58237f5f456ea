"""The device's "speed now": a small fixed workload timed interleaved with the work being measured.

A latency is a property of a model *and* of the device's state at that moment: frequency scaling, thermal
throttling, other jobs and a hypervisor's neighbours move it by 1.4x within half an hour on a shared CPU,
while each measurement's own spread stays at a few percent. So every measurement that matters times a
fixed reference beside it, in short alternating rounds, so that drift hits both alike:

- the reference network: a tiny EfficientFormer (conv stem, pool-mixer MB4D blocks, one attention MB3D
  block, 64 px) prepared on the *same runtime* and thread count as the work (`Runtime.prepare`), so it
  moves with what the work moves with;
- a GEMM in torch (256 x 256, fp32): the device's raw compute, whatever the runtime does.

The reference network is loaded NETWORK_SESSIONS times and the loads take the reference rounds in turn:
one load runs a few percent off another for as long as it lives (`latvit.targets.protocol`), and each bench
row prepares its reference anew in its own process, so one load's offset would move every `ref_ratio`.

`measure_with_reference(run, prepare_reference(runtime, threads, workdir))` runs the alternating rounds
(`latvit.targets.protocol.collect_with_reference`, which a remote device's agent runs too, on the artifact
`reference_file` gives it) and returns the work's `Timing` and the reference's, whose medians every record carries as `ref_ms` and `ref_gemm_ms`. Two records from
different moments then compare as ratios `median_ms / ref_ms`; a table built at one `ref_ms` is rescaled
by `ref_ms now / ref_ms then` (latvit.latency.predictor).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latvit.models.efficientformer import efficientformer_spec
from latvit.runtimes import runnable_runtime
from latvit.space.builder import build_model
from latvit.space.spec import NetSpec
from latvit.targets.protocol import NETWORK_SESSIONS, Runners, Timing, collect_with_reference, set_threads

REFERENCE_VERSION = 1  # bump when the workload changes: reference times of other versions do not compare
GEMM_SIZE = 256  # 34 MFLOP on 0.5 MB of operands: sub-millisecond, in cache, compute-bound


def reference_spec() -> NetSpec:
    """The reference network: a fixed tiny EfficientFormer at 64 px (every kind of op the zoo runs:
    strided convs, BatchNorm, pooling mixer, MLP, LayerNorm, attention, the head)."""
    return efficientformer_spec(
        f"latvit_reference_v{REFERENCE_VERSION}", (32, 64, 96, 128), (1, 1, 2, 2), 1, img_size=64
    )


@dataclass
class Reference:
    """Runners of the reference workload, ready to call: `net` the reference network on the runtime (one
    runner, or several loads of it timed in turn), `gemm()` the torch GEMM. `describe` says what it is."""

    net: Runners
    gemm: Callable[[], Any]
    describe: dict[str, Any] = field(default_factory=dict)


def reference_model() -> tuple[Any, Any]:
    """The reference network, built with fixed weights, and its example input (1, 3, 64, 64)."""
    import torch

    torch.manual_seed(0)
    spec = reference_spec()
    model = build_model(spec).eval()
    example = torch.randn(1, spec.in_chans, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(0))
    return model, example


def reference_cache_dir() -> Path:
    """Where reference artifacts are kept between runs: `$XDG_CACHE_HOME/latvit/reference` (default
    ~/.cache). An artifact is written once per reference version, runtime and runtime version, then loaded:
    exporting it (up to ~20 s for LiteRT) would otherwise be paid by every bench row and table."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "latvit" / "reference"


def reference_artifact(rt: Any) -> Path:
    """The reference network's artifact for runtime `rt` (one with files), from the cache or exported
    into it (the network is built only then). Written under a temporary name and renamed, so concurrent
    runs never load half a file."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"v{REFERENCE_VERSION}-{rt.name}-{rt.version()}")
    path = reference_cache_dir() / name / f"reference{rt.suffix}"
    if not path.exists():
        model, example = reference_model()
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-") as tmp:
            written = Path(rt.export(model, example, Path(tmp) / path.name))
            try:
                written.rename(path)
            except OSError:  # another run got there first (a directory artifact cannot replace one)
                pass
    return path


def reference_file(runtime: str) -> tuple[Path, tuple[int, ...]] | None:
    """The reference network's artifact for `runtime` and its input shape, for a device that loads artifact
    files (a remote target ships it beside the work's); None for in-process runtimes (eager, inductor)."""
    rt = runnable_runtime(runtime)
    if not rt.suffix:
        return None
    spec = reference_spec()
    return reference_artifact(rt), (1, spec.in_chans, spec.img_size, spec.img_size)


def reference_describe(runtime: str, threads: int) -> dict[str, Any]:
    """What a measurement's reference was, for records: ref_version, ref_runtime, ref_threads."""
    return {"ref_version": REFERENCE_VERSION, "ref_runtime": runtime, "ref_threads": threads}


def prepare_reference(
    runtime: str | Any, threads: int, workdir: str | Path | None = None, sessions: int = NETWORK_SESSIONS
) -> Reference:
    """The reference workload on `runtime` (a name or a `latvit.runtimes.Runtime`) with `threads` threads.
    Runtimes with artifact files load the cached one (`reference_artifact`), `sessions` times; the in-process
    runtimes (eager, inductor) are prepared once, with their artifact, if any, in `workdir` (default: a
    temporary directory kept as long as the runners)."""
    import torch

    rt = runnable_runtime(runtime) if isinstance(runtime, str) else runtime
    set_threads(threads)
    model, example = reference_model()
    keep = None
    if rt.suffix:
        path = reference_artifact(rt)
        loads = [rt.load(path, example, threads) for _ in range(sessions)]
    else:
        if workdir is None:
            keep = tempfile.TemporaryDirectory(prefix="latvit-ref-")
            workdir = keep.name
        loads = [rt.prepare(model, example, threads, Path(workdir))]
    x = example.numpy()
    a, b = torch.randn(GEMM_SIZE, GEMM_SIZE), torch.randn(GEMM_SIZE, GEMM_SIZE)

    def session(run: Callable[[Any], Any]) -> Callable[[], Any]:
        def net() -> Any:
            _ = keep  # the artifact's directory lives as long as this runner
            return run(x)

        return net

    return Reference([session(run) for run in loads], lambda: torch.mm(a, b), reference_describe(rt.name, threads))


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


def measure_with_reference(run: Runners, reference: Reference, **protocol: Any) -> ReferencedTiming:
    """`collect_with_reference` (same arguments), summarised: the work's, the reference network's and the
    GEMM's Timing, the device state, and the reference's identity."""
    samples = collect_with_reference(run, reference.net, reference.gemm, **protocol)
    return ReferencedTiming(*samples.timings(), samples.device, dict(reference.describe))
