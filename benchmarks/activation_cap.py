"""How far int8 can speed up a model whose activations int8 kernels compute in float: Amdahl's law, measured.

For each pair MODEL=VARIANT (the same spec with a cheap activation, e.g. `NetSpec.with_act("relu")`), both
models are built with random weights, deployed, exported and quantized (synthetic calibration: speed does not
depend on the weights), and all four (fp32 and int8 of each) are timed round-robin for `--rounds` rounds, so
host drift hits each alike. From the medians of per-round ratios:

- activation share: 1 - VARIANT fp32 / MODEL fp32, the fp32 time the model's activations cost beyond the
  cheap one's;
- int8 cap: 1 / (share + (1 - share) / R), with R the variant's int8 speed-up: the model's int8 speed-up if
  everything but its activations gained what the variant gains and the activations cost in int8 what they
  cost in fp32 (int8 kernels compute them in float). A measured ratio below the cap means they cost more.

    python benchmarks/activation_cap.py                      # MobileViT-S and EfficientFormerV2-S1, OpenVINO
    python benchmarks/activation_cap.py --pairs mobilevit_s=benchmarks/specs/mobilevit_s_relu.json --threads 1

Writes JSON (machine metadata + one row per pair) to benchmarks/results/activation_cap.json (`--json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from functools import partial
from pathlib import Path

import torch

from latvit.deploy import deploy
from latvit.deploy.quantize import QUANT_RUNTIMES, calibration_batches, quantize
from latvit.pipeline.resolve import resolve_model
from latvit.runtimes import get_runtime
from latvit.targets.protocol import default_threads, machine_info, measure_interleaved, median_ratio, set_threads
from latvit.utils import atomic_write_text

SPECS = Path(__file__).resolve().parent / "specs"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PAIRS = [
    f"mobilevit_s={SPECS / 'mobilevit_s_relu.json'}",
    f"efficientformerv2_s1={SPECS / 'efficientformerv2_s1_relu.json'}",
]


def prepare_pair(pair: tuple[str, str], runtime: str, threads: int, calib_images: int, workdir: Path) -> dict:
    """(MODEL, VARIANT) -> {'model fp32': (run, x), 'model int8': ..., 'variant fp32': ..., 'variant int8': ...}:
    each `run` maps its input `x` (numpy, the model's own size) to logits."""
    rt = get_runtime(runtime)
    runners = {}
    for role, ref in zip(("model", "variant"), pair):
        resolved = resolve_model(ref)
        model, size = deploy(resolved.model), resolved.img_size
        calibration = calibration_batches("synthetic", size, resolved.mean, resolved.std, count=calib_images)
        x = calibration[0]
        (workdir / role).mkdir()
        runners[f"{role} fp32"] = rt.prepare(model, torch.from_numpy(x), threads, workdir / role), x
        int8 = quantize(model, runtime, calibration, workdir / role / f"int8{rt.suffix}")
        runners[f"{role} int8"] = rt.load(int8, torch.from_numpy(x), threads), x
    return runners


def measure_pair(pair: tuple[str, str], args) -> dict:
    with tempfile.TemporaryDirectory(prefix="latvit-actcap-") as tmp:
        runners = prepare_pair(pair, args.runtime, args.threads, args.calib_images, Path(tmp))
        ms = measure_interleaved(
            {label: partial(run, x) for label, (run, x) in runners.items()},
            args.rounds,
            warmup=5,
            iters=10,
            min_seconds=args.seconds,
        )

    def ratio(num: str, den: str) -> float:
        return median_ratio(ms[num], ms[den])

    share = 1 - ratio("variant fp32", "model fp32")
    variant_gain = ratio("variant fp32", "variant int8")
    return {
        "model": pair[0],
        "variant": pair[1],
        "runtime": args.runtime,
        "threads": args.threads,
        "median_ms": {label: round(statistics.median(v), 3) for label, v in ms.items()},
        "activation_share": round(share, 4),
        "variant_int8_speedup": round(variant_gain, 3),
        "model_int8_speedup": round(ratio("model fp32", "model int8"), 3),
        "int8_cap": round(1 / (share + (1 - share) / variant_gain), 3),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="MODEL=VARIANT[,MODEL=VARIANT...]")
    ap.add_argument("--runtime", default="openvino", choices=QUANT_RUNTIMES)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timing")
    ap.add_argument("--calib-images", type=int, default=16)
    ap.add_argument("--json", help="output (default benchmarks/results/activation_cap.json)")
    args = ap.parse_args(argv)
    pairs = [tuple(p.split("=", 1)) for p in args.pairs.split(",") if p]
    if any(len(p) != 2 for p in pairs):
        ap.error("--pairs takes MODEL=VARIANT items, e.g. mobilevit_s=benchmarks/specs/mobilevit_s_relu.json")
    set_threads(args.threads)
    rows = []
    for pair in pairs:
        row = measure_pair(pair, args)
        rows.append(row)
        print(
            f"{row['model']}: activations {100 * row['activation_share']:.1f}% of fp32 time; variant int8 "
            f"{row['variant_int8_speedup']:.2f}x -> cap {row['int8_cap']:.2f}x; measured {row['model_int8_speedup']:.2f}x",
            flush=True,
        )
    result = {"machine": machine_info(args.threads), "rounds": args.rounds, "rows": rows}
    out = Path(args.json) if args.json else RESULTS / "activation_cap.json"
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
