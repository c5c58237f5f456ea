"""fp32 vs token merging vs int8 vs 50% sparsity, per runtime: latency ratios in one run, and top-1.

Every variant of a model is prepared first, then all are timed round-robin for `--rounds` rounds (so
machine drift hits each alike); each row gives the variant's median and its speed-up over fp32 on the
same runtime. Each exported variant first runs once in a child process: one the runtime cannot export or
run, even one that crashes it, becomes a failed row with the reason, and the others are still measured.

Without checkpoints it measures the seed models at their default size (random weights: latency only).
With `--checkpoint MODEL=RUN_DIR/best` (repeatable; a `latvit.save` directory, e.g. from `latvit train` on
Fashion-MNIST, or `timm:NAME=RUN_DIR` with the weights of benchmarks/train_timm_fashion_mnist.py) it also
reports test top-1 of every variant, at the checkpoint's own input size:
- fp32, ToMe (r tokens per layer or an entrance merge, `--tome`) and sparse (global magnitude pruning, no fine-tuning): eager
  PyTorch, the same function the runtimes run;
- int8: each runtime's own artifact (`latvit.deploy.quantize`, `--recipe`, default `vit`), calibrated on
  `--calib-images` training images, run on that runtime `--batch` images at a time.
Latency is measured at `--batch` images per call (default 1); token merging's cost is per call, so its
speed-up grows with the batch.

    python benchmarks/compression.py [--models a,b] [--runtimes ort,openvino] [--tome 16[,32,...]] [--threads 2]
    python benchmarks/compression.py --checkpoint mobilevit_xxs=runs/fmnist-mobilevit_xxs-32-e20-n60000/best \\
        --checkpoint efficientformerv2_s0=runs/fmnist-efficientformerv2_s0-32-e15-n60000/best
    python benchmarks/compression.py --checkpoint timm:deit_tiny_patch16_224=runs/fmnist-deit_tiny_patch16_224-224-e2-n20000 \\
        --tome 8,13,16 --batch 8

Writes JSON (machine metadata + flat rows) to benchmarks/results/compression.json, or
compression_fmnist.json with checkpoints (`--json` to choose), and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

from latvit.deploy import deploy
from latvit.deploy.quantize import calibration_batches, quantize, validation_batches
from latvit.deploy.sparsity import sparsify, sparsity_report
from latvit.deploy.token_merging import TomeReport, parse_tome, tome
from latvit.errors import LatvitError
from latvit.pipeline.resolve import resolve_model
from latvit.runtimes import get_runtime
from latvit.targets.protocol import default_threads, machine_info, measure_interleaved, run_isolated, set_threads
from latvit.train.evaluate import eval_crop_pct
from latvit.utils import atomic_write_text

SEEDS = ["efficientformer_l1", "efficientformerv2_s1", "mobilevit_xxs", "mobilevit_s"]
RESULTS = Path(__file__).resolve().parent / "results"
INT8_RUNTIMES = ("ort", "openvino", "executorch")


def parse_r_list(text: str) -> list[str]:
    """'16', '16,32,64' or '13,26x6,keep0.25' -> ['16', ...], each a `parse_tome` entry ('RxL': R tokens merged
    in each of the first L layers; 'keepF': merged at each transformer's entrance until the fraction F is
    left); 'none' -> [] (no token-merging rows). An argparse type: a bad value is a one-line usage error."""
    if text.strip() == "none":
        return []
    values = [v.strip() for v in text.split(",")]
    for v in values:
        try:
            parse_tome(v)
        except LatvitError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return values


def parse_checkpoints(items: list[str]) -> dict[str, Path]:
    """['NAME=DIR', ...] -> {NAME: DIR}; DIR must be a latvit.save directory (it holds spec.json), or for
    NAME = timm:MODEL a run directory of train_timm_fashion_mnist.py (it holds model.safetensors)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise LatvitError(f"--checkpoint {item}: expected MODEL=RUN_DIR/best")
        if name.startswith("timm:"):
            if not (Path(path) / "model.safetensors").is_file():
                raise LatvitError(
                    f"--checkpoint {item}: {path} holds no model.safetensors "
                    f"(train one with benchmarks/train_timm_fashion_mnist.py)"
                )
        elif not (Path(path) / "spec.json").is_file():
            raise LatvitError(f"--checkpoint {item}: {path} is not a latvit.save directory (no spec.json)")
        out[name] = Path(path)
    return out


def load_trained(name: str, checkpoint: Path):
    """A trained model, resolved (`latvit.pipeline.resolve.ResolvedModel`) with its weights loaded."""
    if not name.startswith("timm:"):
        return resolve_model(str(checkpoint))
    from safetensors.torch import load_file

    resolved = resolve_model(name)
    state = load_file(str(checkpoint / "model.safetensors"))
    resolved.model.reset_classifier(state[resolved.model.pretrained_cfg["classifier"] + ".weight"].shape[0])
    resolved.model.load_state_dict(state)
    resolved.model.eval()
    return resolved


