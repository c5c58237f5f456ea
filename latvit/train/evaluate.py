"""Evaluation: top-1, top-5, loss and throughput of a classifier on a dataset (`latvit validate`).

Used by the trainer after every epoch (on the EMA weights, sharded across ranks without padding so
every image counts once) and on its own by `validate()`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

from latvit.data import BatchFetcher, Subset, Transformed, check_crop_pct, eval_transform, open_dataset
from latvit.deploy.compress import check_compression, compress
from latvit.deploy.sparsity import parse_sparsity
from latvit.pipeline.resolve import resolve_model
from latvit.train.checkpointing import FORMAT, evaluation_weights, load_checkpoint
from latvit.train.distributed import Dist, all_reduce_sum, pick_device
from latvit.train.loader import KeyBatches, make_loader, pin_memory_for


class _Shard(Dataset):
    """Every world_size-th item from `rank` on: an exact split of the evaluation set, no padding."""

    def __init__(self, base: Dataset, rank: int, world_size: int):
        self.base, self.indices = base, range(rank, len(base), world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]

    def batch(self, keys: list[int]):
        return BatchFetcher(self.base)[[self.indices[i] for i in keys]]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    d: Dist | None = None,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
    pin_memory: bool = True,
) -> dict[str, float]:
    """Run `model` (in eval mode) over `dataset` of (image tensor, label) items, whole batches at a time
    (`dataset.batch` where it has one: `Transformed`'s exact in-memory path).

    Returns {top1, top5 (percent), loss (mean cross-entropy), images, seconds, images_per_sec (end to
    end, data loading included), model_images_per_sec (forward passes only)}, summed over all ranks.
    Hits and losses are summed on the device and read once at the end.
    """
    d = d or Dist(device=next(model.parameters()).device)
    shard = _Shard(dataset, d.rank, d.world_size) if d.active else dataset
    loader = make_loader(
        shard, KeyBatches(len(shard), batch_size), workers=num_workers, pin_memory=pin_memory_for(d.device, pin_memory)
    )
    was_training = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=d.device)  # top-1 hits, top-5 hits, loss
    count = model_s = 0.0
    start = time.perf_counter()
    for images, labels in loader:
        images = images.to(d.device, non_blocking=True, memory_format=memory_format)  # (B, 3, S, S)
        labels = labels.to(d.device, non_blocking=True)  # (B,)
        t0 = time.perf_counter()
        with torch.autocast(d.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images).float()  # (B, num_classes)
        if d.device.type == "cuda":
            torch.cuda.synchronize(d.device)
        model_s += time.perf_counter() - t0
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices  # (B, k)
        hits = top.eq(labels[:, None])  # (B, k)
        sums[0] += hits[:, 0].sum()
        sums[1] += hits.any(dim=1).sum()
        sums[2] += F.cross_entropy(logits, labels, reduction="sum").double()  # as the host summed it
        count += labels.numel()
    seconds = time.perf_counter() - start
    model.train(was_training)
    correct1, correct5, loss_sum = sums.tolist()
    correct1, correct5, loss_sum, count = all_reduce_sum([correct1, correct5, loss_sum, count], d)
    count = max(count, 1.0)
    return {
        "top1": 100.0 * correct1 / count,
        "top5": 100.0 * correct5 / count,
        "loss": loss_sum / count,
        "images": int(count),
        "seconds": seconds,
        "images_per_sec": count / max(seconds, 1e-9),
        "model_images_per_sec": count / max(model_s, 1e-9),
    }


def run_config(model) -> dict:
    """The training configuration (RUN/config.yaml) of a run's saved model directory (RUN/best, RUN/model),
    as a dict; {} for anything else (a name, a spec JSON, a module). Its img_size and crop_pct are how the
    run's images were seen, so evaluation and int8 accuracy control use them."""
    if not isinstance(model, (str, Path)) or not Path(model).is_dir():
        return {}
    path = Path(model).parent / "config.yaml"
    if not path.is_file():
        return {}
    import yaml

    config = yaml.safe_load(path.read_text())
    return config if isinstance(config, dict) else {}


def eval_crop_pct(model) -> float:
    """The crop a run's images are evaluated at (its config's crop_pct; 0.875, timm's default, for anything
    else): held-out and accuracy-control images are prepared with it."""
    return float(run_config(model).get("crop_pct", 0.875))


def validate(
    model: str | Path,
    data: str,
    *,
    checkpoint: str | Path | None = None,
    img_size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    subset: int | None = None,
    crop_pct: float | None = None,
    device: str = "auto",
    threads: int = 0,
    tome: str | int = 0,
    sparsity: str | float | None = None,
) -> dict:
    """Evaluate a model on the validation split of `data` ('fashion-mnist', 'synthetic', an ImageFolder
    root or a directory of idx files).

    model: any model reference `latvit.pipeline.resolve_model` takes (a name, spec JSON, a saved directory
        with weights, `timm:NAME`); for a run's `best/` or `model/` directory the run's input size and crop
        are used.
    checkpoint: a latvit training checkpoint (`last.pt`: its EMA weights, input size and crop are used)
        or any checkpoint `resolve_model` loads into a latvit model (latvit, timm or official layouts).
    threads: torch CPU threads while evaluating (0 = torch's default; 1 is fastest on a busy machine).
    tome, sparsity: evaluate the model with token merging and/or pruned weights, no fine-tuning
        (`latvit.deploy.compress`; e.g. tome='keep0.5', sparsity='0.5' or '2:4').
    Returns the `evaluate` metrics plus model, data, img_size, crop_pct, tome and sparsity.
    """
    check_compression(tome, sparsity)  # before the data and the model load
    dev = pick_device(device)
    weights, config = checkpoint, run_config(model)
    if checkpoint is not None and Path(checkpoint).suffix == ".pt" and Path(checkpoint).is_file():
        try:
            payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception:  # not a training checkpoint: the model loader says what it is, in one line
            payload = None
        if isinstance(payload, dict) and payload.get("format") == FORMAT:
            payload = load_checkpoint(checkpoint)
            weights, config = evaluation_weights(payload), payload.get("config", {})
    img_size = img_size or config.get("img_size")
    crop_pct = crop_pct if crop_pct is not None else config.get("crop_pct", 0.875)
    check_crop_pct(crop_pct)  # before the data and the model load
    base = open_dataset(
        data,
        "val",
        synthetic_classes=config.get("synthetic_classes", 4),
        synthetic_size=config.get("synthetic_val", 128),
    )
    if subset:
        base = Subset(base, subset)
    # a run trained with a teacher saved a distillation head: build it so the weights fit
    resolved = resolve_model(
        model, img_size, weights, num_classes=len(base.classes), distill=bool(config.get("teacher"))
    )
    net, img_size = compress(resolved.model, tome, sparsity), resolved.img_size
    mean, std = resolved.mean, resolved.std
    dataset = Transformed(base, lambda s: eval_transform(s, mean, std, crop_pct=crop_pct), img_size)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = evaluate(net.to(dev), dataset, batch_size=batch_size, num_workers=num_workers, d=Dist(device=dev))
    finally:
        torch.set_num_threads(before)
    return {
        "model": resolved.label,
        "data": data,
        "img_size": img_size,
        "crop_pct": crop_pct,
        "tome": str(tome).strip(),
        "sparsity": parse_sparsity(sparsity),
        **result,
    }


__all__ = ["evaluate", "run_config", "validate"]
