"""Deploy folding: `deploy(model)` returns an inference copy with the algebra done once, ahead of time.

The protocol is duck-typed, as in timm: a module that knows how to simplify itself for inference has a
`fuse()` method (timm's `reparameterize()` and the older `switch_to_deploy()` are honoured too) that
either mutates the module in place and returns None, or returns a replacement module. `deploy` walks the
tree top-down (a block sees its children as built, e.g. BatchNorm still present), calls that method, and
then walks into the (possibly replaced) module's children. Two rules need no method and so cover any
model: dropout and drop path become `nn.Identity`, and in an `nn.Sequential` a conv or linear directly
followed by a BatchNorm is folded.

The folding arithmetic itself (`fold_bn_`, `fold_layer_scale`, ...) lives in `latvit.layers.fold`, beside the
blocks that use it.
"""

from __future__ import annotations

import copy

import torch.nn as nn
from torch.nn.modules.dropout import _DropoutNd

from latvit.deploy.sparsity import check_no_pruning_masks
from latvit.layers.fold import fold_sequential_

# names of the self-simplification method, in the order they are looked up (timm uses the latter two)
FUSE_METHODS = ("fuse", "reparameterize", "switch_to_deploy")


def _is_drop(module: nn.Module) -> bool:
    # timm's DropPath / DropBlock are matched by name so this file needs nothing but torch
    return isinstance(module, _DropoutNd) or type(module).__name__ in ("DropPath", "DropBlock2d")


def _fuse_one(module: nn.Module) -> nn.Module:
    """Apply the rules to one module (not its children); returns it or its replacement."""
    if _is_drop(module):
        return nn.Identity()
    for method in FUSE_METHODS:  # the module's own rule first (a Sequential subclass may fold its own BN)
        fuse = getattr(module, method, None)
        if callable(fuse):
            replacement = fuse()
            return module if replacement is None else replacement
    if isinstance(module, nn.Sequential):
        fold_sequential_(module)
    return module


def fuse_tree_(module: nn.Module) -> nn.Module:
    """Apply the deploy rules to `module` and then, top-down, to all its descendants, in place.
    Returns the module that takes `module`'s place (itself unless its `fuse()` returned a replacement)."""
    module = _fuse_one(module)
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = fuse_tree_(child)
    return module


def deploy(model: nn.Module) -> nn.Module:
    """An inference copy of `model`: eval mode, BatchNorm folded into the preceding conv/linear, LayerScale
    folded into the branch's last projection, attention biases precomputed, dropout and drop path removed.

    The original is not modified. Outputs equal the original's in eval mode up to fp32 rounding (latvit's
    tests hold every registered model to 1e-5 with random BatchNorm statistics). The copy is for inference:
    training it would train different parameters (a folded BN no longer normalises).
    """
    check_no_pruning_masks(model, "deploy")
    model = copy.deepcopy(model).eval()
    return fuse_tree_(model).eval()
