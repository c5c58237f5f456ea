"""Process-group helpers: one process on CPU or one GPU, or several under torchrun (DDP).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; with WORLD_SIZE > 1 latvit joins the process group
(NCCL on CUDA, gloo on CPU). Everything else in the trainer asks this module who it is, so the
single-process path never touches torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from latvit.errors import LatvitError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu; 'cuda' -> cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists twenty device types latvit does not run on
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise LatvitError(f"unknown device '{name}'; use auto, cpu, cuda or cuda:N (train: --set device=...)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LatvitError(
                f"device {name} requested but CUDA is not available; use device cpu "
                f"(validate: --device cpu, train: --set device=cpu)"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise LatvitError(
                f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
        return device if device.index is not None else torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> Dist:
    """Join the torchrun process group if there is one; returns this process's rank and device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world_size > 1 and device.startswith("cuda:"):  # every rank would take that one GPU
        raise LatvitError(
            f"device {device} under torchrun ({world_size} processes): use device=cuda (or auto), "
            f"which gives each process the GPU of its LOCAL_RANK"
        )
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, dev)


def wrap_ddp(model: torch.nn.Module, d: Dist) -> torch.nn.Module:
    """`model` in DistributedDataParallel, its gradients living in DDP's buckets.

    With gradient_as_bucket_view, backward writes gradients where the all-reduce reads them: no copy into the
    buckets at every step, and no "Grad strides do not match bucket view strides" copy either (a 1x1 conv fed
    by a permuted activation, as in MobileViT, gets its weight gradient in channels-last strides, which a
    freshly created gradient keeps and DDP must then copy per bucket). The gradients are made here, before DDP
    is built, so DDP turns them into bucket views; callers zero them in place (zero_grad(set_to_none=False))
    so they stay views. The numbers are those of plain DDP: the same all-reduce of the same gradients.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    return DDP(model, device_ids=[d.device] if d.device.type == "cuda" else None, gradient_as_bucket_view=True)


def all_reduce_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum over ranks (float64, so loss sums stay exact enough to compare runs)."""
    if not d.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj, d: Dist) -> list:
    if not d.active:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.active and dist.is_initialized():
        dist.destroy_process_group()


__all__ = [
    "Dist",
    "all_gather_object",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "pick_device",
    "shutdown",
    "wrap_ddp",
]
