"""Where a training process's cores go, and the DataLoaders that feed it.

A process needs compute threads (torch's intra-op pool) and, when images are decoded per item, loader
workers; on a CPU the two compete for the same cores. `split_cores` divides this process's share of the
machine (cores / processes on the node, so `torchrun` ranks never oversubscribe it: ranks x (workers +
threads) <= cores):

- in-memory uint8 data with an exact batch transform (Fashion-MNIST, synthetic; `Transformed.batch`):
  a batch costs about 1% of a training step, so on a CPU it is built inline (no workers, every core
  computes); on a GPU two workers build it while the GPU computes;
- data decoded per item (ImageFolder, RandAugment): no workers up to 2 cores (a worker would steal a
  compute thread's core), else a quarter of the cores as workers; on a GPU all cores but one.

`num_workers` and `threads` in the config override either half; the other half takes what is left.
Batches are whole items of a `BatchFetcher` (`batch_size=None`), so a batch is built in one call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from latvit.data import BatchFetcher
from latvit.targets.protocol import default_threads

AUTO = "auto"
GPU_BATCH_WORKERS = 2  # in-memory batches on a GPU: enough to build the next batches while one trains
GPU_MAX_WORKERS = 8  # per-item decoding on a GPU: torch's usual upper end; more rarely helps one GPU


@dataclass(frozen=True)
class CoreSplit:
    """Loader workers and compute threads of one process, and what they were chosen from."""

    workers: int
    threads: int
    cores: int  # cores this process may run on
    processes: int  # processes on this machine sharing them (torchrun's LOCAL_WORLD_SIZE)


def local_processes() -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def split_cores(
    *,
    device_type: str,
    batched: bool,
    workers: int | str = AUTO,
    threads: int = 0,
    cores: int | None = None,
    processes: int | None = None,
) -> CoreSplit:
    """Loader workers and compute threads for one process.

    device_type: "cpu" or "cuda"; batched: the data has an exact in-memory batch path (see module doc);
    workers: a number, or "auto"; threads: a number, or 0 for auto; cores / processes: default this
    machine's cores and `local_processes()`.
    """
    cores = cores or default_threads()
    processes = processes or local_processes()
    share = max(1, cores // processes)
    if workers == AUTO:
        if device_type == "cuda":
            workers = min(GPU_BATCH_WORKERS if batched else GPU_MAX_WORKERS, share - 1)
        elif batched or share <= 2:
            workers = 0
        else:
            workers = share // 4
        if threads:  # explicit threads: workers only on the cores they leave free
            workers = min(workers, max(0, share - threads))
    workers = max(0, int(workers))
    threads = threads or max(1, share - workers)
    return CoreSplit(workers=workers, threads=threads, cores=cores, processes=processes)


def make_loader(dataset: Dataset, sampler: Sampler, *, workers: int, pin_memory: bool) -> DataLoader:
    """A loader of whole batches: `sampler` yields lists of keys, `dataset.batch(keys)` builds each batch
    (inline with 0 workers). `pin_memory` puts batches in page-locked memory for non-blocking copies to a
    GPU. Workers are started per epoch (not persistent), so they see the dataset's current epoch."""
    return DataLoader(
        BatchFetcher(dataset), batch_size=None, sampler=sampler, num_workers=workers, pin_memory=pin_memory
    )


class KeyBatches(Sampler):
    """Consecutive lists of `batch_size` positions of a dataset of `length` (the last one shorter): the
    evaluation order, as a BatchSampler over range(length) without its per-index overhead."""

    def __init__(self, length: int, batch_size: int):
        self.length, self.batch_size = length, batch_size

    def __iter__(self):
        for start in range(0, self.length, self.batch_size):
            yield list(range(start, min(start + self.batch_size, self.length)))

    def __len__(self) -> int:
        return -(-self.length // self.batch_size)


def pin_memory_for(device: torch.device, enabled: bool) -> bool:
    """Pinned host memory pays only for copies to a CUDA device."""
    return enabled and device.type == "cuda"


__all__ = ["AUTO", "CoreSplit", "KeyBatches", "local_processes", "make_loader", "pin_memory_for", "split_cores"]
