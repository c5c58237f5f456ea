"""Which reference workload moves with a network when the device drifts? (issue 25's ten repeats)

Drift correction divides a network's time by a reference's time from the same moment. The reference
network (latvit.targets.reference) is small and runs in cache; on a shared host the space's largest network
(its weights 54 MB, beyond L3) was seen to move by a few percent while that reference did not. Our reading:
the network feels a neighbour's memory traffic that an in-cache reference does not. This times, in
interleaved rounds for `--minutes`, one session each of:

- `net`: the space's largest network (what lut_drift repeats);
- `ref`: latvit's reference network (in cache);
- `gemm`: latvit's reference GEMM (256 x 256 fp32, in cache);
- `stream_l3`: three batch-1 Linear layers of 1024 x 1024 (12.6 MB of weights: beyond L2, within a 32 MB L3);
- `stream_dram`: three batch-1 Linear layers of 2048 x 2048 (50 MB: beyond L3, streamed from memory);

The run is cut in three equal phases: nothing else running; lut_drift's one-thread training loop on the
other core; a one-thread memory stream (copying 256 MB arrays) on the other core. A neighbour starting is
the drift a reference must follow. The rounds are then cut into windows of `--window` seconds and, per window, takes each workload's median. A
reference tracks the network when `net / reference` moves less across windows than `net` alone: the table
gives each correction's spread over all windows and over 10 evenly spaced ones (lut_drift's ten repeats,
without their fresh sessions: one session of each here, so only the moment moves).

    python benchmarks/reference_tracking.py [--minutes 20] [--window 30] [--threads 1]
        [--json benchmarks/results/reference_tracking.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lut_drift import DISTURBANCE, spread
from torch import nn

from latvit.latency.measure import build_model, inference_copy
from latvit.models.spaces import get_space
from latvit.runtimes import get_runtime
from latvit.targets.protocol import device_state, machine_info, measure_latency, set_threads
from latvit.targets.reference import prepare_reference

MEMORY_STREAM = """
import numpy as np
a, b = np.ones(32 * 2**20), np.empty(32 * 2**20)  # 256 MB each: far beyond any cache
while True:
    np.copyto(b, a); np.copyto(a, b)
"""
PHASES = (("quiet", None), ("training loop", DISTURBANCE), ("memory stream", MEMORY_STREAM))


def streaming_model(width: int, layers: int = 3) -> nn.Module:
    """Batch-1 Linear layers: each call reads every weight once, so its time is the weights' bandwidth."""
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).eval()


def log_correlation(a: list[float], b: list[float]) -> float:
    """Pearson correlation of log(a) and log(b): does one move when the other does?"""
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    ma, mb = statistics.fmean(la), statistics.fmean(lb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(la, lb))
    norm = math.sqrt(sum((x - ma) ** 2 for x in la) * sum((y - mb) ** 2 for y in lb))
    return cov / norm if norm else float("nan")


def spread_pct(values: list[float]) -> dict[str, float]:
    """lut_drift's `spread` (median, max_dev_pct, min, max) and max / min - 1 in percent."""
    s = spread(values)
    return {**s, "spread_pct": (s["max"] / s["min"] - 1) * 100}