def training_crop_pct(checkpoint: Path) -> float:
    """The evaluation crop the run was trained and validated with (RUN/config.yaml next to RUN/best, or
    the timm run's train.json), as `latvit validate` uses it; timm's 0.875 when the directory is not a run."""
    if (checkpoint / "train.json").is_file():
        return float(json.loads((checkpoint / "train.json").read_text()).get("crop_pct", 0.875))
    return eval_crop_pct(checkpoint)


def evaluation_set(data: str, img_size: int, mean, std, count: int, crop_pct: float = 0.875):
    """The first `count` test ('val' split) images of `data`, transformed for evaluation: (N, 3, S, S), (N,)."""
    from latvit.data import eval_transform, open_dataset

    dataset = open_dataset(data, "val")
    transform = eval_transform(img_size, mean, std, crop_pct=crop_pct)
    idx = range(min(count, len(dataset)))
    return (torch.stack([transform(dataset[i][0]) for i in idx]).numpy(), np.array([int(dataset[i][1]) for i in idx]))


def top1(run, images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    """Top-1 (%) of `run` (numpy (B, 3, S, S) -> logits) over the set, `batch` images per call (a short last
    batch is padded with copies of its first image, for artifacts exported at a static batch)."""
    correct = 0
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        padded = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])
        correct += int((np.asarray(run(padded))[: len(chunk)].argmax(-1) == labels[i : i + batch]).sum())
    return 100.0 * correct / len(images)


def eager(model: torch.nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return run


def load_checked(rt, path: Path, x: np.ndarray, threads: int):
    """`rt.load`, after the artifact has run once in a child process: a program that crashes the runtime's
    native code (merged EfficientFormerV2 segfaults ExecuTorch 1.5.1) raises here instead of taking the
    whole benchmark down when it is measured."""
    probe = run_isolated(
        "latvit.runtimes:run_artifact_once",
        {"runtime": rt.name, "path": str(path), "shape": list(x.shape)},
        timeout=600,
    )
    if not probe.ok:
        raise LatvitError(f"the exported program fails on {rt.name}: {probe.error}")
    return rt.load(path, torch.from_numpy(x), threads)


def prepare_checked(rt, model: torch.nn.Module, x: np.ndarray, threads: int, workdir: Path):
    """`rt.prepare` with `load_checked`."""
    if rt.suffix is None:  # no artifact (eager, inductor): nothing native to isolate
        return rt.prepare(model, torch.from_numpy(x), threads, workdir)
    return load_checked(rt, rt.export(model, torch.from_numpy(x), workdir / f"model{rt.suffix}"), x, threads)


def measure_model(name: str, source, args, rows: list[dict]) -> None:
    """All variants of one model on every runtime; appends flat rows."""
    # latvit names, saved directories and timm:NAME; trained weights with --checkpoint
    resolved = load_trained(name, source) if args.checkpoint else resolve_model(str(source))
    base, size, mean, std = resolved.model, resolved.img_size, resolved.mean, resolved.std
    fp32 = deploy(base)
    report = TomeReport()  # which layers merge does not depend on r: one report, from the first
    merged = {
        (f"tome {r}" if "keep" in r else f"tome r={r}"): tome(fp32, report=report if i == 0 else None, **parse_tome(r))
        for i, r in enumerate(args.tome)
    }
    variants = {"fp32": fp32, **merged}
    info = {"model": name, "img_size": size, "batch": args.batch, "tome_merged_layers": report.merged_layers}
    if args.sparsity > 0:
        variants[f"sparse {args.sparsity:.0%}"] = sparse = sparsify(fp32, args.sparsity)
        info["sparsity"] = round(sparsity_report(sparse)["prunable_sparsity"], 4)
    # the test set and accuracy control see the images as the run was trained to; calibration at --calib-crop
    crop_pct = training_crop_pct(Path(source)) if args.checkpoint else 0.875
    info.update(crop_pct=crop_pct, calib_crop=args.calib_crop)
    calib = calibration_batches(
        args.calib, size, mean, std, count=args.calib_images, batch=args.batch, crop_pct=args.calib_crop
    )
    x = calib[0]
    accuracy = {}
    eval_set = None
    if args.checkpoint:
        eval_set = evaluation_set(args.data, size, mean, std, args.eval_images, crop_pct)
        accuracy = {label: top1(eager(m), *eval_set, batch=250) for label, m in variants.items()}
        print(f"{name}: top-1 " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()), flush=True)
    for rt_name in args.runtimes.split(","):
        rt = get_runtime(rt_name)
        if rt.cannot_run():
            print(f"{rt_name}: {rt.cannot_run()}")
            continue
        with tempfile.TemporaryDirectory(prefix="latvit-compression-") as tmp:
            runners = {}
            for i, (label, m) in enumerate(variants.items()):
                try:
                    runners[label] = prepare_checked(rt, m, x, args.threads, Path(tmp) / str(i))
                except Exception as e:  # a variant the runtime cannot export or run: a row that says so, not a crash
                    if label == "fp32":
                        raise
                    reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:120]
                    rows.append({**info, "runtime": rt_name, "variant": label, "error": reason})
                    print(f"{name:22s} {rt_name:10s} {label:12s} failed: {reason}", flush=True)
            acc = dict(accuracy)
            if rt_name in INT8_RUNTIMES:
                control = {}
                if args.max_drop is not None and rt_name == "openvino":  # NNCF's accuracy control
                    control = {
                        "max_drop": args.max_drop,
                        "validation": validation_batches(
                            args.calib, size, mean, std, count=args.val_images, batch=args.batch, crop_pct=crop_pct
                        ),
                    }
                path = quantize(fp32, rt_name, calib, Path(tmp) / "int8" / "model.x", recipe=args.recipe, **control)
                runners["int8"] = load_checked(rt, path, x, args.threads)
                if eval_set is not None:  # int8 artifacts are exported at --batch
                    acc["int8"] = top1(runners["int8"], *eval_set, batch=args.batch)
            medians = measure_interleaved(
                {label: partial(run, x) for label, run in runners.items()},
                args.rounds,
                warmup=3,
                iters=5,
                min_seconds=args.seconds,
            )
            base_ms = statistics.median(medians["fp32"])
            for label in runners:
                ms = statistics.median(medians[label])
                row = {
                    **info,
                    "runtime": rt_name,
                    "variant": label,
                    "median_ms": ms,
                    "speedup": base_ms / ms,
                    "rounds_ms": medians[label],
                    "top1": acc.get(label),
                    "top1_drop": (acc["fp32"] - acc[label]) if label in acc else None,
                }
                rows.append(row)
                print(
                    f"{name:22s} {rt_name:10s} {label:12s} {ms:8.2f} ms  x{base_ms / ms:.2f}"
                    + (f"  top-1 {acc[label]:.2f}" if label in acc else ""),
                    flush=True,
                )


