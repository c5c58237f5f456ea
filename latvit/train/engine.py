"""The training loop behind `latvit train`: the seeds' recipe, resumable to the bit, DDP under torchrun.

    from latvit.train import make_config, train
    result = train(make_config(model="efficientformerv2_s0", data="fashion-mnist", img_size=64, epochs=2))

One run writes to its output directory:
    config.yaml        the full configuration (defaults filled in)
    last.pt            the training checkpoint (model, EMA, optimiser, scaler, sampler position,
                       loss sums, metrics and every rank's RNG states), rewritten atomically at every epoch
                       end and every `checkpoint_every` steps
    metrics.csv/.json  one row per epoch: lr, train loss, validation loss / top-1 / top-5, throughput
    model/, best/      the evaluation weights (EMA when kept) of the last and the best epoch, as
                       `latvit.save` directories (spec.json + model.safetensors): `create_model("run/best")`

Exact resume: the batches of an epoch are a pure function of (seed, epoch) (`ScaleBatchSampler`), every
image's augmentation is seeded by (seed, epoch, index) (`Transformed`), and every step reseeds torch,
numpy and random from (seed, epoch, batch, rank) before mixup, drop path and dropout draw. So a run that
is killed and resumed from its last checkpoint takes exactly the steps an uninterrupted run takes, on
the same data with the same random draws, and ends with the same weights (on the same machine and
thread count).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.profiler import record_function

from latvit.data import Subset, Transformed, eval_transform, open_dataset, train_transform
from latvit.errors import LatvitError
from latvit.models import WEIGHTS_FILE, create_model, load_backbone, resolve_spec, save
from latvit.train import checkpointing as ckpt
from latvit.train.config import ConfigError, TrainConfig
from latvit.train.distill import build_teacher, distillation_loss
from latvit.train.distributed import (
    Dist,
    all_gather_object,
    all_reduce_sum,
    barrier,
    init_distributed,
    shutdown,
    wrap_ddp,
)
from latvit.train.ema import ModelEma
from latvit.train.evaluate import evaluate
from latvit.train.loader import make_loader, pin_memory_for, split_cores
from latvit.train.profiling import profile_run
from latvit.train.sampler import ScaleBatchSampler, default_multiscale_sizes
from latvit.utils import atomic_write_text, check_writable, rich_progress

FUSED_OPTIMIZERS = ("adam", "adamw")  # timm names whose torch optimiser has a fused kernel on CPU and CUDA
# config keys that may differ between a run and its resumption: they do not change what is computed
# (`epochs` may be raised to extend a run; the cosine schedule then stretches from that point on)
RUN_CONTROL_KEYS = {
    "output",
    "epochs",
    "progress",
    "tensorboard",
    "num_workers",
    "eval_batch_size",
    "checkpoint_every",
    "device",
    "threads",
    "pin_memory",
    "log_every",
}


def step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """The seed of one optimiser step on one rank (independent of where the run was resumed)."""
    return (((seed * 1_000_003 + epoch) * 1_000_033 + batch) * 257 + rank) % 2**63


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of config.amp on `device`: true = CUDA's bf16 where supported, else fp16 (off on
    CPU, where fp32 kernels are the fast ones without AMX/AVX512-BF16); "bf16" anywhere (CPU autocast too);
    "fp16" on CUDA only; false = none."""
    if amp is False:
        return None
    if amp is True:
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"config.amp = 'fp16' needs a CUDA device (this run is on {device}); use amp: bf16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def memory_format(channels_last: bool | str, device: torch.device) -> torch.memory_format:
    """config.channels_last on `device`: "auto" is channels-last on CPU, where oneDNN's NHWC kernels train the
    seed models faster (docs/train.md), and NCHW on CUDA until measured there."""
    if channels_last == "auto":
        channels_last = device.type == "cpu"
    return torch.channels_last if channels_last else torch.contiguous_format


def default_output(spec_name: str, data: str) -> str:
    name = data if data in ("fashion-mnist", "synthetic") else Path(data).resolve().name
    return str(Path("runs") / f"{spec_name}-{name}")