def corrections(windows: list[dict]) -> dict[str, dict]:
    """Per correction of the network (none, or divided by one of the other workloads): its spread over all
    windows and over 10 evenly spaced ones, each phase's median against the quiet phase's, the
    log-correlation of the workload with the network and the workload's own spread."""
    every = max(1, len(windows) // 10)
    table = {}
    for ref in (None, *(label for label in windows[0] if label not in ("net", "phase"))):
        ratios = [w["net"] / (w[ref] if ref else 1.0) for w in windows]
        by_phase = {
            phase: statistics.median(r for r, w in zip(ratios, windows) if w["phase"] == phase) for phase, _ in PHASES
        }
        table[ref or "raw"] = {
            "phase_medians_vs_quiet": {k: v / by_phase["quiet"] for k, v in by_phase.items()},
            "all_windows": spread_pct(ratios),
            "ten_windows": spread_pct(ratios[::every][:10]),
            "log_correlation_with_net": log_correlation([w["net"] for w in windows], [w[ref] for w in windows])
            if ref
            else None,
            "reference_spread_pct": spread_pct([w[ref] for w in windows])["spread_pct"] if ref else None,
        }
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="efficientformer", help="its largest network is the one tracked")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=30.0, help="seconds of rounds per window (a record's length)")
    ap.add_argument("--json", default="benchmarks/results/reference_tracking.json")
    args = ap.parse_args()
    set_threads(args.threads)
    rt = get_runtime("ort")
    space = get_space(args.space)
    torch.manual_seed(0)
    workloads: dict[str, tuple[nn.Module, torch.Tensor]] = {
        "net": (
            inference_copy(build_model(space.spec(space.largest(), args.img_size)), True),
            torch.randn(1, 3, args.img_size, args.img_size),
        ),
        "stream_l3": (streaming_model(1024), torch.randn(1, 1024)),
        "stream_dram": (streaming_model(2048), torch.randn(1, 2048)),
    }
    reference = prepare_reference("ort", args.threads, sessions=1)
    with tempfile.TemporaryDirectory(prefix="latvit-tracking-") as tmp:
        runners = {}
        for label, (model, x) in workloads.items():
            run = rt.load(rt.export(model, x, Path(tmp) / f"{label}.onnx"), x, args.threads)
            runners[label] = lambda run=run, xn=x.numpy(): run(xn)
        runners["ref"], runners["gemm"] = reference.net[0], reference.gemm
        labels = list(runners)
        rounds: list[dict[str, float]] = []
        start = time.time()
        for phase, (name, script) in enumerate(PHASES):
            neighbour = subprocess.Popen([sys.executable, "-c", script]) if script else None
            try:
                while time.time() - start < (phase + 1) * args.minutes * 60 / len(PHASES):
                    order = labels if len(rounds) % 2 == 0 else labels[::-1]  # against order effects
                    row: dict = {"t": time.time() - start, "phase": name}
                    for label in order:
                        row[label] = measure_latency(
                            runners[label], warmup=2, iters=5, min_seconds=0.05, target_rel=None
                        ).median_ms
                    rounds.append(row)
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
    windows: list[dict[str, float]] = []
    for w in range(int(rounds[-1]["t"] // args.window) + 1):
        inside = [r for r in rounds if w * args.window <= r["t"] < (w + 1) * args.window]
        if len(inside) >= 5:
            windows.append(
                {
                    "phase": inside[0]["phase"],
                    **{label: statistics.median(r[label] for r in inside) for label in labels},
                }
            )
    table = corrections(windows)
    result = {
        "machine": machine_info(args.threads),
        "device_state": device_state(),
        "network": f"{args.space} largest at {args.img_size} px, ort, {args.threads} thread(s)",
        "minutes": args.minutes,
        "window_s": args.window,
        "rounds": rounds,
        "windows": windows,
        "corrections": table,
    }
    print(f"{len(rounds)} rounds, {len(windows)} windows of {args.window:.0f} s ({result['network']})")
    print(
        "correction      all windows: spread / max from median   ten windows: spread / max   corr(log)   "
        "ref spread   training / stream vs quiet"
    )
    for name, row in table.items():
        corr = f"{row['log_correlation_with_net']:.2f}" if row["log_correlation_with_net"] is not None else "-"
        ref_spread = f"{row['reference_spread_pct']:.1f}%" if row["reference_spread_pct"] is not None else "-"
        print(
            f"{name:14s}  {row['all_windows']['spread_pct']:6.1f}% / {row['all_windows']['max_dev_pct']:5.1f}%"
            f"               {row['ten_windows']['spread_pct']:6.1f}% / {row['ten_windows']['max_dev_pct']:5.1f}%"
            f"      {corr:>6s}      {ref_spread:>6s}"
            f"       {row['phase_medians_vs_quiet']['training loop']:.3f} / {row['phase_medians_vs_quiet']['memory stream']:.3f}"
        )
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
