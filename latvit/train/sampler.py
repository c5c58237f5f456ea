"""Batch sampling: shuffling, distributed sharding, MobileViT's multi-scale batches, resumable positions.

`ScaleBatchSampler` yields batches of `(index, size)` pairs. Each epoch's batches are a pure function
of (seed, epoch), so a resumed run skips the batches it already trained on and continues with the same
ones an uninterrupted run would see.

Multi-scale (MobileViT, ml-cvnets' variable batch sampler): every batch draws one resolution from
`sizes` and holds `round(batch_size * (img_size / size)^2)` images, so each batch costs about the same.
In distributed runs the permutation is sharded across ranks as torch's DistributedSampler does (padded
to a multiple of the world size, rank r takes every world_size-th index), and every rank draws the same
sequence of sizes: all ranks run the same number of steps with batches of the same shape.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler

from latvit.errors import LatvitError

MULTISCALE_RATIOS = (0.625, 0.75, 1.0, 1.125, 1.25)  # ml-cvnets: {160, 192, 256, 288, 320} around 256


def default_multiscale_sizes(img_size: int, multiple: int) -> tuple[int, ...]:
    """MobileViT's five resolutions around `img_size`, rounded to a multiple of the network's stride."""
    sizes = {max(multiple, int(round(img_size * r / multiple)) * multiple) for r in MULTISCALE_RATIOS}
    return tuple(sorted(sizes))


def scaled_batch_size(batch_size: int, img_size: int, size: int, multiple: int = 1) -> int:
    """Batch size at `size` that keeps batch_size * img_size^2 pixels per batch, rounded to a multiple of
    `multiple` (2 under mixup/cutmix, which pair each image with the flipped batch)."""
    n = batch_size * (img_size / size) ** 2
    return max(multiple, int(round(n / multiple)) * multiple)


class ScaleBatchSampler(Sampler):
    """Batches of (index, size) for one rank. `set_epoch(epoch, start_batch)` selects the epoch and where
    to resume in it; `len()` is the number of batches still to come in that epoch."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        img_size: int,
        sizes: tuple[int, ...] = (),
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_multiple: int = 1,
    ):
        if num_samples < 1:
            raise LatvitError("the dataset is empty")
        if world_size > num_samples:
            raise LatvitError(f"{world_size} processes but only {num_samples} samples")
        self.num_samples, self.batch_size, self.img_size = num_samples, batch_size, img_size
        self.sizes = tuple(sizes) or (img_size,)
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size, self.batch_multiple = rank, world_size, batch_multiple
        self.epoch, self.start_batch = 0, 0
        self._cache: tuple[int, list] | None = None
        # every size an epoch may draw first must fit the shard, or that epoch has no full batch (no steps)
        largest = max(scaled_batch_size(batch_size, img_size, size, batch_multiple) for size in self.sizes)
        if drop_last and largest * world_size > num_samples + (-num_samples % world_size):
            scaled = f" (multi-scale: {largest} at {min(self.sizes)} px)" if largest != batch_size else ""
            raise LatvitError(
                f"batch size {batch_size}{scaled} x {world_size} process(es) is larger than the dataset "
                f"({num_samples} samples); lower --batch-size"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(self.num_samples, generator=g) if self.shuffle else torch.arange(self.num_samples)
        pad = -self.num_samples % self.world_size
        if pad:  # as DistributedSampler: repeat the first indices so every rank gets as many
            order = torch.cat([order, order[:pad]])
        shard = order[self.rank :: self.world_size].tolist()
        batches, i = [], 0
        while i < len(shard):
            # drawn from the same generator on every rank: the same sizes, so the same number of steps
            size = (
                self.sizes[int(torch.randint(len(self.sizes), (1,), generator=g))]
                if len(self.sizes) > 1
                else self.sizes[0]
            )
            n = scaled_batch_size(self.batch_size, self.img_size, size, self.batch_multiple)
            chunk = shard[i : i + n]
            if len(chunk) < n and self.drop_last:
                break
            batches.append([(idx, size) for idx in chunk])
            i += n
        self._cache = (epoch, batches)
        return batches

    def __iter__(self):
        yield from self.epoch_batches(self.epoch)[self.start_batch :]

    def __len__(self) -> int:
        return max(0, len(self.epoch_batches(self.epoch)) - self.start_batch)


__all__ = ["MULTISCALE_RATIOS", "ScaleBatchSampler", "default_multiscale_sizes", "scaled_batch_size"]
