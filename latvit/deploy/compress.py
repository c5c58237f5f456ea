"""The float post-training compressions behind the command line's `--tome` and `--sparsity`, as one step.

`latvit bench`, `latvit export` and `latvit validate` take the same two options and call `compress` on the
model they measure, ship or evaluate (after deploy folding where they fold, so pruning sees the weights
that ship, BatchNorm already folded into them). int8 is not here: it produces a runtime's artifact, not a
PyTorch model (`latvit.deploy.quantize`, `latvit quantize`).

Settings are written as on the command line: token merging as `parse_tome` reads it ('13', '26x6',
'keep0.5', '8+keep0.5'; '0' is none), sparsity as `parse_sparsity` reads it ('0.5' for global magnitude
pruning, '2:4'; '0' is none).
"""

from __future__ import annotations

import torch.nn as nn

from latvit.deploy.sparsity import parse_sparsity, sparsify
from latvit.deploy.token_merging import merges_tokens, parse_tome, tome


def check_compression(tome_setting: str | int = 0, sparsity: str | float | None = None) -> None:
    """Raise a one-line LatvitError for a setting `compress` would reject, before any work starts."""
    parse_tome(tome_setting)
    parse_sparsity(sparsity)


def compress(model: nn.Module, tome_setting: str | int = 0, sparsity: str | float | None = None) -> nn.Module:
    """`model` pruned (`sparsity`, zeros baked in), then with token merging (`tome_setting`); a new model
    when either applies, `model` itself when neither does. Raises LatvitError on a bad setting, or when
    merging does not apply to the model (e.g. keepF on a model without token-sequence attention)."""
    merging, pruning = parse_tome(tome_setting), parse_sparsity(sparsity)
    if pruning is not None:
        model = sparsify(model, pruning)
    if merges_tokens(**merging):
        model = tome(model, **merging)
    return model
