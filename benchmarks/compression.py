"""fp32 vs token merging vs int8 vs 50% sparsity for the seed models, per runtime, as ratios in one run.

Every variant of a model is prepared first, then all are timed round-robin for `--rounds` rounds (so
machine drift hits each alike); the table gives each variant's median and its speed-up over fp32 on the
same runtime. With `--checkpoints DIR` (directories written by `latvit train`/`latvit.save`, one per
model name, trained on Fashion-MNIST) it also reports top-1 on the Fashion-MNIST test split per variant.

    python benchmarks/compression.py [--models a,b] [--runtimes ort,openvino] [--tome 16] [--threads 2]
        [--checkpoints runs/] [--json compression.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import latvit
from latvit.deploy import deploy
from latvit.deploy.quantize import calibration_batches, quantize
from latvit.deploy.sparsity import make_permanent, prune_magnitude
from latvit.deploy.token_merging import tome
from latvit.latency.protocol import default_threads, machine_info, measure_latency, set_threads
from latvit.runtimes import get_runtime

SEEDS = ["efficientformer_l1", "efficientformerv2_s1", "mobilevit_xxs", "mobilevit_s"]


def top1(run, images: np.ndarray, labels: np.ndarray, batch: int) -> float:
    correct = 0
    for i in range(0, len(images), batch):
        correct += int((np.asarray(run(images[i:i + batch])).argmax(-1) == labels[i:i + batch]).sum())
    return 100.0 * correct / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(SEEDS))
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--tome", type=int, default=16, help="tokens merged per transformer layer")
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--checkpoints", help="directory with one latvit.save directory per model (Fashion-MNIST)")
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--json", default="compression.json")
    args = ap.parse_args()
    set_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        ckpt = Path(args.checkpoints) / name if args.checkpoints else None
        base = latvit.create_model(ckpt if ckpt else name).eval()
        spec = base.spec
        fp32 = deploy(base)
        variants = {"fp32": fp32, f"tome r={args.tome}": tome(fp32, args.tome),
                    f"sparse {args.sparsity:.0%}": make_permanent(prune_magnitude(fp32, args.sparsity))}
        calib = calibration_batches("fashion-mnist", spec.img_size, spec.mean, spec.std, count=32)
        x = calib[0]
        eval_set = None
        if ckpt:
            from latvit.train.data import eval_transform, open_dataset

            data = open_dataset("fashion-mnist", "val")
            tf = eval_transform(spec.img_size, spec.mean, spec.std)
            idx = range(min(args.eval_images, len(data)))
            eval_set = (torch.stack([tf(data[i][0]) for i in idx]).numpy(), np.array([data[i][1] for i in idx]))
        for rt_name in args.runtimes.split(","):
            rt = get_runtime(rt_name)
            if rt.cannot_run():
                print(f"{rt_name}: {rt.cannot_run()}")
                continue
            with tempfile.TemporaryDirectory() as tmp:
                runners = {label: rt.prepare(m, torch.from_numpy(x), args.threads, Path(tmp) / str(i))
                           for i, (label, m) in enumerate(variants.items())}
                if rt_name in ("ort", "openvino", "executorch"):
                    path = quantize(fp32, rt_name, calib, Path(tmp) / "int8" / "model.x")
                    runners["int8"] = rt.load(path, torch.from_numpy(x), args.threads)
                medians = {label: [] for label in runners}
                for _ in range(args.rounds):
                    for label, run in runners.items():
                        medians[label].append(measure_latency(lambda: run(x), warmup=3, iters=5,
                                                              min_seconds=args.seconds).median_ms)
                base_ms = statistics.median(medians["fp32"])
                for label, run in runners.items():
                    ms = statistics.median(medians[label])
                    acc = top1(run, *eval_set, batch=1) if eval_set else None
                    rows.append({"model": name, "runtime": rt_name, "variant": label, "median_ms": ms,
                                 "speedup": base_ms / ms, "top1": acc})
                    print(f"{name:20s} {rt_name:9s} {label:14s} {ms:8.2f} ms  x{base_ms / ms:.2f}"
                          + (f"  top-1 {acc:.1f}" if acc is not None else ""), flush=True)
    Path(args.json).write_text(json.dumps({"machine": machine_info(args.threads), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
