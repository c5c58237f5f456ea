"""LiteRT (TFLite) fp32 and int8 against ONNX Runtime, OpenVINO and ExecuTorch, measured in one run.

For each model (at its default size, batch 1): the deployed model is exported to every runtime, then all
runners are timed interleaved round by round (`measure_interleaved`, alternating order), and every ratio
is the median of per-round ratios. Rows:
- LiteRT fp32 against each other fp32 runtime (the issue's goal: within 1.3x of the fastest);
- LiteRT int8 (`latvit.deploy.quantize`, runtime litert, Fashion-MNIST calibration images) against
  LiteRT fp32 (goal: >= 1.8x on EfficientFormer-L1) and against the other runtimes' fp32.
With `--checkpoint MODEL=RUN_DIR` (a `latvit train` run on Fashion-MNIST), top-1 of fp32 and int8 LiteRT on
`--test-images` test images; without one, the int8 row reports agreement with fp32 only.

    python benchmarks/litert.py [--models efficientformer_l1,mobilevit_xxs] [--threads 2] [--rounds 5]
        [--seconds 1] [--calib-images 128] [--checkpoint efficientformer_l1=runs/l1] [--max-drop 0.5]
        [--val-images 500]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from latvit.deploy import deploy
from latvit.deploy.quantize import calibration_batches, quantize, validation_batches
from latvit.errors import LatvitError
from latvit.pipeline.resolve import resolve_model
from latvit.runtimes import get_runtime
from latvit.targets.protocol import machine_info, measure_interleaved, median_ratio, set_threads
from latvit.train.evaluate import eval_crop_pct

MODELS = ["efficientformer_l1", "mobilevit_xxs"]
OTHERS = ["ort", "openvino", "executorch"]


def prepare_runners(
    model, example, threads: int, workdir: Path, calib: list[np.ndarray], max_drop=None, validation=None, log=None
) -> tuple[dict, dict]:
    """({label: runner}, {label: why it is missing}) for LiteRT fp32 and int8 (with accuracy control when
    `max_drop` is given, judged on `validation`) and the other fp32 runtimes."""
    runners, missing = {}, {}
    for name in ["litert", *OTHERS]:
        rt = get_runtime(name)
        try:
            runners[name] = rt.prepare(model, example, threads, workdir / name)
        except LatvitError as e:
            missing[name] = str(e)
    if "litert" in runners:
        path = quantize(
            model, "litert", calib, workdir / "int8.tflite", max_drop=max_drop, validation=validation, log=log
        )
        runners["litert_int8"] = get_runtime("litert").load(path, example, threads)
    return runners, missing


def top1(run, images: np.ndarray, labels: np.ndarray) -> float:
    hits = sum(int(run(images[i : i + 1]).argmax(-1)[0] == labels[i]) for i in range(len(images)))
    return 100.0 * hits / len(images)


def test_images(size: int, mean, std, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` Fashion-MNIST test images, transformed as `latvit validate` does (crop 1.0)."""
    from latvit.data import eval_transform, open_dataset

    dataset, transform = open_dataset("fashion-mnist", "val"), eval_transform(size, mean, std, crop_pct=1.0)
    picks = [dataset[i] for i in range(min(count, len(dataset)))]
    return torch.stack([transform(img) for img, _ in picks]).numpy(), np.array([int(y) for _, y in picks])


