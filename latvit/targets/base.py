"""The `Target` seam: *where* an artifact runs and is timed.

Everything that measures (bench, profile, density, `lut build`, search's final check, quantize's latency
comparison, tune) hands a target a `TimingJob`: an artifact a runtime wrote (a file, or for the in-process
runtimes `eager`/`inductor` a prepared runner), its input shape, the thread count and the `Protocol`. The
target runs the runtime there, times it with the one protocol of `latvit.targets.protocol`, and returns the
raw per-call samples plus the device's state; statistics are computed here, on this machine, with the same
code for every target (`Timing.from_samples`), so a remote number and a local one mean the same thing.

    target = get_target("local")                    # this machine; "ssh://..."/"adb://..." plug in beside it
    job = TimingJob(artifact, threads=2, protocol=Protocol(warmup=10, iters=50))
    result = target.time(job)                       # -> TimingResult(samples, state, fingerprint)
    result.timing.median_ms

A target needs only what an artifact needs to run: the runtime's own Python package (or its benchmark
binary), never torch or latvit's training stack. That is why a job names its artifact by path and runtime
name, and why the samples come back as plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from time import sleep as wait_seconds  # not `time`: Target.time is the method
from typing import Any

from latvit.errors import LatvitError
from latvit.runtimes.base import Artifact
from latvit.targets.protocol import CONFIDENCE, TARGET_REL, StoppingRule, Timing

# a runner: one float32 array (B, 3, H, W) in, the logits out (see latvit.runtimes.base.Runner)
Runner = Callable[[Any], Any]


@dataclass(frozen=True)
class Protocol:
    """How to time one artifact: `warmup` untimed calls, then at least `iters` calls and `min_seconds`,
    then on until the median's confidence interval is within +-`target_rel` (None: stop at the minimums),
    at most `max_seconds`. `sessions`: load the artifact this many times and time the loads in turn, a
    round each (`latvit.targets.protocol`: one load carries an offset of a few percent for as long as it
    lives); in-process runners (eager, inductor) and device benchmark binaries time one. Further keyword
    settings of `protocol.collect_samples` travel in `options`."""

    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 30.0  # the stopping rule's cap: past it a row is "noisy", with its interval
    target_rel: float | None = TARGET_REL
    confidence: float = CONFIDENCE
    options: dict[str, Any] = field(default_factory=dict)
    sessions: int = 1

    def __post_init__(self):
        if self.sessions < 1:
            raise LatvitError(
                f"bad protocol: sessions={self.sessions} (>= 1: the loads of the artifact to time in turn)"
            )

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `latvit.targets.protocol.collect_samples` / `measure_latency` (`sessions`
        is not one: the target loads that many runners and hands them over as a list)."""
        return {
            "warmup": self.warmup,
            "iters": self.iters,
            "min_seconds": self.min_seconds,
            "max_seconds": self.max_seconds,
            "target_rel": self.target_rel,
            "confidence": self.confidence,
            **self.options,
        }

    def rule(self) -> StoppingRule:
        """The stopping rule these settings make (it also judges `noisy` on the samples)."""
        kw = self.as_kwargs()
        return StoppingRule(kw["iters"], kw["min_seconds"], kw["max_seconds"], kw["target_rel"], kw["confidence"])


@dataclass
class TimingJob:
    """One artifact to time on a target. `runner` is the already-loaded in-process runner, which the local
    target uses when it is given (the artifact is then only metadata); remote targets load `artifact.path`.
    `reference`: time the target's reference workload (`latvit.targets.reference`, on the same runtime and
    threads) in alternating rounds with the artifact, so the result says how fast the device was meanwhile.
    `profile`: time with the runtime's per-op profiler on and return its events (`TimingResult.profile_events`);
    remote targets do this for ONNX Runtime (`Target.profiles`), the local one profiles in-process instead
    (`latvit.analysis.profile`)."""

    artifact: Artifact
    threads: int
    protocol: Protocol = field(default_factory=Protocol)
    runner: Runner | None = None
    reference: bool = False
    profile: bool = False


