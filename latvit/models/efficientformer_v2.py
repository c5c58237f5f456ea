"""EfficientFormerV2: "Rethinking Vision Transformers for MobileNet Size and Speed", Li et al., ICCV 2023.

All-4-D network: conv stem (two 3x3 stride-2 Conv-BN-GELU), local-FFN blocks everywhere, talking-head
attention with a depthwise conv on V in the last blocks of stages 3 and 4 (stride attention in stage 3),
and attention downsampling into stage 4. Per-block FFN expansion ratios as found by the paper's search
(taken from the official repository and timm).
"""
from __future__ import annotations

import re

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2212.08059"

# name: (widths, depths, attention blocks at the end of stages 3 and 4, per-block FFN expansion ratios)
CONFIGS = {
    "efficientformerv2_s0": ((32, 48, 96, 176), (2, 2, 6, 4), 2,
                             ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "efficientformerv2_s1": ((32, 48, 120, 224), (3, 3, 9, 6), 2,
                             ((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "efficientformerv2_s2": ((32, 64, 144, 288), (4, 4, 12, 8), 4,
                             ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4))),
    "efficientformerv2_l": ((40, 80, 192, 384), (5, 5, 15, 10), 6,
                            ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
                             (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}


def efficientformer_v2_spec(name: str, widths, depths, num_vit: int, ratios, img_size: int = 224) -> NetSpec:
    stem = (BlockSpec("conv_bn_act", widths[0] // 2, stride=2), BlockSpec("conv_bn_act", widths[0], stride=2))
    stages = []
    for i, (width, depth) in enumerate(zip(widths, depths)):
        if i == 0:
            blocks = []
        elif i < 3:
            blocks = [BlockSpec("conv_bn_act", width, stride=2, act="none")]
        else:
            blocks = [BlockSpec("attn_downsample", width, key_dim=16)]
        for j in range(depth):
            attn = i >= 2 and j >= depth - num_vit
            blocks.append(BlockSpec("attn_ffn" if attn else "ffn_local", width, expansion=float(ratios[i][j]),
                                    attn_stride=2 if attn and i == 2 else 1))
        stages.append(StageSpec(tuple(blocks)))
    return NetSpec(name=name, stem=stem, stages=tuple(stages), head=HeadSpec(norm="bn", distill=True),
                   img_size=img_size, family="efficientformerv2", paper=PAPER)


SPECS = {name: efficientformer_v2_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    """(timm prefix, latvit prefix) pairs: timm keeps the downsample apart; latvit makes it block 0."""
    pairs = [("stem.conv1.", "stem.0."), ("stem.conv2.", "stem.1."),
             ("norm.", "head.norm."), ("head.", "head.fc."), ("head_dist.", "head.fc_dist.")]
    for si, stage in enumerate(spec.stages):
        first = stage.blocks[0].kind
        offset = 1 if first in ("conv_bn_act", "attn_downsample") else 0
        if first == "conv_bn_act":
            pairs.append((f"stages.{si}.downsample.conv.", f"stages.{si}.blocks.0."))
        elif first == "attn_downsample":
            pairs.append((f"stages.{si}.downsample.", f"stages.{si}.blocks.0."))
        pairs += [(f"stages.{si}.blocks.{j}.", f"stages.{si}.blocks.{j + offset}.")
                  for j in range(len(stage.blocks) - offset)]
    return pairs


def is_official(state_dict: dict) -> bool:
    return any(re.match(r"(patch_embed|network)\.", k) for k in state_dict)
