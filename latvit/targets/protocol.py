"""One measurement protocol for every latency latvit reports (bench rows, LUT entries, profiles).

- threads are set explicitly (torch and the runtime's own setting; OMP/MKL variables for subprocesses);
- the runner is warmed up, then timed one call at a time until the answer is known: at least `iters`
  calls and `min_seconds`, then on until the median's confidence interval is within `target_rel` of the
  median (default +-2%), or until `max_seconds` (then the record says `noisy` and gives the interval);
- results are the median with its interval, p90, min, mean and coefficient of variation (std / mean) of
  per-call times: medians because a 2-core machine shares its cores with the OS;
- `collect_with_reference` times the work in short rounds alternating with a reference workload (the
  device's "speed now", `latvit.targets.reference`), so drift during a measurement hits both alike;
- both collectors also take several *sessions* of one artifact (the runtime's loader called again on the
  same file) and time them in turn, a round each: two loads of one file run a few percent apart for as
  long as they live (memory placement; `benchmarks/session_spread.py` measured 6-8% between 8 ORT
  sessions), so a record of one session carries that offset and two records of one model disagree by
  more than any stopping rule within a record can see. Pooling sessions averages the offset out;
- each measurement can run in an isolated subprocess with a timeout (`run_isolated`), so a runtime that
  crashes or hangs becomes a failed record while the rest goes on; the parent only waits meanwhile;
- `device_state` says what the device was doing around a measurement (frequency, governor, steal, load),
  `machine_info` and `gemm_peak_gflops` give the metadata and the roofline every record carries.

The interval is the distribution-free order-statistic (binomial) confidence interval of the median: the
ranks k and n+1-k with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2. Unlike a bootstrap it is exact
for any distribution (bimodal, heavy-tailed), deterministic and costs one sort, so the stopping rule can
re-evaluate it as samples come in. It assumes independent samples; a drifting device breaks that, so the
interval is widened to contain the medians of the first and the second half of the samples: drift within
one measurement widens the interval instead of hiding behind many samples.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from latvit._version import __version__
from latvit.errors import LatvitError

CONFIDENCE = 0.95  # of the median's interval
TARGET_REL = 0.02  # stop once the interval's half-width is within +-2% of the median
MIN_SAMPLES = 10  # never judge an interval on fewer calls (at 95% the interval needs >= 6 to exist at all)
# Measuring beside the reference workload (`collect_with_reference`): work per round, and the reference's share
ROUND_SECONDS = 0.2
REFERENCE_SHARE = 0.25
# Idle time before each round: a thread pool that just ran (ORT's, OpenMP's) spin-waits for new work for a
# while, and spinning threads of the last workload would steal the cores of the next one.
SWITCH_PAUSE = 0.005

# Sessions a whole-network record pools by default (bench rows, a table's networks, search's final check):
# ten records of one network over 20 minutes, taken back to back with 3 loads and with 1, agreed within
# +-4.1% and +-8.8% outside the host's slowdowns (docs/results-epyc-avx2.md). Blocks and profiles take one.
NETWORK_SESSIONS = 3

# one runner (one inference per call), or several sessions of one artifact timed in turn (see the docstring)
Runners = Callable[[], Any] | Sequence[Callable[[], Any]]


def as_sessions(run: Runners) -> list[Callable[[], Any]]:
    """`run` as a non-empty list of sessions."""
    runs = list(run) if isinstance(run, Sequence) else [run]
    if not runs:
        raise ValueError("no runner to time")
    return runs


@functools.lru_cache(maxsize=4096)
def median_ci_rank(n: int, confidence: float = CONFIDENCE) -> int:
    """The 1-based rank k of the order-statistic interval [x(k), x(n+1-k)] of the median of `n` samples:
    the largest k with P(Binomial(n, 1/2) <= k - 1) <= (1 - confidence) / 2, or 1 when n is too small
    (the interval is then the whole range, with less than `confidence` coverage)."""
    alpha = (1.0 - confidence) / 2
    if n > 1000:  # the normal approximation is exact to a rank here (and 2^n overflows a float beyond)
        return max(1, math.floor(n / 2 - statistics.NormalDist().inv_cdf(1 - alpha) * math.sqrt(n) / 2))
    total, cdf, k = 2**n, 0, 0
    while k < n // 2:
        cdf += math.comb(n, k)  # cdf = P(B <= k) * 2^n
        if cdf > alpha * total:
            break
        k += 1
    return max(k, 1)


def median_interval(ms: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high) interval of the median of `ms` (in time order): the order-statistic interval, widened
    to contain the medians of the first and the second half (see the module docstring)."""
    ranked = sorted(ms)
    k = median_ci_rank(len(ranked), confidence)
    low, high = ranked[k - 1], ranked[len(ranked) - k]
    if len(ms) >= 2 * MIN_SAMPLES:
        halves = statistics.median(ms[: len(ms) // 2]), statistics.median(ms[len(ms) // 2 :])
        low, high = min(low, *halves), max(high, *halves)
    return low, high


@dataclass(frozen=True)
class Timing:
    """Per-call latency statistics in milliseconds over `iters` timed calls.

    ci_low_ms..ci_high_ms: the median's confidence interval (see the module docstring); ci_rel its larger
    half-width relative to the median; noisy: the protocol stopped at its time cap before the interval
    reached its target width (the median is then known only to ci_rel). Records written before the
    stopping rule have no interval: `from_dict` gives them None and noisy False.
    """

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    cv: float  # std / mean of the per-call times
    iters: int
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    ci_rel: float | None = None
    noisy: bool = False

    @classmethod
    def from_samples(
        cls, seconds: list[float], *, target_rel: float | None = None, confidence: float = CONFIDENCE
    ) -> Timing:
        """Statistics of per-call `seconds` in time order; `noisy` when `target_rel` is given and the
        median's interval is wider than it."""
        if not seconds:
            raise ValueError("no samples")
        in_order = [s * 1e3 for s in seconds]
        ms = sorted(in_order)
        mean = statistics.fmean(ms)
        std = statistics.pstdev(ms) if len(ms) > 1 else 0.0
        p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
        median = statistics.median(ms)
        low, high = median_interval(in_order, confidence)
        rel = max(median - low, high - median) / median if median > 0 else 0.0
        return cls(
            median,
            p90,
            ms[0],
            mean,
            std / mean if mean > 0 else 0.0,
            len(ms),
            low,
            high,
            rel,
            target_rel is not None and rel > target_rel,
        )

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Timing:
        """A Timing from a record's fields (bench row, LUT entry); fields a record predates get their
        defaults, so records written before the stopping rule load."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        """`12.31 ms [12.10, 12.52]`, `12.31 ms [11.40, 13.90] noisy`, or a bare median for old records."""
        if self.ci_low_ms is None:
            return f"{self.median_ms:.2f} ms"
        return f"{self.median_ms:.2f} ms [{self.ci_low_ms:.2f}, {self.ci_high_ms:.2f}]{' noisy' if self.noisy else ''}"


def default_threads() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """Pin torch's intra-op pool to `threads` (runtimes take the same number in their own options)."""
    import torch

    if threads < 1:
        raise LatvitError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class StoppingRule:
    """When a measurement has its answer: at least `iters` calls and `min_seconds` (the minimums), then
    the median's interval within +-`target_rel` (None: stop at the minimums, the fixed-count protocol);
    `max_seconds` caps it all (with at least 5 calls)."""

    iters: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 120.0
    target_rel: float | None = TARGET_REL
    confidence: float = CONFIDENCE

    def check(self, warmup: int = 0) -> None:
        """Raise the one-line error for settings no measurement can run with (`warmup`: calls before it)."""
        if warmup < 0:
            raise LatvitError(f"bad protocol: warmup={warmup} (>= 0)")
        if (
            self.iters < 1
            or self.min_seconds < 0
            or self.max_seconds <= 0
            or (self.target_rel is not None and self.target_rel <= 0)
            or not 0 < self.confidence < 1
        ):
            raise LatvitError(
                f"bad protocol: iters={self.iters} (>= 1), min_seconds={self.min_seconds} (>= 0), "
                f"max_seconds={self.max_seconds} (> 0), target_rel={self.target_rel} (> 0 or None), "
                f"confidence={self.confidence} (in (0, 1))"
            )

    def reached_minimums(self, n: int, elapsed: float) -> bool:
        return n >= self.iters and elapsed >= self.min_seconds

    def capped(self, n: int, elapsed: float) -> bool:
        return elapsed >= self.max_seconds and n >= 5

    def interval_ok(self, seconds: list[float]) -> bool:
        """The median's interval of `seconds` (in time order) is within +-target_rel."""
        if self.target_rel is None:
            return True
        if len(seconds) < MIN_SAMPLES:
            return False
        low, high = median_interval(seconds, self.confidence)
        median = statistics.median(seconds)
        return median <= 0 or max(median - low, high - median) / median <= self.target_rel

    def timing(self, seconds: list[float]) -> Timing:
        return Timing.from_samples(seconds, target_rel=self.target_rel, confidence=self.confidence)


class Sampler:
    """Times calls of one runner into `samples` and says when its `StoppingRule` is satisfied. The
    interval is re-evaluated only when the count has grown by a tenth, so a sort per check stays cheap
    for calls of microseconds."""

    def __init__(self, rule: StoppingRule, clock: Callable[[], float] = time.perf_counter):
        self.rule, self.clock = rule, clock
        self.samples: list[float] = []
        self._next_check = MIN_SAMPLES

    def time_call(self, run: Callable[[], Any]) -> None:
        t0 = self.clock()
        run()
        self.samples.append(self.clock() - t0)

    def done(self, elapsed: float) -> bool:
        """Whether to stop after `elapsed` seconds of measuring."""
        n = len(self.samples)
        if self.rule.capped(n, elapsed):
            return True
        if not self.rule.reached_minimums(n, elapsed):
            return False
        if self.rule.target_rel is None:
            return True
        if n < self._next_check:
            return False
        self._next_check = n + max(1, n // 10)
        return self.rule.interval_ok(self.samples)

    def timing(self) -> Timing:
        return self.rule.timing(self.samples)


def collect_samples(
    run: Runners,
    *,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    target_rel: float | None = TARGET_REL,
    confidence: float = CONFIDENCE,
    round_seconds: float = ROUND_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Per-call seconds of `run()` (one inference) after `warmup` calls, until the `StoppingRule` of the
    other arguments says the median is known (see the module docstring). `run` may be several sessions of
    one artifact: each is warmed up, then they are timed in turn for `round_seconds` each, and the rule is
    judged only after whole cycles, so every session weighs alike. `clock` is injectable (tests)."""
    rule = StoppingRule(iters, min_seconds, max_seconds, target_rel, confidence)
    rule.check(warmup)
    runs = as_sessions(run)
    for session in runs:
        for _ in range(warmup):
            session()
    sampler = Sampler(rule, clock)
    start = clock()
    if len(runs) == 1:
        while True:
            sampler.time_call(runs[0])
            if sampler.done(clock() - start):
                return sampler.samples
    for i in itertools.count(1):
        _round(sampler, runs[(i - 1) % len(runs)], round_seconds, clock)
        elapsed = clock() - start
        if rule.capped(len(sampler.samples), elapsed) or (i % len(runs) == 0 and sampler.done(elapsed)):
            return sampler.samples


def measure_latency(
    run: Runners,
    *,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 1.0,
    max_seconds: float = 120.0,
    target_rel: float | None = TARGET_REL,
    confidence: float = CONFIDENCE,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time `run()` (one inference) with `collect_samples` and return its statistics: at least `iters`
    calls and `min_seconds`, then until the median's interval is within +-`target_rel` (None: the old
    fixed count), at most `max_seconds` (then `noisy`)."""
    samples = collect_samples(
        run,
        warmup=warmup,
        iters=iters,
        min_seconds=min_seconds,
        max_seconds=max_seconds,
        target_rel=target_rel,
        confidence=confidence,
        clock=clock,
    )
    return Timing.from_samples(samples, target_rel=target_rel, confidence=confidence)


def measure_interleaved(
    runners: dict[str, Runners], rounds: int, *, alternate: bool = False, **protocol: Any
) -> dict[str, list[float]]:
    """Median ms of each runner per round, for comparing runners on a drifting host: every round times
    each runner once with `measure_latency(**protocol)`, so drift hits all alike; compare them by
    `median_ratio` of these lists. `alternate` reverses the order on odd rounds (against order effects).
    A round is a fixed count (`target_rel` None unless given): the rounds, not one long round, carry the
    statistics, and a round that ran on until its own interval closed would let the device drift under it."""
    protocol = {"target_rel": None, **protocol}
    order = list(runners.items())
    medians: dict[str, list[float]] = {label: [] for label in runners}
    for i in range(rounds):
        for label, run in order[::-1] if alternate and i % 2 else order:
            medians[label].append(measure_latency(run, **protocol).median_ms)
    return medians


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator (e.g. a speed-up from `measure_interleaved` lists)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


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


def collect_with_reference(
    run: Runners,
    ref_net: Runners,
    ref_gemm: Callable[[], Any],
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
    """Time `run()` (one inference) and the reference workload (`ref_net()`, one call of the reference network;
    `ref_gemm()`, one GEMM: `latvit.targets.reference`) in alternating rounds: `round_seconds` of work, then
    a quarter of that on the reference network and on the GEMM, again and again. Stops when both the work's
    and the reference network's medians are known to +-`target_rel` (and the work has at least `iters`
    calls and `min_seconds` of the whole measurement), or at `max_seconds` in all (then `noisy`). Several
    sessions in `run` (and in `ref_net`) take their rounds in turn, and the rule is judged after whole
    cycles of them. The other arguments mean what they mean for `collect_samples`."""
    rule = StoppingRule(iters, min_seconds, max_seconds, target_rel, confidence)
    rule.check(warmup)
    runs, ref_nets = as_sessions(run), as_sessions(ref_net)
    cycle = math.lcm(len(runs), len(ref_nets))
    ref_rule = StoppingRule(5, 0.0, max_seconds, target_rel, confidence)
    for session in runs:
        for _ in range(warmup):
            session()
    for _ in range(3):
        for ref_session in ref_nets:
            ref_session()
        ref_gemm()
    work, net, gemm = Sampler(rule, clock), Sampler(ref_rule, clock), Sampler(ref_rule, clock)
    since = cpu_times()
    start = clock()
    for i in itertools.count(1):
        _round(work, runs[(i - 1) % len(runs)], round_seconds, clock)
        _round(net, ref_nets[(i - 1) % len(ref_nets)], round_seconds * REFERENCE_SHARE, clock)
        _round(gemm, ref_gemm, round_seconds * REFERENCE_SHARE / 4, clock)
        elapsed = clock() - start
        whole_cycle = i % cycle == 0
        if rule.capped(len(work.samples), elapsed) or (whole_cycle and work.done(elapsed) and net.done(elapsed)):
            break
    return ReferencedSamples(work.samples, net.samples, gemm.samples, device_state(since), rule)


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """Metadata every record carries: CPU, cores, threads used, OS, Python and torch versions."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": default_threads(),
        "threads": threads,
        "platform": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "latvit_version": __version__,
    }


# -- the device's state around a measurement ----------------------------------------------------------------
def cpu_times() -> tuple[int, ...] | None:
    """The aggregate `cpu` line of /proc/stat (jiffies: user nice system idle iowait irq softirq steal ...),
    a snapshot for `device_state(since=...)`; None where the OS has no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields_ = f.readline().split()
    except OSError:
        return None
    return tuple(int(v) for v in fields_[1:]) if fields_ and fields_[0] == "cpu" else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def device_state(since: tuple[int, ...] | None = None) -> dict[str, Any]:
    """What the device is doing, where the OS says (every field None where it does not):

    cpu_mhz: mean current frequency of the CPUs (cpufreq's scaling_cur_freq; VMs often have none);
    governor: cpufreq governor of cpu0 ("performance", "powersave", "schedutil", ...);
    load_1m: the 1-minute load average (runnable tasks, this measurement's own included);
    steal_pct, busy_pct: over the interval since the `cpu_times()` snapshot `since`, the share of CPU time
        the hypervisor gave to other guests, and the share not idle (this measurement included).
    """
    cpus = Path("/sys/devices/system/cpu")
    freqs = [int(v) for v in (_read(p) for p in cpus.glob("cpu[0-9]*/cpufreq/scaling_cur_freq")) if v and v.isdigit()]
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = None
    state: dict[str, Any] = {
        "cpu_mhz": round(statistics.fmean(freqs) / 1e3, 1) if freqs else None,
        "governor": _read(cpus / "cpu0/cpufreq/scaling_governor"),
        "load_1m": load,
        "steal_pct": None,
        "busy_pct": None,
    }
    now = cpu_times()
    if since is not None and now is not None and len(now) == len(since):
        delta = [b - a for a, b in zip(since, now)]
        total = sum(delta[:8])  # user..steal; guest time is already counted in user
        if total > 0:
            idle = delta[3] + delta[4]  # idle + iowait
            state["busy_pct"] = round(100 * (total - idle) / total, 1)
            state["steal_pct"] = round(100 * delta[7] / total, 2) if len(delta) > 7 else None
    return state


def gemm_peak_gflops(threads: int, size: int = 1024, seconds: float = 1.0) -> float:
    """The machine's practical fp32 peak: the best GFLOP/s of a square `size` GEMM in torch (MKL/oneDNN)
    with `threads` threads. Density is reported as a share of this, a roofline measured in the same run."""
    import torch

    set_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size**3
    for _ in range(3):
        torch.mm(a, b)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def thread_settings() -> dict[str, Any]:
    """The thread settings this process runs with: the OpenMP/MKL/OpenBLAS variables and torch's pools
    (when torch is imported). `run_isolated(..., threads=N)` children report N everywhere."""
    settings: dict[str, Any] = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    if torch is not None:
        settings |= {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads()}
    return settings


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a child process that must not oversubscribe the cores."""
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env[var] = str(threads)
    return env


@dataclass(frozen=True)
class IsolatedResult:
    ok: bool
    value: Any = None  # the function's JSON-serialisable return value when ok
    error: str = ""  # one line saying what went wrong otherwise
    seconds: float = 0.0


def run_isolated(target: str, kwargs: dict[str, Any], *, timeout: float, threads: int | None = None) -> IsolatedResult:
    """Call `target` ("package.module:function") with `kwargs` in a fresh Python process.

    The function's return value must be JSON-serialisable. A crash (non-zero exit, segfault) or a run
    past `timeout` seconds (the whole process group is killed) comes back as ok=False with a one-line
    reason; nothing raised in the child escapes into the caller.

    Isolation from oneself: with `threads`, the child gets exactly that many threads (OMP_NUM_THREADS,
    MKL_NUM_THREADS and OPENBLAS_NUM_THREADS in its environment, and `torch.set_num_threads` in the worker
    once the target's module is imported); the runtimes take the same number in their own options. The
    parent spins nothing meanwhile: it blocks in `communicate` (a poll on the child's stderr, no thread),
    and its own torch/OpenMP workers fall asleep after their spin-wait, so the cores are the child's
    (tests/test_protocol.py measures the parent's CPU time while a child runs).
    """
    with tempfile.TemporaryDirectory(prefix="latvit-iso-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"target": target, "kwargs": kwargs, "result": str(result), "threads": threads}))
        env = thread_env(threads) if threads else dict(os.environ)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "latvit.targets.worker", str(request)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group ended on its own in the meantime
                pass
            proc.communicate()
            return IsolatedResult(
                False, error=f"timed out after {timeout:g} s (killed)", seconds=time.perf_counter() - start
            )
        seconds = time.perf_counter() - start
        if result.is_file():
            payload = json.loads(result.read_text())
            if payload.get("ok"):
                return IsolatedResult(True, payload["value"], seconds=seconds)
            return IsolatedResult(False, error=payload["error"], seconds=seconds)
        lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return IsolatedResult(False, error=f"crashed ({how}){': ' + lines[-1] if lines else ''}", seconds=seconds)
