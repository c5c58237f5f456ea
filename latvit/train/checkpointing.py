"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the model, its EMA, the optimiser, scheduler and loss-scaler states, where the run is
(epoch, batches done in that epoch, global step), the running loss sums of the epoch, the metrics so
far, and the RNG states of every rank (torch, CUDA, numpy, random). The file is written to a temporary
name and renamed, so a run killed while writing leaves the previous checkpoint intact. Everything in it
is plain tensors and Python scalars/containers, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latvit.errors import CheckpointError, first_line
from latvit.utils import atomic_write_bytes

FORMAT = "latvit-train-1"
LAST = "last.pt"


def rng_state() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable values."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomically write `payload` (plus the format tag) to `path`."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unreadable or foreign file
        raise CheckpointError(f"cannot read training checkpoint {path}: {first_line(e)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a latvit training checkpoint (format {FORMAT})")
    return payload


def evaluation_weights(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a run evaluates with: the EMA when the run kept one, else the model."""
    return payload["ema"] if payload.get("ema") is not None else payload["model"]


__all__ = ["FORMAT", "LAST", "evaluation_weights", "load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]
