"""Deploy-time transforms, each a function returning a new model or artifact:
`deploy(model)` (algebraic folding), `tome(model, r)` (token merging), `quantize(model, runtime, calib, path)`
(int8 through the runtime's own tooling), `prune_magnitude` / `prune_2_4` (sparsity), and `compress(model,
tome, sparsity)`: merging and pruning as the command line's `--tome` / `--sparsity` write them.

`latvit.deploy` (the attribute of the top-level package) is the function; the helpers that layers use to
fold themselves live in `latvit.layers.fold` (re-exported here for users).
"""

from latvit.deploy.compress import compress
from latvit.deploy.fold import deploy, fuse_tree_
from latvit.deploy.quantize import quantize
from latvit.deploy.sparsity import make_permanent, prune_2_4, prune_magnitude, sparsify
from latvit.deploy.token_merging import tome
from latvit.layers.fold import fold_bn_, fold_layer_scale, fold_scale_, fold_sequential_, foldable_bn

__all__ = [
    "compress",
    "deploy",
    "fold_bn_",
    "fold_layer_scale",
    "fold_scale_",
    "fold_sequential_",
    "foldable_bn",
    "fuse_tree_",
    "make_permanent",
    "prune_2_4",
    "prune_magnitude",
    "quantize",
    "sparsify",
    "tome",
]
