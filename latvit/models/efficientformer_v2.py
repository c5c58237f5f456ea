"""EfficientFormerV2: "Rethinking Vision Transformers for MobileNet Size and Speed", Li et al., ICCV 2023.

All-4-D network: conv stem (two 3x3 stride-2 Conv-BN-GELU), local-FFN blocks everywhere, talking-head
attention with a depthwise conv on V in the last blocks of stages 3 and 4 (stride attention in stage 3),
and attention downsampling into stage 4. Per-block FFN expansion ratios as found by the paper's search
(taken from the official repository and timm).
"""

from __future__ import annotations

import re

from latvit.models.efficientformer import is_official as is_official  # snap-research names V1 and V2 alike
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2212.08059"

# name: (widths, depths, attention blocks at the end of stages 3 and 4, per-block FFN expansion ratios)
CONFIGS = {
    "efficientformerv2_s0": ((32, 48, 96, 176), (2, 2, 6, 4), 2, ((4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "efficientformerv2_s1": (
        (32, 48, 120, 224),
        (3, 3, 9, 6),
        2,
        ((4,) * 3, (4,) * 3, (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4)),
    ),
    "efficientformerv2_s2": (
        (32, 64, 144, 288),
        (4, 4, 12, 8),
        4,
        ((4,) * 4, (4,) * 4, (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4)),
    ),
    "efficientformerv2_l": (
        (40, 80, 192, 384),
        (5, 5, 15, 10),
        6,
        ((4,) * 5, (4,) * 5, (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 4, 3, 3, 3, 3, 4, 4, 4)),
    ),
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
            blocks.append(
                BlockSpec(
                    "attn_ffn" if attn else "ffn_local",
                    width,
                    expansion=float(ratios[i][j]),
                    attn_stride=2 if attn and i == 2 else 1,
                )
            )
        stages.append(StageSpec(tuple(blocks)))
    return NetSpec(
        name=name,
        stem=stem,
        stages=tuple(stages),
        head=HeadSpec(norm="bn", distill=True),
        img_size=img_size,
        family="efficientformerv2",
        paper=PAPER,
    )


SPECS = {name: efficientformer_v2_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    """(timm prefix, latvit prefix) pairs: timm keeps the downsample apart; latvit makes it block 0."""
    pairs = [
        ("stem.conv1.", "stem.0."),
        ("stem.conv2.", "stem.1."),
        ("norm.", "head.norm."),
        ("head.", "head.fc."),
        ("head_dist.", "head.fc_dist."),
    ]
    for si, stage in enumerate(spec.stages):
        first = stage.blocks[0].kind
        offset = 1 if first in ("conv_bn_act", "attn_downsample") else 0
        if first == "conv_bn_act":
            pairs.append((f"stages.{si}.downsample.conv.", f"stages.{si}.blocks.0."))
        elif first == "attn_downsample":
            pairs.append((f"stages.{si}.downsample.", f"stages.{si}.blocks.0."))
        pairs += [
            (f"stages.{si}.blocks.{j}.", f"stages.{si}.blocks.{j + offset}.") for j in range(len(stage.blocks) - offset)
        ]
    return pairs


# snap-research/EfficientFormer `models/efficientformer_v2.py` names its modules by position: a stem
# Sequential `patch_embed` (conv, bn, act, conv, bn, act), one flat ModuleList `network` alternating
# stages (even indices: Sequential of FFN / AttnFFN blocks) and `Embedding` downsamplers (odd indices:
# `proj`/`norm`, or `conv`/`bn` + `attn` for the attention downsampling into the last stage), and
# Conv-BN pairs as Sequentials (`q.0`, `q.1`; `proj` is act, conv, bn). timm, and so latvit, names each
# of these. Official layer scales are (dim, 1, 1); timm's and latvit's are (dim,).
_STEM = {"0": "stem.conv1.conv", "1": "stem.conv1.bn", "3": "stem.conv2.conv", "4": "stem.conv2.bn"}
_BLOCK_RULES = [  # (official pattern, timm replacement) inside a block or downsampler; first match wins
    (r"mlp\.fc1\.", "mlp.fc1.conv."),
    (r"mlp\.norm1\.", "mlp.fc1.bn."),
    (r"mlp\.mid\.", "mlp.mid.conv."),
    (r"mlp\.mid_norm\.", "mlp.mid.bn."),
    (r"mlp\.fc2\.", "mlp.fc2.conv."),
    (r"mlp\.norm2\.", "mlp.fc2.bn."),
    (r"layer_scale_([12])$", r"ls\1.gamma"),
    (r"(token_mixer|attn)\.q\.local\.0\.", r"\1.q.local."),
    (r"(token_mixer|attn)\.q\.proj\.0\.", r"\1.q.proj.conv."),
    (r"(token_mixer|attn)\.q\.proj\.1\.", r"\1.q.proj.bn."),
    (r"(token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.0\.", r"\1.\2.conv."),
    (r"(token_mixer|attn)\.(q|k|v|v_local|stride_conv)\.1\.", r"\1.\2.bn."),
    (r"(token_mixer|attn)\.proj\.1\.", r"\1.proj.conv."),
    (r"(token_mixer|attn)\.proj\.2\.", r"\1.proj.bn."),
]
_DOWNSAMPLE_RULES = _BLOCK_RULES + [(r"(proj|conv)\.", "conv.conv."), (r"(norm|bn)\.", "conv.bn.")]  # its Conv-BN


def _rename_inside(rest: str, rules: list) -> str:
    for pattern, repl in rules:
        renamed, n = re.subn("^" + pattern, repl, rest)
        if n:
            return renamed
    return rest  # talking heads, attention biases: same names


def official_to_timm(state_dict: dict) -> dict:
    """snap-research's `patch_embed.*` / `network.N.*` layout -> timm names (then `timm_prefix_map`).

    network.{2i}.{j}.*   -> stages.{i}.blocks.{j}.*      (stage i)
    network.{2i-1}.*     -> stages.{i}.downsample.*      (Conv-BN, plus attention into the last stage)
    patch_embed.{0,1,3,4}, norm, head, dist_head -> stem.conv{1,2}.{conv,bn}, norm, head, head_dist
    Keys this does not recognise are passed through, so a strict load lists them.
    """
    out = {}
    for key, value in state_dict.items():
        new = key
        if m := re.match(r"patch_embed\.(\d)\.(.+)", key):
            new = f"{_STEM.get(m[1], 'patch_embed.' + m[1])}.{m[2]}"
        elif m := re.match(r"network\.(\d+)\.(.+)", key):
            n, rest = int(m[1]), m[2]
            if n % 2 == 0 and (b := re.match(r"(\d+)\.(.+)", rest)):
                new = f"stages.{n // 2}.blocks.{b[1]}.{_rename_inside(b[2], _BLOCK_RULES)}"
            elif n % 2 == 1:
                new = f"stages.{(n + 1) // 2}.downsample.{_rename_inside(rest, _DOWNSAMPLE_RULES)}"
        elif key.startswith("dist_head."):
            new = "head_dist." + key[len("dist_head.") :]
        if re.search(r"\.ls[12]\.gamma$", new):
            value = value.reshape(-1)  # (dim, 1, 1) -> (dim,)
        out[new] = value
    return out
