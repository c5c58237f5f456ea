"""EfficientFormer (V1): "EfficientFormer: Vision Transformers at MobileNet Speed", Li et al., NeurIPS 2022.

Conv stem (two 3x3 stride-2 Conv-BN-ReLU), four stages of MB4D blocks with a 3x3 stride-2 Conv-BN
between stages, and the last `num_vit` blocks of the last stage as MB3D attention blocks on tokens
(a single reshape in the whole network). Widths and depths as in the paper's Table 8 and timm.
"""

from __future__ import annotations

import re

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2206.01191"

# name: (widths, depths, MB3D blocks in the last stage)
CONFIGS = {
    "efficientformer_l1": ((48, 96, 224, 448), (3, 2, 6, 4), 1),
    "efficientformer_l3": ((64, 128, 320, 512), (4, 4, 12, 6), 4),
    "efficientformer_l7": ((96, 192, 384, 768), (6, 6, 18, 8), 8),
}


def efficientformer_spec(name: str, widths, depths, num_vit: int, img_size: int = 224) -> NetSpec:
    """EfficientFormer spec: `depths` count MB4D+MB3D blocks per stage (the downsampling conv is extra)."""
    stem = (
        BlockSpec("conv_bn_act", widths[0] // 2, stride=2, act="relu"),
        BlockSpec("conv_bn_act", widths[0], stride=2, act="relu"),
    )
    stages = []
    for i, (width, depth) in enumerate(zip(widths, depths)):
        vit = num_vit if i == len(widths) - 1 else 0
        down = (BlockSpec("conv_bn_act", width, stride=2, act="none"),) if i > 0 else ()
        stages.append(
            StageSpec(down + (BlockSpec("meta4d", width),) * (depth - vit) + (BlockSpec("meta3d", width),) * vit)
        )
    return NetSpec(
        name=name,
        stem=stem,
        stages=tuple(stages),
        head=HeadSpec(norm="ln", distill=True),
        img_size=img_size,
        family="efficientformer",
        paper=PAPER,
    )


SPECS = {name: efficientformer_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    """(timm prefix, latvit prefix) pairs. timm keeps the downsample conv apart from the blocks and a
    parameter-free `Flat` module among them; latvit has the downsample as block 0 and no Flat."""
    pairs = [
        ("stem.conv1.", "stem.0.conv."),
        ("stem.norm1.", "stem.0.bn."),
        ("stem.conv2.", "stem.1.conv."),
        ("stem.norm2.", "stem.1.bn."),
        ("norm.", "head.norm."),
        ("head.", "head.fc."),
        ("head_dist.", "head.fc_dist."),
    ]
    for si, stage in enumerate(spec.stages):
        kinds = [b.kind for b in stage.blocks]
        offset = 1 if kinds[0] == "conv_bn_act" else 0
        if offset:
            pairs += [
                (f"stages.{si}.downsample.conv.", f"stages.{si}.blocks.0.conv."),
                (f"stages.{si}.downsample.norm.", f"stages.{si}.blocks.0.bn."),
            ]
        timm_idx = 0
        for bi in range(offset, len(kinds)):
            if kinds[bi] == "meta3d" and (bi == offset or kinds[bi - 1] != "meta3d"):
                timm_idx += 1  # timm's Flat() sits before the first MB3D block
            pairs.append((f"stages.{si}.blocks.{timm_idx}.", f"stages.{si}.blocks.{bi}."))
            timm_idx += 1
    return pairs


def official_to_timm(state_dict: dict) -> dict:
    """Snap's `network.N.*` layout -> timm names (timm ships this remap; latvit reuses it)."""
    from timm.models.efficientformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, None)


def is_official(state_dict: dict) -> bool:
    """snap-research's root names (`patch_embed.`, `network.`, V1 and V2 alike); timm and latvit use `stem.` /
    `stages.`."""
    return any(re.match(r"(patch_embed|network)\.", k) for k in state_dict)
