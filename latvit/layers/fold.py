"""Folding algebra the blocks use to simplify themselves for inference (their `fuse()` methods):
BatchNorm into the conv or linear that feeds it, a per-channel scale (LayerScale) into a branch's last
projection. `latvit.deploy.deploy` walks a model and calls the blocks' `fuse()`; the arithmetic lives here,
beside the layers, so a block needs nothing above its own layer to fold itself.

The helpers do the arithmetic in float64 and write back in the layer's dtype, so a folded fp32 model differs
from the original only by fp32 rounding of the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd


def _is_projection(layer: nn.Module) -> bool:
    """Conv (not transposed) or Linear: output channel `o` is row `o` of the weight."""
    return (isinstance(layer, _ConvNd) and not layer.transposed) or isinstance(layer, nn.Linear)


def foldable_bn(bn: nn.Module) -> bool:
    """A BatchNorm that is a fixed per-channel affine map in eval mode (it tracks running statistics)."""
    return isinstance(bn, _BatchNorm) and bn.running_mean is not None and bn.running_var is not None


def _channel_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(C,) -> (C, 1, ..., 1), broadcasting over the trailing dims of a weight shaped like `like`."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def _set(layer: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    dtype, device = layer.weight.dtype, layer.weight.device
    layer.weight = nn.Parameter(weight.to(dtype=dtype, device=device), requires_grad=layer.weight.requires_grad)
    layer.bias = None if bias is None else nn.Parameter(bias.to(dtype=dtype, device=device))


@torch.no_grad()
def fold_bn_(layer: nn.Module, bn: _BatchNorm) -> nn.Module:
    """Fold eval-mode `bn` into the conv or linear `layer` that feeds it, in place; returns `layer`.

    bn(layer(x)) = s * (W x + b - mean) + beta with s = gamma / sqrt(var + eps), so W' = s W (row-wise)
    and b' = s (b - mean) + beta. `bn` itself is left alone: the caller replaces it by `nn.Identity`.
    """
    if not _is_projection(layer) or not foldable_bn(bn):
        raise TypeError(f"cannot fold {type(bn).__name__} into {type(layer).__name__}")
    w = layer.weight.double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    s = (bn.running_var.double() + bn.eps).rsqrt()
    shift = -bn.running_mean.double() * s
    if bn.affine:
        s, shift = s * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
    _set(layer, w * _channel_view(s, w), b * s + shift)
    return layer


@torch.no_grad()
def fold_scale_(layer: nn.Module, scale: torch.Tensor) -> nn.Module:
    """Make `layer` (conv, linear or affine BatchNorm) compute `scale * layer(x)` for a per-channel
    `scale` of shape (C_out,), in place; returns `layer`. This is how a LayerScale after a branch's last
    projection disappears."""
    s = scale.detach().double().flatten()
    if _is_projection(layer):
        w = layer.weight.double()
        _set(layer, w * _channel_view(s, w), None if layer.bias is None else layer.bias.double() * s)
    elif isinstance(layer, _BatchNorm) and layer.affine:
        _set(layer, layer.weight.double() * s, layer.bias.double() * s)
    else:
        raise TypeError(f"cannot fold a per-channel scale into {type(layer).__name__}")
    return layer


def fold_layer_scale(ls: nn.Module, layer: nn.Module) -> nn.Module:
    """Fold a LayerScale module `ls` (anything with a per-channel `gamma`; `nn.Identity` is a no-op) into
    `layer`, the last projection of the branch it scales. Returns what replaces `ls`: `nn.Identity()`."""
    gamma = getattr(ls, "gamma", None)
    if gamma is None:
        return ls
    fold_scale_(layer, gamma)
    return nn.Identity()


def fold_sequential_(seq: nn.Sequential) -> nn.Sequential:
    """In an `nn.Sequential`, fold every BatchNorm that directly follows a conv or linear (in place)."""
    names = list(seq._modules)
    for prev, name in zip(names, names[1:]):
        layer, bn = seq._modules[prev], seq._modules[name]
        if _is_projection(layer) and foldable_bn(bn) and layer.weight.shape[0] == bn.num_features:
            fold_bn_(layer, bn)
            seq._modules[name] = nn.Identity()
    return seq
