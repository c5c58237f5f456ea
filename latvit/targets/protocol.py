"""One measurement protocol for every latency latvit reports (bench rows, LUT entries, profiles).

- threads are set explicitly (torch and the runtime's own setting; OMP/MKL variables for subprocesses);
- the runner is warmed up, then timed one call at a time for at least `iters` calls *and* at least
  `min_seconds`, so fast models get many samples and slow ones still get `iters`;
- results are the median, p90, min, mean and coefficient of variation (std / mean) of per-call times:
  medians because a 2-core machine shares its cores with the OS, and the CV says how much to trust them;
- each measurement can run in an isolated subprocess with a timeout (`run_isolated`), so a runtime that
  crashes or hangs becomes a failed record while the rest goes on;
- `machine_info` and `gemm_peak_gflops` give the metadata and the roofline every record carries.
"""
from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from latvit.errors import LatvitError


@dataclass(frozen=True)
class Timing:
    """Per-call latency statistics in milliseconds over `iters` timed calls."""

    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    cv: float  # std / mean of the per-call times
    iters: int

    @classmethod
    def from_samples(cls, seconds: list[float]) -> "Timing":
        if not seconds:
            raise ValueError("no samples")
        ms = sorted(s * 1e3 for s in seconds)
        mean = statistics.fmean(ms)
        std = statistics.pstdev(ms) if len(ms) > 1 else 0.0
        p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
        return cls(statistics.median(ms), p90, ms[0], mean, std / mean if mean > 0 else 0.0, len(ms))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


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


def measure_latency(run: Callable[[], Any], *, warmup: int = 10, iters: int = 50, min_seconds: float = 1.0,
                    max_seconds: float = 120.0) -> Timing:
    """Time `run()` (one inference) with `collect_samples` and summarise the per-call times."""
    return Timing.from_samples(collect_samples(run, warmup=warmup, iters=iters, min_seconds=min_seconds,
                                               max_seconds=max_seconds))


def collect_samples(run: Callable[[], Any], *, warmup: int = 10, iters: int = 50, min_seconds: float = 1.0,
                    max_seconds: float = 120.0) -> list[float]:
    """Per-call seconds of `run()` after `warmup` calls: at least `iters` calls and `min_seconds`, stopping
    early only when `max_seconds` is reached with at least 5 samples. Every target times with this loop (a
    remote agent runs the same code there and sends the raw samples back)."""
    if warmup < 0 or iters < 1 or min_seconds < 0:
        raise LatvitError(f"bad protocol: warmup={warmup} (>= 0), iters={iters} (>= 1), min_seconds={min_seconds} (>= 0)")
    for _ in range(warmup):
        run()
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if len(samples) >= iters and elapsed >= min_seconds:
            break
        if elapsed >= max_seconds and len(samples) >= 5:
            break
    return samples


def measure_interleaved(runners: dict[str, Callable[[], Any]], rounds: int, *, alternate: bool = False,
                        **protocol: Any) -> dict[str, list[float]]:
    """Median ms of each runner per round, for comparing runners on a drifting host: every round times
    each runner once with `measure_latency(**protocol)`, so drift hits all alike; compare them by
    `median_ratio` of these lists. `alternate` reverses the order on odd rounds (against order effects)."""
    order = list(runners.items())
    medians: dict[str, list[float]] = {label: [] for label in runners}
    for i in range(rounds):
        for label, run in order[::-1] if alternate and i % 2 else order:
            medians[label].append(measure_latency(run, **protocol).median_ms)
    return medians


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator / denominator (e.g. a speed-up from `measure_interleaved` lists)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


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

    import latvit

    return {"cpu": cpu_model(), "cores": default_threads(), "threads": threads,
            "platform": platform.platform(terse=True), "python": platform.python_version(),
            "torch_version": torch.__version__, "latvit_version": latvit.__version__}


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


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a child process that must not oversubscribe the cores."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
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
    """
    with tempfile.TemporaryDirectory(prefix="latvit-iso-") as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(json.dumps({"target": target, "kwargs": kwargs, "result": str(result)}))
        env = thread_env(threads) if threads else dict(os.environ)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "latvit.targets.worker", str(request)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the group ended on its own in the meantime
                pass
            proc.communicate()
            return IsolatedResult(False, error=f"timed out after {timeout:g} s (killed)",
                                  seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if result.is_file():
            payload = json.loads(result.read_text())
            if payload.get("ok"):
                return IsolatedResult(True, payload["value"], seconds=seconds)
            return IsolatedResult(False, error=payload["error"], seconds=seconds)
        lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
        how = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return IsolatedResult(False, error=f"crashed ({how}){': ' + lines[-1] if lines else ''}", seconds=seconds)
