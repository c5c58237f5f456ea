"""latvit's deployed seed models against the same timm models exported the ordinary way.

For each seed model: timm.create_model(NAME) exported the ordinary way (ONNX Runtime:
`torch.onnx.export(model, (x,), path)` with torch's defaults; OpenVINO: `ov.convert_model(model,
example_input=x)`, which leaves the input shape dynamic), versus latvit.create_model(NAME) carrying
the *same weights* (loaded from the timm model's state dict) and passed through `latvit.deploy`, on ONNX
Runtime and OpenVINO. Both paths are measured in this one run, interleaved round by round (the order
alternates) so drift on a shared machine hits both alike; the speedup is the median over rounds of the
per-round ratio, plus the ratio of the best timm path to the best latvit path. Outputs are checked to be
identical (max abs diff).

`--bf16` adds OpenVINO in bf16 (`openvino_bf16`, on CPUs with AMX or AVX512-BF16) for both paths: a
precision change (logits move by ~0.5% of their scale), so its rows are reported apart and never count
towards the fp32 best-vs-best ratio. (OpenVINO's own default on such CPUs is bf16; the fp32 rows pin f32
on both paths.)

    python benchmarks/deploy_vs_timm.py [--models a,b] [--runtimes ort,openvino] [--threads 2] [--rounds 5]
        [--seconds 2] [--bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import timm
import torch

import latvit
from latvit.deploy import deploy
from latvit.runtimes import get_runtime
from latvit.runtimes.openvino import RUNTIME_BF16
from latvit.targets.protocol import (
    default_threads,
    gemm_peak_gflops,
    machine_info,
    measure_interleaved,
    median_ratio,
    set_threads,
)

SEEDS = [
    "efficientformer_l1",
    "efficientformerv2_s0",
    "efficientformerv2_s1",
    "mobilevit_xxs",
    "mobilevit_xs",
    "mobilevit_s",
]


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
    import openvino as ov  # OpenVINO: ov.convert_model from the torch model (dynamic shapes, its default)

    workdir.mkdir(parents=True, exist_ok=True)
    ov.save_model(
        ov.convert_model(model.eval(), example_input=x), str(workdir / "model.xml"), compress_to_fp16=False
    )  # fp32 weights, as latvit's export
    return rt.load(workdir / "model.xml", x, threads)  # the same compile settings as latvit's path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SEEDS))
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds per path (speedup: median of per-round ratios)"
    )
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per round per path")
    ap.add_argument("--bf16", action="store_true", help="also measure openvino_bf16 (a precision change)")
    ap.add_argument("--json", default="deploy_vs_timm.json")
    args = ap.parse_args()
    set_threads(args.threads)
    names = args.runtimes.split(",") + (["openvino_bf16"] if args.bf16 else [])
    runtimes = [get_runtime(r) if r != "openvino_bf16" else RUNTIME_BF16 for r in names]
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
                medians = measure_interleaved(
                    {"timm": partial(run_timm, xn), "latvit": partial(run_ours, xn)},
                    args.rounds,
                    alternate=True,
                    warmup=3,
                    iters=5,
                    min_seconds=args.seconds,
                )
            timm_ms, ours_ms = statistics.median(medians["timm"]), statistics.median(medians["latvit"])
            speedup = median_ratio(medians["timm"], medians["latvit"])
            row = {
                "model": name,
                "runtime": rt.name,
                "runtime_version": rt.version(),
                "timm_ms": timm_ms,
                "latvit_ms": ours_ms,
                "speedup": speedup,
                "max_abs_diff": diff,
                "max_rel_diff": diff / float(np.abs(expected).max()),
                "latvit_pct_peak": 100 * flops / (ours_ms / 1e3) / 1e9 / peak,
                "spread_timm_ms": [min(medians["timm"]), max(medians["timm"])],
                "spread_latvit_ms": [min(medians["latvit"]), max(medians["latvit"])],
            }
            rows.append(row)
            print(
                f"{name:22s} {rt.name:13s} timm {timm_ms:7.2f} ms  latvit {ours_ms:7.2f} ms  "
                f"x{row['speedup']:.2f}  diff {diff:.1e}  {row['latvit_pct_peak']:.0f}% of peak",
                flush=True,
            )
    summary = []
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name and r["runtime"] != "openvino_bf16"]  # fp32 only
        if not mine:
            continue
        best_timm = min(r["timm_ms"] for r in mine)
        best_ours = min(r["latvit_ms"] for r in mine)
        entry = {
            "model": name,
            "best_timm_ms": best_timm,
            "best_latvit_ms": best_ours,
            "speedup_best_vs_best": best_timm / best_ours,
        }
        line = (
            f"{name:22s} best timm {best_timm:7.2f} ms  best latvit {best_ours:7.2f} ms  x{best_timm / best_ours:.2f}"
        )
        bf16 = [r for r in rows if r["model"] == name and r["runtime"] == "openvino_bf16"]
        if bf16:  # a precision change: reported next to, never inside, the fp32 ratio
            entry["latvit_bf16_vs_best_timm_fp32"] = best_timm / bf16[0]["latvit_ms"]
            line += (
                f"  (latvit bf16 {bf16[0]['latvit_ms']:.2f} ms: "
                f"x{entry['latvit_bf16_vs_best_timm_fp32']:.2f}, precision change)"
            )
        summary.append(entry)
        print(line)
    out = {"machine": machine_info(args.threads) | {"gemm_peak_gflops": peak}, "rows": rows, "summary": summary}
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
