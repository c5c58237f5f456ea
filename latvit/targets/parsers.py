"""Readers of the device benchmark tools' outputs, for targets that time with a runtime's own binary.

- LiteRT `benchmark_model`: a summary line per phase, `count=N first= curr= min= max= avg= std=` in
  microseconds, newer builds adding `p5= median= p95=` (tensorflow's StatWithPercentiles): aggregates only.
- ExecuTorch `executor_runner --num_executions=N`: newer builds log `Iteration i of N: X ms` per call (real
  samples, the first `warmup` dropped here); older ones only `Model executed successfully N time(s) in X ms`.
- ONNX Runtime `onnxruntime_perf_test`: the mean, min, max and P50/P90/P95/P99 over its runs: aggregates.
- TensorRT `trtexec --exportTimes=FILE`: a JSON list with one object per timed iteration (`latencyMs`:
  host-to-device copy + compute + device-to-host copy, what latvit's TensorRT runner times): real samples.

Where a tool gives only aggregates, the result says so (`stats_source: "aggregate"`) and carries the tool's
own numbers: a median only where the tool printed one, never one derived here from a mean.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from latvit.errors import LatvitError

# the Android runners latvit pushes, and the runtime (artifact kind) each times
RUNNER_RUNTIMES = {"benchmark_model": "litert", "executor_runner": "executorch", "onnxruntime_perf_test": "ort"}
AGGREGATE_FIELDS = ("count", "mean_ms", "median_ms", "p90_ms", "min_ms", "max_ms", "std_ms")


class RunnerOutputError(LatvitError):
    """A device tool's output has no result (it failed, or its format is one this reader does not know)."""


@dataclass
class RunnerStats:
    """What a device tool reported. samples: seconds per timed call in order ([] when the tool prints only
    aggregates); aggregate: the tool's own summary in ms (AGGREGATE_FIELDS; None where it printed none)."""

    runner: str
    samples: list[float] = field(default_factory=list)
    aggregate: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. init time, first inference, version

    @property
    def stats_source(self) -> str:
        return "samples" if self.samples else "aggregate"


def _aggregate(**values: Any) -> dict[str, Any]:
    return {k: values.get(k) for k in AGGREGATE_FIELDS}


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


# -- LiteRT benchmark_model ------------------------------------------------------------------------------
_STAT_PAIR = re.compile(r"(\w+)=(-?[0-9.eE+-]+|nan|inf)")


def _stat_line(line: str) -> dict[str, float]:
    """`count=50 first=1 curr=2 min=1 max=3 avg=2 std=0 p5=1 median=2 p95=3` (or `count=5 curr=7(all same)`)."""
    values = {k: float(v) for k, v in _STAT_PAIR.findall(line)}
    if "(all same)" in line or ("curr" in values and "min" not in values):
        values.update(min=values["curr"], max=values["curr"], avg=values["curr"], std=0.0)
        values.setdefault("median", values["curr"])
    return values


def parse_benchmark_model(text: str) -> RunnerStats:
    """The timed phase of LiteRT's `benchmark_model` (the stats line after the last "Running benchmark")."""
    if "Inference timings in us" not in text:
        raise RunnerOutputError(f"benchmark_model printed no timings: {_last_line(text)}")
    tail = text[text.rfind("Running benchmark") :]
    line = next((ln for ln in tail.splitlines() if "count=" in ln), None)
    if line is None:
        raise RunnerOutputError(f"benchmark_model printed no statistics line: {_last_line(text)}")
    v = _stat_line(line[line.index("count=") :])
    us = 1e-3  # microseconds -> ms
    stats = RunnerStats(
        "benchmark_model",
        aggregate=_aggregate(
            count=int(v["count"]),
            mean_ms=v["avg"] * us,
            min_ms=v["min"] * us,
            max_ms=v["max"] * us,
            std_ms=v["std"] * us,
            median_ms=v["median"] * us if "median" in v else None,
        ),
    )
    summary = re.search(r"Init: ([0-9.eE+-]+), First inference: ([0-9.eE+-]+), Warmup \(avg\): ([0-9.eE+-]+)", text)
    if summary:
        stats.extra.update(
            init_ms=float(summary[1]) * us, first_ms=float(summary[2]) * us, warmup_mean_ms=float(summary[3]) * us
        )
    return stats