@dataclass
class TimingResult:
    """Raw per-call seconds measured on the target, and what the target says about itself around them."""

    samples: list[float]
    state: dict[str, Any] = field(default_factory=dict)  # device state around the timing (frequency, load, ...)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # the target's identity (CPU, OS, runtime version)
    stats_source: str = "samples"  # "aggregate" when a device runner reports only summary statistics
    # with TimingJob.reference: the reference's raw seconds from the same rounds, {"net": [...], "gemm": [...]},
    # and what it is (ref_version, ref_runtime, ref_threads); None when the job asked for none or the target
    # cannot time one
    reference: dict[str, Any] | None = None
    protocol: Protocol | None = None  # the job's protocol: its stopping target decides `noisy`
    # with TimingJob.profile: the runtime profiler's events of the last profiled runs (ONNX Runtime's JSON
    # events: name, cat, ts, dur in us, args.op_name), checked data
    profile_events: list[dict[str, Any]] | None = None
    sessions: int = 1  # loads of the artifact the samples come from (Protocol.sessions where the target can)

    def stopping_rule(self, job: TimingJob | None = None) -> StoppingRule:
        """The rule the samples are judged by (`noisy` or not): `job`'s protocol, else the one timed with."""
        protocol = job.protocol if job is not None else self.protocol
        return (protocol or Protocol(target_rel=None)).rule()

    @property
    def timing(self) -> Timing:
        return self.stopping_rule().timing(self.samples)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Settle:
    """When to measure again: a job timed with the reference whose reference network ran more than `above`
    slower than the fastest reference this target object has timed (same runtime, threads and device), known to
    within `confident` (its interval's half-width), is timed again after `pause_s`, at most `tries` times
    in all; the try with the fastest reference is kept. Why: a shared host's or a phone's transient
    slowdowns (here: 1.45x for 20-60 s every few minutes) slow the small, in-cache reference more than a
    network (1.31x), so a record taken inside one is corrected by 10% too much; waiting it out costs
    about as long as the slowdown lasts, and nothing when the device is steady."""

    above: float = 0.15
    pause_s: float = 20.0
    tries: int = 3
    confident: float = 0.05


class Target:
    """Base class of every target. Subclasses set `name` and `kind` and implement `fingerprint` and `time`.

    name: what the user calls it (`--target pi5`); kind: "local", "ssh", "adb", ...
    """

    name: str = ""
    kind: str = ""
    profiles: tuple[str, ...] = ()  # runtimes whose per-op profile this target returns (TimingJob.profile)
    # the fastest reference-network median this object has timed, per (runtime, threads, device): the
    # device's usual speed, against which `time_settled` judges a record
    _fastest_reference: dict[tuple[str, int, str], float] | None = None

    def fingerprint(self) -> dict[str, Any]:
        """The target's identity, recorded beside every measurement: CPU, cores, OS, Python."""
        raise NotImplementedError

    def check(self) -> dict[str, Any]:
        """Reachability and what the target has (runtimes and versions, CPU, cores, governor, free disk)."""
        return {"name": self.name, "kind": self.kind, "reachable": True, **self.fingerprint()}

    def time(self, job: TimingJob) -> TimingResult:
        """Run `job.artifact` on the target and time it with `job.protocol`; raw samples come back."""
        raise NotImplementedError

    def time_settled(
        self, job: TimingJob, settle: Settle = Settle(), sleep: Callable[[float], None] | None = None
    ) -> TimingResult:
        """`time(job)`, timed again while the device is in a transient slowdown (see `Settle`). The result's
        `state["settle"]` says how many tries it took and how much slower than the fastest reference seen
        the kept one ran; a job without the reference is timed once."""
        if not job.reference:
            return self.time(job)
        if self._fastest_reference is None:
            self._fastest_reference = {}
        kept, kept_ref = None, math.inf
        for attempt in range(1, settle.tries + 1):
            result = self.time(job)
            if not result.reference:  # this target cannot time the reference
                return result
            device = str(result.fingerprint.get("target", self.name))  # a tag pool's member, or this target
            key = (job.artifact.runtime, job.threads, device)
            ref = result.stopping_rule(job).timing(result.reference["net"])
            usual = self._fastest_reference.get(key, ref.median_ms)
            if ref.ci_rel is not None and ref.ci_rel <= settle.confident:
                self._fastest_reference[key] = min(usual, ref.median_ms)
            if ref.median_ms < kept_ref:
                kept, kept_ref = result, ref.median_ms
            slow = ref.median_ms > usual * (1 + settle.above) and (ref.ci_rel or 0.0) <= settle.confident
            if not slow or attempt == settle.tries:
                break
            (sleep or wait_seconds)(settle.pause_s)
        kept.state = {**kept.state, "settle": {"tries": attempt, "ref_vs_fastest": kept_ref / usual}}
        return kept

    def record_fields(self) -> dict[str, Any]:
        """The fields every record measured on this target carries."""
        return {"target": self.name, "target_kind": self.kind}

    def close(self) -> None:
        """Release connections; a target is usable again after `close` (it reconnects)."""

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