def measure(name: str, args, checkpoint: str | None) -> dict:
    resolved = resolve_model(checkpoint or name, None)
    model, size = deploy(resolved.model).eval(), resolved.img_size
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    calib = calibration_batches("fashion-mnist", size, resolved.mean, resolved.std, count=args.calib_images)
    validation = None
    if args.max_drop is not None:  # labelled training images (none calibrates), at the run's crop as the CLI does
        crop = eval_crop_pct(checkpoint or name)
        validation = validation_batches(
            "fashion-mnist", size, resolved.mean, resolved.std, count=args.val_images, crop_pct=crop
        )
    control = []  # what accuracy control did, as `latvit quantize` prints it
    with tempfile.TemporaryDirectory(prefix="latvit-litert-bench-") as tmp:
        runners, missing = prepare_runners(
            model, example, args.threads, Path(tmp), calib, args.max_drop, validation, log=control.append
        )
        x = example.numpy()
        with torch.inference_mode():
            reference = model(example).numpy()
        diffs = {label: float(np.abs(np.asarray(run(x)) - reference).max()) for label, run in runners.items()}
        images, labels = test_images(size, resolved.mean, resolved.std, args.test_images)
        fp32_top = np.array([runners["litert"](images[i : i + 1]).argmax(-1)[0] for i in range(len(images))])
        int8_top = np.array([runners["litert_int8"](images[i : i + 1]).argmax(-1)[0] for i in range(len(images))])
        accuracy = {"agreement": float((fp32_top == int8_top).mean() * 100), "images": len(images)}
        if checkpoint:
            accuracy.update(
                fp32_top1=float((fp32_top == labels).mean() * 100), int8_top1=float((int8_top == labels).mean() * 100)
            )
        ms = measure_interleaved(
            {label: (lambda run=run: run(x)) for label, run in runners.items()},
            rounds=args.rounds,
            alternate=True,
            warmup=5,
            iters=20,
            min_seconds=args.seconds,
        )
    medians = {label: float(np.median(v)) for label, v in ms.items()}
    fastest_fp32 = min((label for label in medians if label != "litert_int8"), key=medians.get)
    return {
        "model": name,
        "img_size": size,
        "checkpoint": checkpoint,
        "max_drop": args.max_drop,
        "val_images": args.val_images if args.max_drop is not None else None,
        "accuracy_control": control,
        "median_ms": medians,
        "litert_fp32_over": {o: median_ratio(ms["litert"], ms[o]) for o in OTHERS if o in ms},
        "int8_speedup_over_litert_fp32": median_ratio(ms["litert"], ms["litert_int8"]),
        "litert_int8_over": {o: median_ratio(ms["litert_int8"], ms[o]) for o in OTHERS if o in ms},
        "fastest_fp32": fastest_fp32,
        "max_abs_diff": diffs,
        "accuracy": accuracy,
        "missing": missing,
    }


def table(rows: list[dict]) -> str:
    """Markdown rows: per model, each runtime's median and LiteRT's ratios (time / other's time)."""
    lines = [
        "| model | size | runtime | median ms | LiteRT fp32 / this | LiteRT int8 / this | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for label, ms in sorted(r["median_ms"].items(), key=lambda kv: kv[1]):
            fp = r["litert_fp32_over"].get(label, 1.0 if label == "litert" else None)
            i8 = r["litert_int8_over"].get(
                label,
                1 / r["int8_speedup_over_litert_fp32"]
                if label == "litert"
                else (1.0 if label == "litert_int8" else None),
            )
            lines.append(
                f"| {r['model']} | {r['img_size']} | {label} | {ms:.2f} | "
                f"{'' if fp is None else f'{fp:.2f}x'} | {'' if i8 is None else f'{i8:.2f}x'} | "
                f"{r['max_abs_diff'][label]:.1e} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (ratios: median of per-round ratios)")
    ap.add_argument("--seconds", type=float, default=1.0, help="seconds per round per runtime")
    ap.add_argument("--calib-images", type=int, default=128, help="int8 calibration images (Fashion-MNIST train)")
    ap.add_argument("--test-images", type=int, default=500, help="Fashion-MNIST test images for int8 accuracy")
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=RUN",
        help="a trained Fashion-MNIST run (saved model dir) for MODEL: top-1 of fp32 and int8",
    )
    ap.add_argument(
        "--max-drop",
        type=float,
        metavar="POINTS",
        help="int8 with accuracy control (`latvit quantize --max-drop`) on --val-images labelled training images",
    )
    ap.add_argument("--val-images", type=int, default=500, help="images accuracy control judges on (as the CLI's)")
    ap.add_argument("--json", default="litert_bench.json")
    args = ap.parse_args()
    set_threads(args.threads)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = []
    for name in args.models.split(","):
        rows.append(measure(name, args, checkpoints.get(name)))
        print(json.dumps(rows[-1]), flush=True)
    Path(args.json).write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=1) + "\n")
    print(table(rows))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