class Trainer:
    """Builds everything a run needs from a `TrainConfig` and runs it (`fit`). One per process."""

    def __init__(self, config: TrainConfig, d: Dist, *, resume: bool = False, scratch: Path | None = None):
        """scratch: write the run's files there instead of `config.output`, which is then only read (to
        resume from): a profiled run leaves the run directory as it was."""
        self.d = d
        spec, weights = resolve_spec(config.model)
        if config.init is not None:  # --init replaces a saved model's own weights
            init = Path(config.init)
            weights = init / WEIGHTS_FILE if init.is_dir() else init
        if not config.output:
            config = dataclasses.replace(config, output=default_output(spec.name, config.data))
        self.config = c = config
        self.out = Path(c.output)
        if scratch is None:
            check_writable(self.out, directory=True)  # now, not after the data and the model are ready
        last = self.out / ckpt.LAST
        if resume and not last.is_file():
            raise LatvitError(f"--resume: no checkpoint {last}; start the run without --resume")
        if not resume and last.is_file() and scratch is None:
            raise LatvitError(
                f"{self.out} already holds a run ({ckpt.LAST}); pass --resume to continue it, "
                f"or choose another --output"
            )
        payload = ckpt.load_checkpoint(last) if resume else None
        if payload is not None:
            check_resumable(c, payload, d)
        self.out = scratch or self.out

        # -- data -------------------------------------------------------------------------------------------
        train_base = open_dataset(
            c.data, "train", synthetic_classes=c.synthetic_classes, synthetic_size=c.synthetic_train
        )
        val_base = open_dataset(c.data, "val", synthetic_classes=c.synthetic_classes, synthetic_size=c.synthetic_val)
        if tuple(train_base.classes) != tuple(val_base.classes):
            raise LatvitError(
                f"{c.data}: the train and val splits have different classes "
                f"({len(train_base.classes)} vs {len(val_base.classes)})"
            )
        train_base = Subset(train_base, c.train_subset) if c.train_subset else train_base
        val_base = Subset(val_base, c.val_subset) if c.val_subset else val_base
        self.num_classes = len(train_base.classes)

        # -- model (same seed on every rank; DDP also broadcasts rank 0's weights) ------------------------------
        if c.teacher:
            spec = spec.with_distill_head()
        torch.manual_seed(c.seed)
        model = create_model(spec, num_classes=self.num_classes, img_size=c.img_size, drop_path_rate=c.drop_path)
        # the backbone loads strictly; a classifier for another class count (or a missing distillation head)
        # starts fresh: fine-tuning a 1000-class checkpoint on N classes is the ordinary case
        self.reinitialised = load_backbone(model, weights) if weights is not None and payload is None else []
        # NHWC where asked: weights here, inputs in `train_step`; before the EMA copy and DDP's buckets
        self.memory_format = memory_format(c.channels_last, d.device)
        self.net = model.to(d.device, memory_format=self.memory_format)
        self.sizes = self.check_sizes(model)

        mean, std = model.spec.mean, model.spec.std
        make_train = partial(
            train_transform,
            mean=mean,
            std=std,
            crop_scale=c.crop_scale,
            hflip=c.hflip,
            randaugment=c.randaugment,
            color_jitter=c.color_jitter,
        )
        make_train(model.img_size)  # a bad RandAugment string fails here, not in a worker
        self.train_set = Transformed(train_base, make_train, model.img_size, seed=c.seed)
        self.val_set = Transformed(
            val_base, partial(eval_transform, mean=mean, std=std, crop_pct=c.crop_pct), model.img_size
        )
        mixing = c.mixup > 0 or c.cutmix > 0
        self.sampler = ScaleBatchSampler(
            len(train_base),
            c.batch_size,
            model.img_size,
            self.sizes,
            seed=c.seed,
            rank=d.rank,
            world_size=d.world_size,
            batch_multiple=2 if mixing else 1,
        )
        batched = all(self.train_set.batch_transform(size) is not None for size in self.sizes)
        self.cores = split_cores(device_type=d.device.type, batched=batched, workers=c.num_workers, threads=c.threads)
        torch.set_num_threads(self.cores.threads)  # `train` restores the caller's count
        self.pin_memory = pin_memory_for(d.device, c.pin_memory)
        self.loader = make_loader(self.train_set, self.sampler, workers=self.cores.workers, pin_memory=self.pin_memory)

        # -- recipe: timm's optimiser, schedule, EMA, mixup and losses -----------------------------------
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler

        # no weight decay on biases, norms and attention biases (model.no_weight_decay())
        # fused: one kernel over all tensors instead of a loop over ~200 of them (4x less time on CPU)
        fused = {"fused": True} if c.fused_optimizer and c.optimizer.lower() in FUSED_OPTIMIZERS else {}
        self.optimizer = create_optimizer_v2(
            model, opt=c.optimizer, lr=c.lr, weight_decay=c.weight_decay, layer_decay=c.layer_decay, **fused
        )  # the scheduler applies lr_scale
        # stepped with a fractional epoch every batch: linear warm-up, then cosine down to min_lr
        self.scheduler = CosineLRScheduler(
            self.optimizer,
            t_initial=c.epochs,
            lr_min=c.min_lr,
            warmup_t=c.warmup_epochs,
            warmup_lr_init=c.warmup_lr,
            t_in_epochs=True,
        )
        self.ema = ModelEma(model, decay=c.ema_decay, use_warmup=c.ema_warmup) if c.ema else None
        self.mixup = (
            Mixup(
                mixup_alpha=c.mixup,
                cutmix_alpha=c.cutmix,
                label_smoothing=c.label_smoothing,
                num_classes=self.num_classes,
            )
            if mixing
            else None
        )
        if mixing:
            self.loss_fn: nn.Module = SoftTargetCrossEntropy()
        elif c.label_smoothing > 0:
            self.loss_fn = LabelSmoothingCrossEntropy(smoothing=c.label_smoothing)
        else:
            self.loss_fn = nn.CrossEntropyLoss()
        self.amp_dtype = amp_dtype(c.amp, d.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None  # fp16 needs it

        self.teacher = None
        if c.teacher:
            self.teacher = build_teacher(
                c.teacher,
                c.teacher_checkpoint,
                num_classes=self.num_classes,
                img_size=model.img_size,
                student_mean=mean,
                student_std=std,
            ).to(d.device)
            model.set_distilled_training(True)

        self.model: nn.Module = model
        if d.active:  # gradients as views of DDP's buckets: `train_step` zeroes them in place
            self.model = wrap_ddp(model, d)
        if c.compile:
            self.model = torch.compile(self.model)

        # -- where the run stands --------------------------------------------------------------------------
        self.epoch = self.batch = self.step = 0
        self.epoch_seconds = 0.0
        # the epoch's loss sum stays on the device (float64, summed as the host would) until it is read
        self.loss_total = torch.zeros((), dtype=torch.float64, device=d.device)
        self.set_loss(0.0, 0.0)
        self.metrics: list[dict[str, Any]] = []
        self.best_top1 = -1.0
        if payload is not None:
            self.load_state(payload)
        self.writer = self.open_tensorboard() if d.main and c.tensorboard else None

    # -- checks ----------------------------------------------------------------------------------------------
    def check_sizes(self, model) -> tuple[int, ...]:
        c = self.config
        if not c.multiscale:
            return (model.img_size,)
        if model.fixed_input_size:
            raise ConfigError(
                f"config.multiscale: {model.spec.name} takes one input size only (its attention "
                f"biases are built for {model.img_size}); set multiscale: false"
            )
        sizes = c.multiscale_sizes or default_multiscale_sizes(model.img_size, model.input_multiple)
        bad = [s for s in sizes if s % model.input_multiple]
        if bad:
            raise ConfigError(
                f"config.multiscale_sizes {list(bad)}: {model.spec.name} needs multiples of {model.input_multiple}"
            )
        return tuple(sizes)

    def open_tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: tensorboard is not a dependency
            return None
        return SummaryWriter(str(self.out / "tensorboard"))

    # -- state -------------------------------------------------------------------------------------------------
    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.net

    def set_loss(self, loss_sum: float, count: float) -> None:
        """Set this rank's running loss sum and image count of the epoch."""
        self.loss_total.fill_(loss_sum)
        self.count = count
        self.logged = (loss_sum, count)  # what the last TensorBoard point had seen

    def state(self) -> dict[str, Any]:
        """Everything `load_state` needs (call on every rank: loss sums and RNG states are gathered)."""
        loss_sum, count = self.reduce_loss()
        self.check_loss(loss_sum, self.epoch)  # a checkpoint never holds a diverged run
        # from here on rank 0 carries the epoch's loss sums so far, the other ranks start again from 0
        self.set_loss(*((loss_sum, count) if self.d.main else (0.0, 0.0)))
        rngs = all_gather_object(ckpt.rng_state(), self.d)
        return {
            "config": self.config.to_dict(),
            "world_size": self.d.world_size,
            "model": self.net.state_dict(),
            "ema": None if self.ema is None else self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),  # no scheduler: it follows from the config (load_state)
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "sampler": {"epoch": self.epoch, "batch": self.batch, "sizes": list(self.sizes)},
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "loss_sum": loss_sum,
            "count": count,
            "epoch_seconds": self.epoch_seconds,
            "metrics": self.metrics,
            "best_top1": self.best_top1,
            "rng": rngs,
        }

    def load_state(self, p: dict[str, Any]) -> None:
        self.net.load_state_dict(p["model"])
        if self.ema is not None and p.get("ema") is not None:
            self.ema.module.load_state_dict(p["ema"])
        self.optimizer.load_state_dict(p["optimizer"])
        # the scheduler is not restored: it is a function of the config and the fractional epoch it is stepped
        # with, and timm's state would bring back the old `t_initial`, pinning a run resumed with more epochs at
        # min_lr instead of stretching the cosine to the new length
        if self.scaler is not None and p.get("scaler"):
            self.scaler.load_state_dict(p["scaler"])
        self.epoch, self.batch, self.step = p["epoch"], p["batch"], p["step"]
        # the loss sums so far are global: rank 0 carries them, the others start from 0
        self.set_loss(*((p["loss_sum"], p["count"]) if self.d.main else (0.0, 0.0)))
        self.epoch_seconds, self.metrics, self.best_top1 = p["epoch_seconds"], list(p["metrics"]), p["best_top1"]
        if len(p["rng"]) == self.d.world_size:
            ckpt.set_rng_state(p["rng"][self.d.rank])

    def reduce_loss(self) -> tuple[float, float]:
        """(loss sum, image count) of this epoch so far, over all ranks."""
        total, count = all_reduce_sum([self.loss_sum, self.count], self.d)
        return total, count

    def save(self) -> None:
        state = self.state()
        if self.d.main:
            ckpt.save_checkpoint(self.out / ckpt.LAST, state)
        barrier(self.d)

    # -- the loop ------------------------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, targets: torch.Tensor, epoch: int, n_batches: int) -> torch.Tensor:
        """One optimiser step on a batch. Returns the loss as a detached device tensor: reading it back
        here would make the host wait for the device at every step (`log_progress` reads it)."""
        c, dev = self.config, self.d.device
        seed_all(step_seed(c.seed, epoch, self.batch, self.d.rank))
        self.scheduler.step(epoch + self.batch / n_batches)
        with record_function("to device"):
            images = images.to(dev, non_blocking=True, memory_format=self.memory_format)  # (B, 3, S, S)
            targets = targets.to(dev, non_blocking=True)  # (B,)
        if self.mixup is not None:
            with record_function("mixup"):
                images, targets = self.mixup(images, targets)  # targets -> (B, num_classes) soft labels
        with (
            record_function("forward"),
            torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None),
        ):
            out = self.model(images)
            if self.teacher is not None:
                loss = distillation_loss(out, targets, self.teacher(images), self.loss_fn, c.distill_alpha)
            else:
                loss = self.loss_fn(out, targets)
        with record_function("backward"):
            # under DDP the gradients are bucket views (see __init__): zeroed in place, never dropped
            self.optimizer.zero_grad(set_to_none=not self.d.active)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        with record_function("optimizer"):
            if self.scaler is not None:
                if c.clip_grad:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.net.parameters(), c.clip_grad)
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                if c.clip_grad:
                    nn.utils.clip_grad_norm_(self.net.parameters(), c.clip_grad)
                self.optimizer.step()
        if self.ema is not None:
            with record_function("ema"):
                self.ema.update(self.net, step=self.step)
        return loss.detach()

    def train_epoch(self, epoch: int, progress, max_steps: int | None = None) -> int:
        """Train the rest of `epoch` (at most `max_steps` steps of it when given); returns the images seen."""
        c = self.config
        n_batches = len(self.sampler.epoch_batches(epoch))
        self.sampler.set_epoch(epoch, self.batch)
        self.train_set.set_epoch(epoch)
        self.model.train()
        task = (
            progress.add_task(f"epoch {epoch + 1}/{c.epochs}", total=n_batches, completed=self.batch, info="")
            if progress
            else None
        )
        start = time.perf_counter() - self.epoch_seconds
        batches, seen = iter(self.loader), 0
        while max_steps is None or max_steps > 0:
            with record_function("data"):
                batch = next(batches, None)
            if batch is None:
                break
            images, targets = batch
            loss = self.train_step(images, targets, epoch, n_batches)
            with record_function("metrics"):
                self.batch += 1
                self.step += 1
                self.loss_total += loss.double() * targets.shape[0]  # the float64 sum the host used to keep
                self.count += targets.shape[0]
                seen += targets.shape[0]
            if self.step % c.log_every == 0 or self.batch == n_batches:
                with record_function("logging"):
                    self.log_progress(epoch, progress, task, images.shape[-1])
            if c.checkpoint_every and self.step % c.checkpoint_every == 0 and self.batch < n_batches:
                with record_function("checkpoint"):
                    self.save()
            self.epoch_seconds = time.perf_counter() - start
            max_steps = None if max_steps is None else max_steps - 1
        if self.d.device.type == "cuda":  # the epoch's time includes its last kernels
            torch.cuda.synchronize(self.d.device)
            self.epoch_seconds = time.perf_counter() - start
        if progress:
            progress.remove_task(task)
        return seen

    @property
    def loss_sum(self) -> float:
        """This epoch's summed loss so far on this rank (reads the device)."""
        return self.loss_total.item()

    def check_loss(self, loss_sum: float, epoch: int) -> None:
        if not math.isfinite(loss_sum):
            raise LatvitError(
                f"the loss became {loss_sum} by epoch {epoch + 1} step {self.step}; lower lr "
                f"(now {self.config.lr}) or set clip_grad"
            )

    def log_progress(self, epoch: int, progress, task, size: int) -> None:
        """Read the loss back (once per `log_every` steps), check it, show it, log it."""
        loss_sum = self.loss_sum
        self.check_loss(loss_sum, epoch)
        if progress:
            progress.update(task, completed=self.batch, info=f"loss {loss_sum / max(self.count, 1):.4f} size {size}")
        if self.writer is not None:
            since_sum, since_count = loss_sum - self.logged[0], self.count - self.logged[1]
            self.writer.add_scalar("train/loss", since_sum / max(since_count, 1), self.step)  # mean since last
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        self.logged = (loss_sum, self.count)

    def run_steps(self, steps: int) -> int:
        """Train `steps` steps from where the run stands, on into the next epochs without evaluating them
        (profiling); returns the images seen."""
        seen = 0
        while steps > 0:
            before = self.step
            seen += self.train_epoch(self.epoch, None, max_steps=steps)
            steps -= self.step - before
            if self.batch >= len(self.sampler.epoch_batches(self.epoch)):  # the epoch is done: on to the next
                self.epoch, self.batch, self.epoch_seconds = self.epoch + 1, 0, 0.0
                self.set_loss(0.0, 0.0)
        return seen

    def end_epoch(self, epoch: int, console) -> None:
        c = self.config
        loss_sum, count = self.reduce_loss()
        val = evaluate(
            self.eval_model,
            self.val_set,
            batch_size=c.eval_batch_size,
            num_workers=self.cores.workers,
            d=self.d,
            amp_dtype=self.amp_dtype,
            memory_format=self.memory_format,
            pin_memory=self.pin_memory,
        )
        row = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / max(count, 1.0),
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "train_seconds": self.epoch_seconds,
            "train_images_per_sec": count / max(self.epoch_seconds, 1e-9),
            "val_images_per_sec": val["images_per_sec"],
        }
        self.metrics.append(row)
        best = row["val_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, row["val_top1"])
        self.epoch, self.batch, self.epoch_seconds = epoch + 1, 0, 0.0
        self.set_loss(0.0, 0.0)
        # the epoch's outputs first, the checkpoint that marks the epoch done last: a kill in between redoes
        # the epoch on resume and rewrites them (the other order could leave best/ never written)
        if self.d.main:
            save(self.eval_model, self.out / "model")
            if best:
                save(self.eval_model, self.out / "best")
            self.write_metrics()
        self.save()
        if self.d.main:
            if self.writer is not None:
                for key in ("train_loss", "val_loss", "val_top1", "val_top5"):
                    self.writer.add_scalar(f"epoch/{key}", row[key], row["epoch"])
            if console is not None:
                console.print(
                    f"epoch {row['epoch']}/{c.epochs}  train loss {row['train_loss']:.4f}  "
                    f"val loss {row['val_loss']:.4f}  top-1 {row['val_top1']:.2f}%  "
                    f"top-5 {row['val_top5']:.2f}%  {row['train_images_per_sec']:.0f} img/s",
                    soft_wrap=True,
                )
        barrier(self.d)

    def write_metrics(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(self.metrics[0]))
        writer.writeheader()
        writer.writerows(self.metrics)
        atomic_write_text(self.out / "metrics.csv", buffer.getvalue())
        import json

        summary = {
            "model": self.net.spec.name,
            "data": self.config.data,
            "world_size": self.d.world_size,
            "num_classes": self.num_classes,
            "img_size": self.net.img_size,
            "sizes": list(self.sizes),
            "best_top1": self.best_top1,
            "epochs": self.metrics,
        }
        atomic_write_text(self.out / "metrics.json", json.dumps(summary, indent=1) + "\n")

    def fit(self) -> dict[str, Any]:
        """Train from where the run stands to `config.epochs`; returns the metrics summary."""
        c = self.config
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", c.to_yaml())
        barrier(self.d)
        progress = console = None
        if self.d.main:
            from rich.console import Console
            from rich.progress import TextColumn

            console = Console(stderr=True)
            if c.progress:
                progress = rich_progress(TextColumn("{task.fields[info]}"), console=console)
        if console is not None and self.reinitialised:
            console.print(
                f"fine-tuning: backbone loaded from {self.config.init or self.config.model}; "
                f"re-initialised for {self.num_classes} classes: {', '.join(self.reinitialised)}",
                soft_wrap=True,
            )
        try:
            if progress:
                progress.start()
            for epoch in range(self.epoch, c.epochs):
                self.train_epoch(epoch, progress)
                self.end_epoch(epoch, console)
        finally:
            if progress:
                progress.stop()
            if self.writer is not None:
                self.writer.close()
        return {
            "output": str(self.out),
            "world_size": self.d.world_size,
            "rank": self.d.rank,
            "steps": self.step,
            "best_top1": self.best_top1,
            "final": self.metrics[-1] if self.metrics else None,
            "epochs": self.metrics,
        }


def check_resumable(config: TrainConfig, payload: dict[str, Any], d: Dist) -> None:
    """A run resumes with the configuration it was started with (run-control keys aside) and, mid-epoch,
    with as many processes."""
    saved = payload.get("config", {})
    now = config.to_dict()
    changed = [k for k in now if k not in RUN_CONTROL_KEYS and k in saved and saved[k] != now[k]]
    if changed:
        diffs = ", ".join(f"{k}={now[k]!r} (run has {saved[k]!r})" for k in changed)
        raise ConfigError(
            f"--resume with a different config: {diffs}; resume with the run's config.yaml or start a new --output"
        )
    if payload.get("batch", 0) and payload.get("world_size", 1) != d.world_size:
        raise ConfigError(
            f"--resume: the checkpoint was written mid-epoch by {payload['world_size']} process(es); "
            f"resume with the same number (torchrun --nproc_per_node {payload['world_size']})"
        )


def train(config: TrainConfig, *, resume: bool = False, profile_steps: int = 0) -> dict[str, Any]:
    """Run (or with `resume`, continue) a training run; under torchrun, every process calls this.

    profile_steps: instead, profile that many steps of the run (after a few warm-up steps) and return the
    breakdown of a step (`latvit.train.profiling`); the run's directory is read (to resume from), not written.
    The result carries `rank`: under torchrun only rank 0's is the one to report.
    """
    import torch.distributed as dist

    owns_group = not dist.is_initialized()
    d = init_distributed(config.device)
    threads = torch.get_num_threads()  # the trainer sets its own (config.threads, or its share of the cores)
    try:
        if profile_steps:
            with tempfile.TemporaryDirectory(prefix="latvit-profile-") as scratch:
                return profile_run(Trainer(config, d, resume=resume, scratch=Path(scratch)), profile_steps)
        return Trainer(config, d, resume=resume).fit()
    finally:
        torch.set_num_threads(threads)
        if owns_group:
            shutdown(d)


__all__ = [
    "RUN_CONTROL_KEYS",
    "Trainer",
    "amp_dtype",
    "check_resumable",
    "default_output",
    "memory_format",
    "step_seed",
    "train",
]
