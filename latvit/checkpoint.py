"""Reading checkpoints and loading them strictly into latvit models.

Accepted: `.safetensors`, or `.pth`/`.pt`/`.bin` read with `torch.load(weights_only=True)`; the state
dict bare or wrapped under `model`, `state_dict` or `model_state_dict`; DDP's `module.` prefix. Key
layouts: latvit's own, timm's, or the family's official repository (each family module says how to
rename). Loading is strict: missing keys, unexpected keys and shape mismatches are all listed in one
error. Relative-position attention biases trained at another input size are resized (bicubic over
their grid, as the official EfficientFormerV2 segmentation backbone does).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import torch
import torch.nn as nn
import torch.nn.functional as F

from latvit.errors import CheckpointError, first_line

WRAPPER_KEYS = ("model", "state_dict", "model_state_dict")
DERIVED_KEYS = ("attention_bias_idxs",)  # recomputed from the input size, never loaded


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for unreadable files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first_line(e)}; is it a complete PyTorch (.pth, .pt) "
            f"or safetensors weights file?"
        ) from None
    return unwrap_state_dict(sd, str(path))


def unwrap_state_dict(sd, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    for key in WRAPPER_KEYS:
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(
            f"{where} does not hold a state dict (tensors by name, possibly under {'/'.join(WRAPPER_KEYS)})"
        )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def rename_prefixes(sd: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename keys by the longest matching source prefix; keys matching none are kept as they are."""
    pairs = sorted(pairs, key=lambda p: -len(p[0]))
    out = {}
    for k, v in sd.items():
        for src, dst in pairs:
            if k.startswith(src):
                k = dst + k[len(src) :]
                break
        out[k] = v
    return out


def resize_attention_bias(bias: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(heads, h0*w0) -> (heads, h*w), bicubic over the square grid of relative offsets."""
    heads, n0 = bias.shape
    s0, s1 = math.isqrt(n0), math.isqrt(shape[1])
    if s0 * s0 != n0 or s1 * s1 != shape[1] or heads != shape[0]:
        raise CheckpointError(f"cannot resize an attention bias of shape {tuple(bias.shape)} to {tuple(shape)}")
    grid = bias.reshape(1, heads, s0, s0).float()
    return F.interpolate(grid, size=(s1, s1), mode="bicubic", align_corners=False).reshape(heads, -1).to(bias.dtype)


def to_latvit_keys(sd: dict[str, torch.Tensor], model: nn.Module, family: ModuleType | None) -> dict[str, torch.Tensor]:
    """Detect the layout (latvit, official, timm) and rename to latvit's keys."""
    sd = {k: v for k, v in sd.items() if not k.endswith(DERIVED_KEYS)}
    own = set(model.state_dict())
    if family is None or set(sd) <= own:
        return sd
    if hasattr(family, "official_to_timm") and family.is_official(sd):
        sd = family.official_to_timm(sd)
        sd = {k: v for k, v in sd.items() if not k.endswith(DERIVED_KEYS)}
    return rename_prefixes(sd, family.timm_prefix_map(model.spec))


def load_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], family: ModuleType | None = None, where: str = "checkpoint"
) -> None:
    """Strictly load `sd` (any supported layout) into `model`; raise CheckpointError listing every problem."""
    sd = to_latvit_keys(sd, model, family)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = []
    for k in sorted(set(own) & set(sd)):
        if sd[k].shape != own[k].shape:
            if k.endswith("attention_biases"):
                sd[k] = resize_attention_bias(sd[k], own[k].shape)
            else:
                mismatched.append(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}")
    if missing or unexpected or mismatched:

        def show(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")

        parts = [
            f"{len(missing)} missing key(s): {show(missing)}" if missing else "",
            f"{len(unexpected)} unexpected key(s): {show(unexpected)}" if unexpected else "",
            f"{len(mismatched)} shape mismatch(es): {show(mismatched)}" if mismatched else "",
        ]
        raise CheckpointError(
            f"{where} does not match {model.spec.name}: "
            + "; ".join(p for p in parts if p)
            + " (check the model name, num_classes and img_size)"
        )
    model.load_state_dict(sd, strict=True)