# -- ExecuTorch executor_runner ---------------------------------------------------------------------------
def parse_executor_runner(text: str, warmup: int = 0) -> RunnerStats:
    """Per-iteration times of `executor_runner` (the first `warmup` dropped), or the total of older builds."""
    iterations = [float(ms) for ms in re.findall(r"Iteration \d+ of \d+: ([0-9.eE+-]+) ms", text)]
    if iterations:
        timed = iterations[warmup:]
        if not timed:
            raise RunnerOutputError(f"executor_runner ran {len(iterations)} iterations, all of them warm-up")
        return RunnerStats("executor_runner", samples=[ms / 1e3 for ms in timed], extra={"warmup": warmup})
    total = re.search(r"Model executed successfully (\d+) time\(s\) in ([0-9.eE+-]+) ms", text)
    if total:
        n, ms = int(total[1]), float(total[2])
        # an older build: one total over every execution, warm-up included; the mean is all it gives
        return RunnerStats(
            "executor_runner", aggregate=_aggregate(count=n, mean_ms=ms / n), extra={"includes_warmup": warmup}
        )
    errors = [ln for ln in text.splitlines() if re.match(r"^E \d\d:", ln)]
    raise RunnerOutputError(f"executor_runner did not finish: {(errors[-1] if errors else _last_line(text))[:200]}")


# -- ONNX Runtime onnxruntime_perf_test ------------------------------------------------------------------------
def parse_perf_test(text: str) -> RunnerStats:
    """The summary `onnxruntime_perf_test` prints (latencies in seconds, the mean in ms)."""

    def number(pattern: str) -> float | None:
        m = re.search(pattern + r"\s*([0-9.eE+-]+)", text)
        return float(m[1]) if m else None

    mean = number(r"Average inference time cost:")
    if mean is None:
        raise RunnerOutputError(f"onnxruntime_perf_test printed no timings: {_last_line(text)}")
    count = number(r"Total inference requests:") or number(r"Runs:")
    seconds = {
        k: number(rf"{label} Latency:") for k, label in (("min", "Min"), ("max", "Max"), ("p50", "P50"), ("p90", "P90"))
    }
    ms = {k: v * 1e3 if v is not None else None for k, v in seconds.items()}
    stats = RunnerStats(
        "onnxruntime_perf_test",
        aggregate=_aggregate(
            count=int(count) if count else None,
            mean_ms=mean,
            median_ms=ms["p50"],
            p90_ms=ms["p90"],
            min_ms=ms["min"],
            max_ms=ms["max"],
        ),
    )
    first = number(r"First inference time cost:")
    if first is not None:
        stats.extra["first_ms"] = first
    return stats


# -- TensorRT trtexec --------------------------------------------------------------------------------------
def parse_trtexec_times(text: str) -> RunnerStats:
    """`trtexec --exportTimes` JSON: one object per timed iteration; the samples are `latencyMs`."""
    try:
        rows = json.loads(text)
        samples = [float(r["latencyMs"]) / 1e3 for r in rows]
    except (ValueError, TypeError, KeyError) as e:
        raise RunnerOutputError(
            f"trtexec's --exportTimes file is not a list of iterations with latencyMs ({e})"
        ) from None
    if not samples or not all(math.isfinite(s) and s >= 0 for s in samples):
        raise RunnerOutputError("trtexec's --exportTimes file has no valid iterations")
    return RunnerStats("trtexec", samples=samples)


def parse_trtexec_version(log: str) -> str | None:
    """ "tensorrt 10.3.0" from trtexec's log: its `TensorRT version: X.Y.Z` line, else the `[TensorRT vNNNN]`
    banner (8502 -> 8.5.2; 100300 -> 10.3.0)."""
    m = re.search(r"TensorRT version: (\d+\.\d+\.\d+)", log)
    if m:
        return f"tensorrt {m[1]}"
    m = re.search(r"\[TensorRT v(\d{4,6})\]", log)
    if not m:
        return None
    v = m[1]
    major, minor, patch = (v[:-4], v[-4:-2], v[-2:]) if len(v) >= 6 else (v[0], v[1], v[2:])
    return f"tensorrt {int(major)}.{int(minor)}.{int(patch)}"
