"""Weight inheritance: a subnet of a search space takes its weights from the trained supernet.

Every spec of a space builds modules with the same parameter names as the largest spec (stage i, block j
is `stages.i.blocks.j` in both), and each tensor of a subnet is no larger than the supernet's along every
dimension, so a subnet inherits the leading slice of each supernet tensor (the channel ordering that
slimmable networks and once-for-all supernets train for; a fused q/k/v projection per chunk, `leading_slice`).
Blocks a shallower stage lacks are dropped.
BatchNorm statistics of a sliced network no longer match its activations, so they are re-estimated on a
few batches (`recalibrate_bn`), as once-for-all does, instead of keeping one BN per width.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from latvit.errors import LatvitError


def block_map(supernet_spec, subnet_spec) -> dict[str, str]:
    """Subnet block path -> supernet block path: within a stage, the r-th block of a kind inherits from the
    supernet's r-th block of that kind (a stage with fewer MB4D blocks keeps its MB3D blocks' weights).
    A subnet with more blocks of a kind than the supernet (EfficientFormer: fewer MB3D leave room for
    more MB4D) shares the supernet's last block of that kind."""
    mapping = {}
    for si, (sup, sub) in enumerate(zip(supernet_spec.stages, subnet_spec.stages)):
        by_kind: dict[str, list[int]] = {}
        for j, b in enumerate(sup.blocks):
            by_kind.setdefault(b.kind, []).append(j)
        seen: dict[str, int] = {}
        for j, b in enumerate(sub.blocks):
            rank = seen.get(b.kind, 0)
            seen[b.kind] = rank + 1
            if by_kind.get(b.kind):  # beyond the supernet's count of this kind: share its last such block
                source = by_kind[b.kind][min(rank, len(by_kind[b.kind]) - 1)]
                mapping[f"stages.{si}.blocks.{j}."] = f"stages.{si}.blocks.{source}."
    return mapping


def _source_name(name: str, mapping: dict[str, str]) -> str:
    for prefix, target in mapping.items():
        if name.startswith(prefix):
            return target + name[len(prefix) :]
    return name


def fused_projections(model: nn.Module) -> dict[str, int]:
    """Tensor name -> chunk count for every fused projection in `model`: a module declares them in its class
    attribute `fused_projections` ({child name: chunks}), e.g. MobileViT's attention {"qkv": 3}, whose output
    rows are stacked (chunks, width): q, k and v."""
    fused = {}
    for path, module in model.named_modules():
        for child, chunks in getattr(module, "fused_projections", {}).items():
            fused.update({f"{path}.{child}.{leaf}".lstrip("."): chunks for leaf in ("weight", "bias")})
    return fused


def leading_slice(src: torch.Tensor, shape: tuple[int, ...], chunks: int = 1) -> torch.Tensor:
    """The leading `shape` slice of the supernet tensor `src` (a view). With `chunks` > 1 (a fused projection,
    `fused_projections`) the output rows are sliced chunk by chunk, so that a narrower subnet's keys come from
    the supernet's keys (a plain leading slice of a (3 D, D) qkv weight would hand it part of the queries)."""
    if chunks == 1 or src.shape[0] == shape[0]:
        return src[tuple(slice(0, d) for d in shape)]
    stacked = src.reshape(chunks, src.shape[0] // chunks, *src.shape[1:])  # (chunks, D, ...)
    return stacked[(slice(None), slice(0, shape[0] // chunks), *(slice(0, d) for d in shape[1:]))].reshape(shape)


def inherit_weights(supernet: nn.Module, subnet: nn.Module) -> nn.Module:
    """Copy into `subnet` (in place) the leading slice of each corresponding tensor of `supernet`."""
    mapping = block_map(supernet.spec, subnet.spec) if hasattr(supernet, "spec") else {}
    source = supernet.state_dict()
    source = {
        name: source[_source_name(name, mapping)]
        for name in subnet.state_dict()
        if _source_name(name, mapping) in source
    }
    target = subnet.state_dict()
    missing = [k for k in target if k not in source]
    if missing:
        raise LatvitError(
            f"subnet has {len(missing)} tensors the supernet lacks (e.g. {missing[0]}): "
            "is it from the same search space?"
        )
    fused, sliced = fused_projections(subnet), {}
    for name, dst in target.items():
        src = source[name]
        if src.dim() != dst.dim() or any(s < d for s, d in zip(src.shape, dst.shape)):
            if src.shape == dst.shape or dst.dim() == 0:
                sliced[name] = src
                continue
            raise LatvitError(f"{name}: subnet shape {tuple(dst.shape)} exceeds supernet shape {tuple(src.shape)}")
        sliced[name] = leading_slice(src, tuple(dst.shape), fused.get(name, 1)).clone()
    subnet.load_state_dict(sliced)
    return subnet


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, max_batches: int | None = None) -> nn.Module:
    """Re-estimate every BatchNorm's running mean/var on `batches` (an iterable of input tensors or
    (input, label) pairs; the first `max_batches` of them, default all) with a cumulative average;
    returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the calibration batches
    model.train()
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    return model.eval()