def markdown(rows: list[dict]) -> str:
    lines = ["| model | runtime | variant | ms | vs fp32 | top-1 | drop |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['runtime']} | {r['variant']} | failed: {r['error']} | | | |")
            continue
        t = "" if r["top1"] is None else f"{r['top1']:.2f}"
        d = "" if r["top1_drop"] is None else f"{r['top1_drop']:+.2f}"
        lines.append(
            f"| {r['model']} | {r['runtime']} | {r['variant']} | {r['median_ms']:.2f} | "
            f"{r['speedup']:.2f}x | {t} | {d} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SEEDS), help="zoo models or timm:NAME (ignored with --checkpoint)")
    ap.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="MODEL=RUN_DIR/best",
        help="a trained model to measure and evaluate (repeatable)",
    )
    ap.add_argument("--data", default="fashion-mnist", help="test set for top-1 (default fashion-mnist)")
    ap.add_argument("--calib", default=None, help="int8 calibration images (default: --data's training split)")
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--calib-crop", type=float, default=0.875, help="calibration images' centre-crop fraction")
    ap.add_argument("--eval-images", type=int, default=10000, help="test images for top-1 (default: all)")
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--recipe", default="vit", help="int8 recipe (vit, all or transformer)")
    ap.add_argument(
        "--tome",
        type=parse_r_list,
        default=[16],
        help="tokens merged per transformer layer; a comma list measures several (e.g. 16,32,64); "
        "RxL merges R in each of the first L layers only (e.g. 26x6); keepF merges each "
        "transformer's tokens at its entrance until the fraction F is left (e.g. keep0.25)",
    )
    ap.add_argument(
        "--max-drop",
        type=float,
        help="OpenVINO int8 with accuracy control: top-1 points allowed on --val-images labelled training images",
    )
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--sparsity", type=float, default=0.5, help="pruned fraction of the sparse row; 0: no sparse row")
    ap.add_argument("--batch", type=int, default=1, help="images per call for latency (and int8 artifacts)")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--json", help="output (default benchmarks/results/compression[_fmnist].json)")
    args = ap.parse_args(argv)
    args.calib = args.calib or args.data
    if args.batch < 1:
        ap.error(f"--batch must be >= 1, got {args.batch}")
    sources = parse_checkpoints(args.checkpoint) if args.checkpoint else {m: m for m in args.models.split(",")}
    set_threads(args.threads)
    rows: list[dict] = []
    for name, source in sources.items():
        measure_model(name, source, args, rows)
    result = {
        "format": "latvit-compression/1",
        "machine": machine_info(args.threads),
        "batch": args.batch,
        "tome_r": args.tome,
        "sparsity": args.sparsity,
        "recipe": args.recipe,
        "max_drop": args.max_drop,
        "data": args.data if args.checkpoint else None,
        "eval_images": args.eval_images if args.checkpoint else None,
        "calib_images": args.calib_images,
        "checkpoints": {k: str(v) for k, v in sources.items()} if args.checkpoint else None,
        "rows": rows,
    }
    default = "compression_fmnist.json" if args.checkpoint else "compression.json"
    out = Path(args.json) if args.json else RESULTS / default
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")
    print(markdown(rows))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except LatvitError as e:
        sys.exit(f"compression.py: error: {e}")
