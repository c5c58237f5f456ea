"""`latvit train --profile-steps N`: where a training step's time goes, from torch's profiler.

The trainer labels each phase of a step with `torch.profiler.record_function` (PHASES below). A profiled
run trains PROFILE_WARMUP_STEPS steps unprofiled (allocator, oneDNN/cuDNN plans, loader start), then N
steps under `torch.profiler.profile`, then writes one checkpoint the same way, which is charged to the
steps as its share: one save per `checkpoint_every` steps (or per epoch). It trains exactly as the run
would (same batches, same draws), writes only to a scratch directory, and reports per phase the CPU
wall time per step (the time the training loop spends in it) and, on CUDA, the device time.

    latvit train mobilevit_xxs --data fashion-mnist --img-size 64 --batch-size 64 --profile-steps 30
"""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

PROFILE_WARMUP_STEPS = 5
STEPS_LABEL = "profiled steps"
CHECKPOINT_SAVE_LABEL = "checkpoint save"
# (label, what it covers), in the order of a step; indented ones run inside the one above them
PHASES = (
    ("data", "waiting for the next batch from the loader"),
    ("  decode+augment", "building a batch (inside `data` when built inline; 0 when workers build it)"),
    ("to device", "host-to-device copy and memory-format change"),
    ("mixup", "mixup / cutmix"),
    ("forward", "forward pass and loss (and the teacher's forward)"),
    ("backward", "zeroing gradients, backward pass (DDP's all-reduce included)"),
    ("optimizer", "gradient clipping, optimiser step (and loss-scaler)"),
    ("ema", "EMA update of the evaluation weights"),
    ("metrics", "loss and image counts, kept on the device"),
    ("logging", "reading the loss back, progress bar, TensorBoard (every log_every steps)"),
    ("checkpoint", "checkpoints inside the profiled steps"),
)


def _label_times(events, name: str) -> tuple[float, float, int]:
    """(CPU ms, device ms, calls) of the record_function label `name` in `key_averages()`."""
    for e in events:
        if e.key == name:
            device_us = getattr(e, "device_time_total", 0.0) or 0.0
            return e.cpu_time_total / 1e3, device_us / 1e3, e.count
    return 0.0, 0.0, 0


def breakdown(events, steps: int, *, checkpoint_interval: int) -> dict[str, Any]:
    """Rows {phase, ms_per_step, percent, device_ms_per_step, about} from the profiler's `key_averages()`
    of `steps` steps plus one checkpoint save (charged as 1/checkpoint_interval of it per step)."""
    total_ms = _label_times(events, STEPS_LABEL)[0]
    step_ms = total_ms / steps
    save_ms, save_device_ms, _ = _label_times(events, CHECKPOINT_SAVE_LABEL)
    rows, top_level_ms = [], 0.0
    for label, about in PHASES:
        cpu_ms, device_ms, calls = _label_times(events, label.strip())
        per_step = cpu_ms / steps
        if label == "checkpoint":  # those inside the window are already in the steps; add the share of one save
            per_step += save_ms / checkpoint_interval
            device_ms += save_device_ms * steps / checkpoint_interval
        if not label.startswith(" "):
            top_level_ms += per_step
        rows.append(
            {
                "phase": label,
                "ms_per_step": per_step,
                "device_ms_per_step": device_ms / steps,
                "calls": calls,
                "about": about,
            }
        )
    step_ms += save_ms / checkpoint_interval
    rows.append(
        {
            "phase": "other",
            "ms_per_step": max(step_ms - top_level_ms, 0.0),
            "device_ms_per_step": 0.0,
            "calls": 0,
            "about": "seeding, lr schedule, Python between the phases",
        }
    )
    for row in rows:
        row["percent"] = 100.0 * row["ms_per_step"] / step_ms if step_ms > 0 else 0.0
    return {"step_ms": step_ms, "rows": rows}


def profile_run(trainer, steps: int, *, warmup: int = PROFILE_WARMUP_STEPS) -> dict[str, Any]:
    """Train `warmup` steps, then profile `steps` steps and one checkpoint save of `trainer` (a Trainer
    writing to a scratch directory). Returns the breakdown plus the run's setup (workers, threads, device)."""
    trainer.run_steps(warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.d.device.type == "cuda" else [])
    first_step = trainer.step
    with profile(activities=activities) as prof:
        with record_function(STEPS_LABEL):
            images = trainer.run_steps(steps)
            if trainer.d.device.type == "cuda":
                torch.cuda.synchronize(trainer.d.device)  # the steps' kernels end inside the window
        with record_function(CHECKPOINT_SAVE_LABEL):
            trainer.save()
    c = trainer.config
    interval = c.checkpoint_every or len(trainer.sampler.epoch_batches(trainer.epoch))
    result = breakdown(prof.key_averages(), trainer.step - first_step, checkpoint_interval=interval)
    result.update(
        steps=trainer.step - first_step,
        warmup=warmup,
        images=images,
        images_per_sec=images / (result["step_ms"] * (trainer.step - first_step)) * 1e3,
        workers=trainer.cores.workers,
        threads=trainer.cores.threads,
        device=str(trainer.d.device),
        world_size=trainer.d.world_size,
        rank=trainer.d.rank,
        checkpoint_interval=interval,
        model=trainer.net.spec.name,
        batch_size=c.batch_size,
        img_size=trainer.net.img_size,
    )
    return result


def breakdown_table(result: dict[str, Any]):
    """The breakdown as a rich Table (device column on CUDA)."""
    from rich.table import Table

    cuda = result["device"].startswith("cuda")
    title = (
        f"{result['model']}, batch {result['batch_size']} at {result['img_size']} px on {result['device']}: "
        f"{result['step_ms']:.1f} ms/step, {result['images_per_sec']:.0f} images/s over {result['steps']} "
        f"profiled steps ({result['workers']} loader workers, {result['threads']} threads)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("phase")
    table.add_column("ms/step", justify="right")
    table.add_column("% of step", justify="right")
    if cuda:
        table.add_column("device ms/step", justify="right")
    table.add_column("what")
    for row in result["rows"]:
        cells = [row["phase"], f"{row['ms_per_step']:.2f}", f"{row['percent']:.1f}"]
        if cuda:
            cells.append(f"{row['device_ms_per_step']:.2f}")
        about = row["about"]
        if row["phase"] == "checkpoint":
            about += f"; plus one save per {result['checkpoint_interval']} steps"
        table.add_row(*cells, about)
    return table


__all__ = ["PHASES", "PROFILE_WARMUP_STEPS", "breakdown", "breakdown_table", "profile_run"]
