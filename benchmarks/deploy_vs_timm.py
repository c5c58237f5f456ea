"""latvit's deployed seed models against the same timm models exported the ordinary way.

For each seed model: timm.create_model(NAME) exported the ordinary way (ONNX Runtime:
`torch.onnx.export(model, (x,), path)` with torch's defaults; OpenVINO: `ov.convert_model`), versus latvit.create_model(NAME) carrying
the *same weights* (loaded from the timm model's state dict) and passed through `latvit.deploy`, on ONNX
Runtime and OpenVINO. Both paths are measured in this one run, interleaved round by round so drift on a
shared machine hits both alike; the result is a ratio per model and runtime, plus the ratio of the best
timm path to the best latvit path. Outputs are checked to be identical (max abs diff).

    python benchmarks/deploy_vs_timm.py [--models a,b] [--runtimes ort,openvino] [--threads 2] [--rounds 5]
        [--seconds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import timm
import torch

import latvit
from latvit.deploy import deploy
from latvit.latency.protocol import default_threads, gemm_peak_gflops, machine_info, measure_latency, set_threads
from latvit.runtimes import get_runtime

SEEDS = ["efficientformer_l1", "efficientformerv2_s0", "efficientformerv2_s1", "mobilevit_xxs", "mobilevit_xs",
         "mobilevit_s"]


def pair(name: str):
    """(timm model, latvit deployed model with the same weights, example input)."""
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False).eval()
    ours = latvit.create_model(name, checkpoint=reference.state_dict()).eval()
    size = ours.spec.img_size
    return reference, deploy(ours), torch.randn(1, 3, size, size)


def ordinary_runner(rt, model, x: torch.Tensor, threads: int, workdir: Path):
    """How a user runs a timm model on the runtime without latvit (same thread count for fairness)."""
    if rt.name == "ort":
        import warnings

        workdir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(workdir / "model.onnx"), verbose=False)
        return rt.load(workdir / "model.onnx", x, threads)
    return rt.prepare(model, x, threads, workdir)  # OpenVINO: ov.convert_model from the torch model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SEEDS))
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds per path (median of round medians)")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per round per path")
    ap.add_argument("--json", default="deploy_vs_timm.json")
    args = ap.parse_args()
    set_threads(args.threads)
    runtimes = [get_runtime(r) for r in args.runtimes.split(",")]
    runtimes = [rt for rt in runtimes if rt.cannot_run() is None]
    peak = gemm_peak_gflops(args.threads)
    rows = []
    for name in args.models.split(","):
        reference, ours, x = pair(name)
        flops = latvit.spec_cost(ours.spec).flops
        xn = x.numpy()
        for rt in runtimes:
            with tempfile.TemporaryDirectory() as tmp:
                run_timm = ordinary_runner(rt, reference, x, args.threads, Path(tmp) / "timm")
                run_ours = rt.prepare(ours, x, args.threads, Path(tmp) / "latvit")
                with torch.no_grad():
                    expected = reference(x).numpy()
                diff = float(max(np.abs(run_timm(xn) - expected).max(), np.abs(run_ours(xn) - expected).max()))
                medians = {"timm": [], "latvit": []}
                for _ in range(args.rounds):
                    for label, run in (("timm", run_timm), ("latvit", run_ours)):
                        t = measure_latency(lambda: run(xn), warmup=3, iters=5, min_seconds=args.seconds)
                        medians[label].append(t.median_ms)
            timm_ms, ours_ms = statistics.median(medians["timm"]), statistics.median(medians["latvit"])
            row = {"model": name, "runtime": rt.name, "runtime_version": rt.version(), "timm_ms": timm_ms,
                   "latvit_ms": ours_ms, "speedup": timm_ms / ours_ms, "max_abs_diff": diff,
                   "latvit_pct_peak": 100 * flops / (ours_ms / 1e3) / 1e9 / peak,
                   "spread_timm_ms": [min(medians["timm"]), max(medians["timm"])],
                   "spread_latvit_ms": [min(medians["latvit"]), max(medians["latvit"])]}
            rows.append(row)
            print(f"{name:22s} {rt.name:9s} timm {timm_ms:7.2f} ms  latvit {ours_ms:7.2f} ms  "
                  f"x{row['speedup']:.2f}  diff {diff:.1e}  {row['latvit_pct_peak']:.0f}% of peak", flush=True)
    summary = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        best_timm = min(r["timm_ms"] for r in mine)
        best_ours = min(r["latvit_ms"] for r in mine)
        summary.append({"model": name, "best_timm_ms": best_timm, "best_latvit_ms": best_ours,
                        "speedup_best_vs_best": best_timm / best_ours})
        print(f"{name:22s} best timm {best_timm:7.2f} ms  best latvit {best_ours:7.2f} ms  x{best_timm / best_ours:.2f}")
    out = {"machine": machine_info(args.threads) | {"gemm_peak_gflops": peak}, "rows": rows, "summary": summary}
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
