"""TRT-ViT: "TRT-ViT: TensorRT-oriented Vision Transformer", Xia et al., arXiv:2205.09579 (ByteDance).

A ResNet-like 5-stage pyramid designed by TensorRT latency. Stage 1 is the stem; stages 2-5 start with a
stride-2 block. Early stages are BottleNecks; MixBlockC (a Transformer producing R of the channels, then a
BottleNeck refining them locally) fills stage 5, and the last two blocks of stage 4 in TRT-ViT-C/D.

From the paper: the block designs, the depths of the four block stages (A 2-4-5-4, B 3-4-7-4, C 3-4-9-6,
D 4-5-9-5; the stem is stage 1, so the four numbers are stages 2-5), where the MixBlockCs go, R = 0.5,
MLP ratio 3, head dim 32, BN + ReLU in BottleNecks and LN + GELU in Transformers.
Reconstructed (the paper does not give them; docs/models/trtvit.md explains each): the ResNet-50 widths
(stem 64, stages 256-512-1024-2048, BottleNeck expansion 4), the 3x3 stride-2 stem, S per stage from PVT
(2 at 1/16, 1 at 1/32), K = 3, the strided projection of downsampling MixBlocks. Every one of them is an
ordinary spec field, so `dataclasses.replace` or `pyramid_spec(...)` changes it.

The guideline models of the paper's Sec. 2.1 are named specs too, so their findings can be re-measured on
any runtime: MixNetV (ResNet-50 with Transformer blocks in stage 5), MixNetA/B/C (MixBlockA/B/C there),
Refined-ResNet50 (depths 2-3-6-5).
"""

from __future__ import annotations

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2205.09579"

STEM_WIDTH = 64  # ResNet-50's stem width
WIDTHS = (256, 512, 1024, 2048)  # ResNet-50's stage widths, stages 2-5 (reconstructed: not in the paper)
RESNET50_DEPTHS = (3, 4, 6, 3)
STAGE_SR = (8, 4, 2, 1)  # keys/values spatial reduction S at 1/4, 1/8, 1/16, 1/32 resolution, as in PVT

# name: (blocks in stages 2-5, how many of them (at each stage's end) are `late_kind`, late_kind,
#        stage widths)
CONFIGS = {
    "trtvit_a": ((2, 4, 5, 4), (0, 0, 0, 4), "mixblock_c", WIDTHS),
    "trtvit_b": ((3, 4, 7, 4), (0, 0, 0, 4), "mixblock_c", WIDTHS),
    "trtvit_c": ((3, 4, 9, 6), (0, 0, 2, 6), "mixblock_c", WIDTHS),
    "trtvit_d": ((4, 5, 9, 5), (0, 0, 2, 5), "mixblock_c", WIDTHS),
    # guideline models (paper Sec. 2.1, Tables 1-3); MixNetV's Transformers are 1024 wide, the width of the
    # Transformer inside MixNetA/B/C's stage-5 blocks (R * 2048), so the four differ only in the block
    "mixnet_v": (RESNET50_DEPTHS, (0, 0, 0, 3), "transformer_sr", WIDTHS[:3] + (1024,)),
    "mixnet_a": (RESNET50_DEPTHS, (0, 0, 0, 3), "mixblock_a", WIDTHS),
    "mixnet_b": (RESNET50_DEPTHS, (0, 0, 0, 3), "mixblock_b", WIDTHS),
    "mixnet_c": (RESNET50_DEPTHS, (0, 0, 0, 3), "mixblock_c", WIDTHS),
    "refined_resnet50": ((2, 3, 6, 5), (0, 0, 0, 0), "bottleneck", WIDTHS),
}


def pyramid_spec(
    name: str,
    depths,
    late=(0, 0, 0, 0),
    late_kind: str = "mixblock_c",
    widths=WIDTHS,
    *,
    stem_width: int = STEM_WIDTH,
    ratio: float = 0.5,
    kernel: int = 3,
    sr=STAGE_SR,
    mlp_ratio: float = 3.0,
    head_dim: int = 32,
    img_size: int = 224,
) -> NetSpec:
    """A TRT-ViT-style 5-stage pyramid: a 3x3 stride-2 Conv-BN-ReLU stem (stage 1), then four stages of
    `depths[i]` blocks whose first has stride 2; the last `late[i]` blocks of stage i are `late_kind`
    (a Transformer or MixBlock with R = ratio, S = sr[i], K = kernel), the others ResNet BottleNecks.

    `pyramid_spec("resnet50", (3, 4, 6, 3))` is ResNet-50 with this stem (7x7 conv + max pool in the
    original); total stride 32, so any input size that is a multiple of 32 works.
    """
    stages = []
    for i, (width, depth, n_late) in enumerate(zip(widths, depths, late)):
        blocks = []
        for j in range(depth):
            stride = 2 if j == 0 else 1
            if j < depth - n_late:
                blocks.append(BlockSpec("bottleneck", width, stride=stride, kernel=3, expansion=4.0, act="relu"))
            else:
                blocks.append(
                    BlockSpec(
                        late_kind,
                        width,
                        stride=stride,
                        kernel=kernel,
                        ratio=ratio,
                        sr=sr[i],
                        expansion=mlp_ratio,
                        key_dim=head_dim,
                        act="gelu",
                    )
                )
        stages.append(StageSpec(tuple(blocks)))
    stem = (BlockSpec("conv_bn_act", stem_width, stride=2, act="relu", bias=False),)
    return NetSpec(
        name=name, stem=stem, stages=tuple(stages), head=HeadSpec(), img_size=img_size, family="trtvit", paper=PAPER
    )


SPECS = {name: pyramid_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    """No public TRT-ViT weights or other layouts exist: checkpoints load in latvit's own layout only."""
    return []
