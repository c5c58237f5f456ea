"""`latvit train` against a plain training loop: images per second with the same model, batch, input size
and threads, measured interleaved in one process.

- `latvit train`: the trainer itself (`latvit.train.engine.Trainer`, built from the same config the CLI
  builds) on Fashion-MNIST with the recipe's default augmentation (random-resized-crop + flip, bicubic),
  label smoothing, gradient clipping, EMA, the cosine schedule, its loader and core split, its default
  memory format; timed over its training steps, data included (what a run's `train_images_per_sec`
  reports; the per-epoch evaluation and checkpoint are not steps).
- `plain`: what a user writes without latvit: the same model (fresh weights), one fixed input tensor,
  forward, cross-entropy, backward, `torch.optim.AdamW` step, NCHW.
- `plain, channels-last`: the same loop in the trainer's memory format where that differs, so the ratio
  against it is the training loop's own overhead.
- `plain, timm` (`--timm`): timm's model of the same name in the plain loop (the issue's reference).

Every round times each runner once (`latvit.targets.protocol.measure_interleaved`, order alternating
between rounds);
ratios are medians over rounds of per-round ratios, so drift on a shared machine hits all runners alike.
`--profile` then prints the trainer's step breakdown (`latvit train --profile-steps`).

    python benchmarks/train_speed.py [--model mobilevit_xxs] [--batch-size 64] [--img-size 64] [--threads 2]
        [--steps 10] [--rounds 5] [--timm] [--profile] [--json train_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import latvit
from latvit.targets.protocol import machine_info, measure_interleaved, median_ratio
from latvit.train import make_config
from latvit.train.distributed import Dist
from latvit.train.engine import Trainer
from latvit.train.profiling import breakdown_table, profile_run


def plain_loop(
    model: torch.nn.Module,
    batch_size: int,
    img_size: int,
    num_classes: int,
    memory_format: torch.memory_format = torch.contiguous_format,
):
    """A function running N plain training steps on one fixed batch (forward, loss, backward, AdamW)."""
    model = model.to(memory_format=memory_format).train()
    images = torch.randn(batch_size, 3, img_size, img_size).contiguous(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (batch_size,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def steps(n: int) -> None:
        for _ in range(n):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()

    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilevit_xxs")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="training steps per timed call")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3, help="timed calls per runner per round (median)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra trainer config keys")
    ap.add_argument("--timm", action="store_true", help="also time timm's model of the same name in the plain loop")
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="then print the trainer's breakdown over STEPS profiled steps",
    )
    ap.add_argument("--json", default="train_speed.json")
    args = ap.parse_args()

    from latvit.train.config import parse_set

    load_before = os.getloadavg()
    config = make_config(
        model=args.model,
        data=args.data,
        img_size=args.img_size,
        batch_size=args.batch_size,
        threads=args.threads,
        progress=False,
        **parse_set(args.set),
    )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(config, Dist(), scratch=Path(scratch))  # sets torch's threads to args.threads
        num_classes = trainer.num_classes
        runners = {"latvit train": lambda: trainer.run_steps(args.steps)}
        torch.manual_seed(0)
        plain = plain_loop(
            latvit.create_model(args.model, num_classes=num_classes, img_size=args.img_size),
            args.batch_size,
            args.img_size,
            num_classes,
        )
        runners["plain"] = lambda: plain(args.steps)
        if trainer.memory_format != torch.contiguous_format:
            same = plain_loop(
                latvit.create_model(args.model, num_classes=num_classes, img_size=args.img_size),
                args.batch_size,
                args.img_size,
                num_classes,
                trainer.memory_format,
            )
            runners["plain, channels-last"] = lambda: same(args.steps)
        if args.timm:
            import timm

            reference = plain_loop(
                timm.create_model(args.model, num_classes=num_classes), args.batch_size, args.img_size, num_classes
            )
            runners["plain, timm"] = lambda: reference(args.steps)
        medians: dict[str, list[float]] = {label: [] for label in runners}
        for i in range(args.rounds):  # one round per call, so each round is reported as it ends
            order = dict(list(runners.items())[:: -1 if i % 2 else 1])  # alternating order
            # a fixed count of calls per runner (target_rel=None): each call is already `--steps` steps
            timed = measure_interleaved(order, 1, warmup=1, iters=args.calls, min_seconds=0.0, target_rel=None)
            for label, ms in timed.items():
                medians[label] += ms
            print(
                f"round {i + 1}/{args.rounds}: "
                + ", ".join(
                    f"{label} {args.steps * args.batch_size / ms[-1] * 1e3:.1f} images/s"
                    for label, ms in medians.items()
                ),
                flush=True,
            )
        breakdown = profile_run(trainer, args.profile) if args.profile else None
    load_after = os.getloadavg()

    per_image = {label: [ms / (args.steps * args.batch_size) for ms in values] for label, values in medians.items()}
    rows = []
    for label, values in per_image.items():
        ratio = median_ratio(per_image[label], per_image["latvit train"])  # > 1: latvit train is faster
        best = min(values)
        rows.append(
            {
                "runner": label,
                "images_per_sec_median": 1e3 / sorted(values)[len(values) // 2],
                "images_per_sec_best": 1e3 / best,
                "latvit_train_speed_ratio": ratio,
                "ms_per_step_rounds": [ms / args.steps for ms in medians[label]],
            }
        )
    for row in rows:
        print(
            f"{row['runner']:>22}: {row['images_per_sec_median']:6.1f} images/s (best round "
            f"{row['images_per_sec_best']:6.1f});  latvit train / this = {row['latvit_train_speed_ratio']:.3f}x"
        )
    info = machine_info(args.threads)
    info.update(load_average_before=load_before, load_average_after=load_after)
    print(
        f"{info['cpu']}, {info['cores']} cores, {args.threads} threads, load average {load_before[0]:.1f} -> "
        f"{load_after[0]:.1f}; trainer: {trainer.cores.workers} loader workers, "
        f"{'channels-last' if trainer.memory_format == torch.channels_last else 'NCHW'}"
    )
    if breakdown is not None:
        from rich.console import Console

        Console(width=160).print(breakdown_table(breakdown))
    out = {
        "machine": info,
        "model": args.model,
        "data": args.data,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "steps_per_call": args.steps,
        "rounds": args.rounds,
        "trainer": {
            "workers": trainer.cores.workers,
            "threads": trainer.cores.threads,
            "memory_format": str(trainer.memory_format),
            "config": config.to_dict(),
        },
        "rows": rows,
        "profile": breakdown,
    }
    Path(args.json).write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
