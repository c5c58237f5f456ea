"""MobileViT: "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer",
Mehta & Rastegari, ICLR 2022.

A MobileNetV2 backbone whose last three stages each end in a MobileViT block (local conv + transformer
over unfolded 2x2 patches + fusion). Default input 256, inputs scaled to [0, 1] (mean 0, std 1), as in
ml-cvnets and timm.
"""
from __future__ import annotations

import re

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2110.02178"

# name: (stage widths, MobileViT transformer widths, transformer depths, MV2 expansion, final conv width)
CONFIGS = {
    "mobilevit_xxs": ((16, 24, 48, 64, 80), (64, 80, 96), (2, 4, 3), 2.0, 320),
    "mobilevit_xs": ((32, 48, 64, 80, 96), (96, 120, 144), (2, 4, 3), 4.0, 384),
    "mobilevit_s": ((32, 64, 96, 128, 160), (144, 192, 240), (2, 4, 3), 4.0, 640),
}
MV2_DEPTHS = (1, 3)  # inverted residuals in the first two stages; stages 3-5 have one + a MobileViT block


def mobilevit_spec(name: str, widths, dims, depths, expansion: float, final_width: int, img_size: int = 256) -> NetSpec:
    def mv2(width, stride=1):
        return BlockSpec("mv2", width, stride=stride, expansion=expansion, act="silu", bias=False)

    stages = [StageSpec((mv2(widths[0]),)),
              StageSpec((mv2(widths[1], 2),) + (mv2(widths[1]),) * (MV2_DEPTHS[1] - 1))]
    for width, dim, depth in zip(widths[2:], dims, depths):
        stages.append(StageSpec((mv2(width, 2), BlockSpec("mobilevit", width, dim=dim, depth=depth, heads=4,
                                                           expansion=2.0, patch=2, act="silu", bias=False))))
    return NetSpec(name=name, stem=(BlockSpec("conv_bn_act", 16, stride=2, act="silu", bias=False),),
                   stages=tuple(stages), head=HeadSpec(conv_width=final_width, act="silu"), img_size=img_size,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), family="mobilevit", paper=PAPER)


SPECS = {name: mobilevit_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    pairs = [("stem.conv.", "stem.0.conv."), ("stem.bn.", "stem.0.bn."),
             ("final_conv.", "head.conv."), ("head.fc.", "head.fc.")]
    for si, stage in enumerate(spec.stages):
        pairs += [(f"stages.{si}.{bi}.", f"stages.{si}.blocks.{bi}.") for bi in range(len(stage.blocks))]
    return pairs


def is_official(state_dict: dict) -> bool:
    return any(re.match(r"(conv_1|layer_1|conv_1x1_exp|classifier)\.", k) for k in state_dict)
