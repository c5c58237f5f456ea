"""Train a timm model (default DeiT-Tiny, at its own 224 px) on Fashion-MNIST, to have trained logits for
token-merging accuracy at ViT token counts (issue #9: DeiT-Tiny's ImageNet weights cannot be downloaded here).

`latvit train` builds latvit specs only; this script trains the timm architecture itself, with latvit's data
pipeline (Fashion-MNIST replicated to 3 channels, timm's RandomResizedCrop) and timm's AdamW, cosine schedule
and label smoothing. A killed run resumes from OUT/last.pt when started again with the same arguments.
Writes OUT/model.safetensors (the weights) and OUT/train.json (settings, first and last losses, wall time);
OUT/last.pt keeps the whole loss curve.

    python benchmarks/train_timm_fashion_mnist.py --epochs 2 --subset 20000     # ~35 min on 2 cores, 66% top-1
    python benchmarks/compression.py --checkpoint timm:deit_tiny_patch16_224=runs/fmnist-deit_tiny_patch16_224-224-e2-n20000 \\
        --tome 8,13,16 --runtimes ort,openvino
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from latvit.data import Subset, Transformed, open_dataset, train_transform
from latvit.targets.protocol import set_threads
from latvit.train.checkpointing import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from latvit.utils import atomic_write_text


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="deit_tiny_patch16_224", help="timm model name")
    ap.add_argument("--data", default="fashion-mnist", help="fashion-mnist, synthetic, an ImageFolder or idx directory")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--subset", type=int, default=20000, help="first N training images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", help="run directory (default runs/fmnist-MODEL-SIZE-eE-nN)")
    args = ap.parse_args(argv)

    import timm
    from safetensors.torch import save_file
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    data = Subset(open_dataset(args.data, "train"), args.subset)
    steps_per_epoch = len(data) // args.batch_size
    if steps_per_epoch < 1:
        ap.error(f"--subset {args.subset} gives no full batch of --batch-size {args.batch_size}")
    model = timm.create_model(args.model, pretrained=False, num_classes=len(data.classes))
    size = model.pretrained_cfg["input_size"][-1]
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    prefix = "fmnist" if args.data == "fashion-mnist" else Path(args.data).name
    out = Path(args.output or f"runs/{prefix}-{args.model}-{size}-e{args.epochs}-n{args.subset}")
    out.mkdir(parents=True, exist_ok=True)

    # the garments fill the frame: mild crops, as configs/fashion_mnist.yaml
    train_set = Transformed(data, lambda s: train_transform(s, mean, std, crop_scale=(0.8, 1.0)), size, seed=args.seed)
    total = steps_per_epoch * args.epochs
    optimizer = create_optimizer_v2(model, "adamw", lr=args.lr, weight_decay=0.05)
    schedule = CosineLRScheduler(
        optimizer, t_initial=total, lr_min=1e-5, warmup_t=steps_per_epoch // 3, warmup_lr_init=1e-4, t_in_epochs=False
    )
    loss_fn = LabelSmoothingCrossEntropy(0.1)

    step, losses, wall = 0, [], 0.0
    settings = {k: getattr(args, k) for k in ("model", "data", "epochs", "subset", "batch_size", "lr", "seed")}
    if (out / "last.pt").is_file():
        payload = load_checkpoint(out / "last.pt")
        if payload.get("settings") != settings:
            ap.error(f"{out} holds a run with other settings ({payload['settings']}); choose another --output")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        set_rng_state(payload["rng"])
        step, losses, wall = payload["step"], payload["losses"], payload["wall"]
        print(f"resuming {out} at step {step}/{total}")

    def checkpoint():
        save_checkpoint(
            out / "last.pt",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng_state(),
                "step": step,
                "losses": losses,
                "wall": wall,
                "settings": settings,
            },
        )

    model.train()
    start = time.perf_counter() - wall
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(f"training {args.model}", total=total, completed=step, loss="-")
        while step < total:
            epoch, first = divmod(step, steps_per_epoch)
            train_set.set_epoch(epoch)
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            for i in range(first, steps_per_epoch):
                batch = [train_set[int(j)] for j in order[i * args.batch_size : (i + 1) * args.batch_size]]
                x, y = torch.stack([b[0] for b in batch]), torch.tensor([int(b[1]) for b in batch])
                schedule.step_update(step)
                loss = loss_fn(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                step += 1
                losses.append(round(loss.item(), 4))
                progress.update(task, completed=step, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                if step % 50 == 0 or step == total:
                    wall = time.perf_counter() - start
                    checkpoint()
    wall = time.perf_counter() - start
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    # crop_pct: evaluate without a centre crop, as trained (compression.py reads it)
    summary = {
        "model": args.model,
        "img_size": size,
        "crop_pct": 1.0,
        "epochs": args.epochs,
        "subset": args.subset,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": args.threads,
        "steps": step,
        "wall_s": round(wall, 1),
        "loss_first_50": statistics.fmean(losses[:50]),
        "loss_last_50": statistics.fmean(losses[-50:]),
    }
    atomic_write_text(out / "train.json", json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
