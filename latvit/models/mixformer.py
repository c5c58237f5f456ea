"""MixFormer: "MixFormer: Mixing Features across Windows and Dimensions", Chen et al., CVPR 2022.

A four-stage pyramid of mixing blocks (7x7 window attention in parallel with a 3x3 depthwise conv, with
channel and spatial interactions; `latvit/layers/mixformer.py`) on a conv stem: three 3x3 Conv-BN-GELU
(the first with stride 2) and a 2x2 stride-2 conv + LayerNorm, so stage 1 is at stride 4. Between stages
a BatchNorm + 2x2 stride-2 conv doubles the width. A projection to 1280 channels before pooling helps the
small models.

Widths, depths and heads are the official PaddleClas `mixformer.py` (B0-B4); window 7, MLP ratio 4.
Any input that is a multiple of 32 works: a stage map that the 7x7 windows do not tile is padded to
window multiples inside each mixing block, as in the official code (at 224 every map is tiled: no padding).

latvit builds the final LayerNorm -> Linear(1280) -> GELU as its head's 1x1 Conv-BN-GELU (the BN folds
into the conv at deploy); docs/models/mixformer.md lists what this changes (a few thousand parameters).
"""

from __future__ import annotations

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2204.02557"
WINDOW, DWCONV_KERNEL, MLP_RATIO, PROJ_WIDTH = 7, 3, 4.0, 1280

# name: (stage-1 width, depths, heads); widths double every stage
CONFIGS = {
    "mixformer_b0": (24, (1, 2, 6, 6), (3, 6, 12, 24)),
    "mixformer_b1": (32, (1, 2, 6, 6), (2, 4, 8, 16)),
    "mixformer_b2": (32, (2, 2, 8, 8), (2, 4, 8, 16)),
    "mixformer_b3": (48, (2, 2, 8, 6), (3, 6, 12, 24)),
    "mixformer_b4": (64, (2, 2, 8, 8), (4, 8, 16, 32)),
}


def mixformer_spec(name: str, width: int, depths, heads, img_size: int = 224) -> NetSpec:
    """MixFormer spec: `depths` count mixing blocks per stage (the downsampling block is extra)."""
    half = width // 2
    stem = (
        BlockSpec("conv_bn_act", half, stride=2, act="gelu"),
        BlockSpec("conv_bn_act", half, act="gelu"),
        BlockSpec("conv_bn_act", half, act="gelu"),
        BlockSpec("mix_embed", width),
    )
    stages = []
    for i, (depth, h) in enumerate(zip(depths, heads)):
        w = width * 2**i
        down = (BlockSpec("mix_merge", w),) if i > 0 else ()
        block = BlockSpec("mixing", w, heads=h, kernel=DWCONV_KERNEL, patch=WINDOW, expansion=MLP_RATIO, act="gelu")
        stages.append(StageSpec(down + (block,) * depth))
    return NetSpec(
        name=name,
        stem=stem,
        stages=tuple(stages),
        head=HeadSpec(conv_width=PROJ_WIDTH, act="gelu"),
        img_size=img_size,
        family="mixformer",
        paper=PAPER,
    )


SPECS = {name: mixformer_spec(name, *cfg) for name, cfg in CONFIGS.items()}
