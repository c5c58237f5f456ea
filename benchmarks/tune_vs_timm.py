"""`latvit tune` against timm's model exported the ordinary way to ONNX Runtime fp32, on a trained checkpoint.

1. `latvit tune RUN/best --data fashion-mnist --max-drop 0.5` with its default budget (timed: the goal is at
   most 15 minutes per model);
2. the winner's artifact and the fp32 PyTorch model evaluated on the whole test set (the drop the goal
   bounds at 0.5 point; tune itself judges on `--eval-images` held-out images);
3. timm's model of the same architecture, exported with `torch.onnx.export`'s defaults and run by ONNX
   Runtime with all cores (random weights: latency does not depend on them), timed interleaved with the
   winner's runner in one run (median of the per-round ratios; the goal is >= 2.0x).

Writes `tune_vs_timm_<model>.json` with the winner, the axis gains tune reports, both top-1s and the ratio.

    python benchmarks/tune_vs_timm.py RUN/best --timm mobilevit_xxs [--max-drop 0.5] [--rounds 7]
        [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import timm
import torch
from deploy_vs_timm import ordinary_runner  # the ordinary export, as that benchmark defines it

from latvit.pipeline.resolve import resolve_model
from latvit.runtimes import get_runtime
from latvit.targets.protocol import default_threads, machine_info, measure_interleaved, median_ratio, set_threads
from latvit.train.evaluate import eval_crop_pct
from latvit.tune import tune_model
from latvit.tune.candidates import Candidate
from latvit.tune.run import eval_batches, top1, torch_runner
from latvit.utils import atomic_write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a trained latvit model directory (RUN/best)")
    ap.add_argument("--timm", required=True, help="timm's name for the same architecture")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out-dir", default="benchmarks/results")
    args = ap.parse_args()

    threads = default_threads()
    with tempfile.TemporaryDirectory(prefix="latvit-tune-vs-timm-") as work:
        work = Path(work)
        start = time.perf_counter()
        # the runtimes that write a deployable artifact (eager has none to hand over)
        runtimes = [r for r in ("ort", "openvino", "executorch", "litert") if not get_runtime(r).missing()]
        result = tune_model(
            args.model, args.data, args.max_drop, runtimes=runtimes, output=work / "tuned", progress=False
        )
        tune_s = time.perf_counter() - start
        best = result["winner"]
        winner = Candidate(best["runtime"], best["precision"], best["tome"], best["threads"])

        resolved = resolve_model(args.model)
        size, classes = resolved.img_size, int(resolved.model.num_classes)
        crop = eval_crop_pct(args.model)
        test = eval_batches(args.data, classes, size, resolved.mean, resolved.std, 10**9, 1, crop)
        x = torch.from_numpy(test[0][0])
        set_threads(winner.threads)
        tuned = get_runtime(winner.run_runtime).load(work / "tuned" / result["artifact"], x, winner.threads)
        fp32_top1 = 100 * top1(torch_runner(resolved.model), test)
        tuned_top1 = 100 * top1(tuned, test)

        set_threads(threads)
        timm_model = timm.create_model(args.timm, pretrained=False, num_classes=classes).eval()
        timm_run = ordinary_runner(get_runtime("ort"), timm_model, x, threads, work / "timm")
        xn = x.numpy()
        medians = measure_interleaved(
            {"timm": lambda: timm_run(xn), "tuned": lambda: tuned(xn)}, args.rounds, alternate=True, min_seconds=2.0
        )
        timm_ms, tuned_ms = medians["timm"], medians["tuned"]
    record = {
        "model": args.model,
        "timm": args.timm,
        "machine": machine_info(threads),
        "img_size": size,
        "tune_minutes": round(tune_s / 60, 2),
        "winner": best,
        "axis_gains": result.get("axis_gains"),
        "recipe": result.get("recipe"),
        "test_images": sum(len(y) for _, y in test),
        "fp32_top1": fp32_top1,
        "tuned_top1": tuned_top1,
        "drop": fp32_top1 - tuned_top1,
        "timm_ort_ms": statistics.median(timm_ms),
        "tuned_ms": statistics.median(tuned_ms),
        "speedup_vs_timm_ort": median_ratio(timm_ms, tuned_ms),
    }
    name = Path(args.model).parent.name if Path(args.model).name in ("best", "model") else Path(args.model).name
    path = Path(args.out_dir) / f"tune_vs_timm_{name}.json"
    atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
    print(
        f"{args.model}: tune {record['tune_minutes']:.1f} min, winner {best['key']}; top-1 {tuned_top1:.2f}% vs "
        f"fp32 {fp32_top1:.2f}% on {record['test_images']} test images; {record['speedup_vs_timm_ort']:.2f}x "
        f"timm's ordinary ORT fp32 ({record['timm_ort_ms']:.3f} -> {record['tuned_ms']:.3f} ms) -> {path}"
    )


if __name__ == "__main__":
    main()
