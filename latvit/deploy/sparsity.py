"""Weight sparsity: unstructured magnitude pruning and 2:4 semi-structured sparsity, via torch's pruning
utilities (`torch.nn.utils.prune`), so fine-tuning keeps the zeros for free.

While a model is pruned, each pruned weight is `weight_orig * weight_mask` (a forward pre-hook), so the
gradient of a masked weight never brings it back: fine-tune with any optimizer, then `make_permanent`
bakes the zeros into plain weights for export. Which runtimes turn the zeros into speed is measured in
benchmarks/compression.py (on CPU, none of ONNX Runtime, OpenVINO fp32 or XNNPACK skips zero weights).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils import prune

from latvit.errors import LatvitError


def prunable_layers(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") for every Linear and non-depthwise Conv2d: the matrix products worth sparsifying
    (depthwise convs have 9 weights per channel; pruning them saves nothing measurable)."""
    layers = []
    for m in model.modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1):
            layers.append((m, "weight"))
    return layers


def prune_magnitude(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of `model` with the `sparsity` fraction of smallest-magnitude weights (global over all
    prunable layers) masked to zero; masks stay attached for fine-tuning."""
    if not 0.0 <= sparsity < 1.0:
        raise LatvitError(f"sparsity must be in [0, 1), got {sparsity}")
    model = copy.deepcopy(model)
    prune.global_unstructured(prunable_layers(model), pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


class TwoFourPruning(prune.BasePruningMethod):
    """Keep the 2 largest-magnitude weights of every 4 consecutive input channels (the N:M pattern of
    sparse tensor cores): for a linear along its input row, for a k x k conv along C_in at each kernel tap
    (the layout sparse kernels read, channels last), never across taps."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if t.shape[1] % 4:
            raise LatvitError(f"2:4 sparsity needs a multiple of 4 input channels, got {t.shape[1]}")
        last = t.movedim(1, -1)  # (C_out, [k, k,] C_in): input channels innermost
        groups = last.abs().reshape(*last.shape[:-1], -1, 4)  # (C_out, [k, k,] C_in / 4, 4)
        keep = groups.topk(2, dim=-1).indices
        mask = torch.zeros_like(groups).scatter_(-1, keep, 1.0).reshape(last.shape).movedim(-1, 1)
        return mask * default_mask


def prune_2_4(model: nn.Module) -> nn.Module:
    """A copy of `model` with 2:4 sparsity on every prunable layer whose input channels are a multiple of 4
    (others, e.g. an RGB stem conv, are left dense and reported by `sparsity_report`)."""
    model = copy.deepcopy(model)
    for module, name in prunable_layers(model):
        if module.weight.shape[1] % 4 == 0:
            TwoFourPruning.apply(module, name)
    return model


def check_no_pruning_masks(model: nn.Module, what: str) -> None:
    """Raise a one-line LatvitError if `model` still carries pruning masks (`weight = weight_orig * mask`
    is recomputed by a hook each forward, which copying and folding cannot follow)."""
    if any(
        isinstance(hook, prune.BasePruningMethod)
        for m in model.modules()
        for hook in getattr(m, "_forward_pre_hooks", {}).values()
    ):
        raise LatvitError(
            f"{what} needs plain weights, and this model still has pruning masks: "
            f"call latvit.deploy.make_permanent(model) after fine-tuning first"
        )


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning re-parametrisation in place: weights become plain tensors with zeros in them."""
    for module in model.modules():
        for name in [
            k
            for k, hook in getattr(module, "_forward_pre_hooks", {}).items()
            if isinstance(hook, prune.BasePruningMethod)
        ]:
            prune.remove(module, module._forward_pre_hooks[name]._tensor_name)
    return model


def sparsity_report(model: nn.Module) -> dict[str, float]:
    """Share of zero weights over the prunable layers, and over all parameters."""
    layers = prunable_layers(model)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in layers)
    total = sum(m.weight.numel() for m, _ in layers)
    # other parameters: everything but the pruned layers' weights (and their dense `weight_orig` copies)
    pruned = {id(m) for m, _ in layers}
    others = [
        p
        for m in model.modules()
        for n, p in m.named_parameters(recurse=False)
        if not (id(m) in pruned and n in ("weight", "weight_orig"))
    ]
    all_zeros = zeros + sum(int((p == 0).sum()) for p in others)
    all_total = total + sum(p.numel() for p in others)
    return {
        "prunable_sparsity": zeros / max(total, 1),
        "overall_sparsity": all_zeros / max(all_total, 1),
        "prunable_params": total,
    }


def parse_sparsity(text: str | float | None) -> float | str | None:
    """A sparsity setting as the command line writes it: a fraction in (0, 1), e.g. '0.5' (global magnitude
    pruning), or '2:4' (the semi-structured pattern); '0', '' and None mean none (returned as None)."""
    value = "" if text is None else str(text).strip()
    if value in ("", "0", "0.0", "none"):
        return None
    if value == "2:4":
        return value
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0.0 < fraction < 1.0:
        raise LatvitError(f"sparsity '{text}': expected a pruned fraction in (0, 1), e.g. 0.5, or 2:4")
    return fraction


def sparsify(model: nn.Module, setting: float | str) -> nn.Module:
    """A copy of `model` pruned as `setting` says (a `parse_sparsity` result: a fraction or '2:4'), with the
    zeros baked into plain weights (`make_permanent`): ready to evaluate or export."""
    pruned = prune_2_4(model) if setting == "2:4" else prune_magnitude(model, float(setting))
    return make_permanent(pruned)
