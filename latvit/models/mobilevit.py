"""MobileViT: "MobileViT: Light-weight, General-purpose, and Mobile-friendly Vision Transformer",
Mehta & Rastegari, ICLR 2022.

A MobileNetV2 backbone whose last three stages each end in a MobileViT block (local conv + transformer
over unfolded 2x2 patches + fusion). Default input 256, inputs scaled to [0, 1] (mean 0, std 1), as in
ml-cvnets and timm.
"""

from __future__ import annotations

import re

import torch

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

    stages = [StageSpec((mv2(widths[0]),)), StageSpec((mv2(widths[1], 2),) + (mv2(widths[1]),) * (MV2_DEPTHS[1] - 1))]
    for width, dim, depth in zip(widths[2:], dims, depths):
        stages.append(
            StageSpec(
                (
                    mv2(width, 2),
                    BlockSpec(
                        "mobilevit",
                        width,
                        dim=dim,
                        depth=depth,
                        heads=4,
                        expansion=2.0,
                        patch=2,
                        act="silu",
                        bias=False,
                    ),
                )
            )
        )
    return NetSpec(
        name=name,
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="silu", bias=False),),
        stages=tuple(stages),
        head=HeadSpec(conv_width=final_width, act="silu"),
        img_size=img_size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        family="mobilevit",
        paper=PAPER,
    )


SPECS = {name: mobilevit_spec(name, *cfg) for name, cfg in CONFIGS.items()}


# -- checkpoints --------------------------------------------------------------------------------------
def timm_prefix_map(spec: NetSpec) -> list[tuple[str, str]]:
    pairs = [
        ("stem.conv.", "stem.0.conv."),
        ("stem.bn.", "stem.0.bn."),
        ("final_conv.", "head.conv."),
        ("head.fc.", "head.fc."),
    ]
    for si, stage in enumerate(spec.stages):
        pairs += [(f"stages.{si}.{bi}.", f"stages.{si}.blocks.{bi}.") for bi in range(len(stage.blocks))]
    return pairs


# apple/ml-cvnets (`cvnets/models/classification/mobilevit.py`, the paper's own code) wraps every conv in a
# `ConvLayer` (`<name>.block.conv`, `.block.norm`, `.block.act`), names the network `conv_1`, `layer_1`..
# `layer_5`, `conv_1x1_exp`, `classifier.fc`, an inverted residual `block.exp_1x1 / conv_3x3 / red_1x1`,
# and a MobileViT block `local_rep.conv_3x3 / conv_1x1`, `global_rep.{i}` (pre-norm encoders whose
# attention and FFN are Sequentials; the last entry is the final LayerNorm), `conv_proj`, `fusion`.
_LAYER = {"conv": "conv", "norm": "bn"}


def _conv(official: str, timm_name: str) -> tuple[str, object]:
    """Rule for a ConvLayer: `<official>.block.conv|norm.` -> `<timm_name>.conv|bn.`."""
    return rf"{official}\.block\.(?P<layer>conv|norm)\.", lambda m: f"{timm_name}.{_LAYER[m['layer']]}."


_RULES = [  # (official pattern, timm replacement); applied in order, each at most once per key
    _conv(r"^conv_1", "stem"),
    _conv(r"^conv_1x1_exp", "final_conv"),
    (r"^classifier\.fc\.", "head.fc."),
    (r"^layer_(\d)\.", lambda m: f"stages.{int(m[1]) - 1}."),
    _conv(r"\.block\.exp_1x1", ".conv1_1x1"),
    _conv(r"\.block\.conv_3x3", ".conv2_kxk"),
    _conv(r"\.block\.red_1x1", ".conv3_1x1"),
    _conv(r"\.local_rep\.conv_3x3", ".conv_kxk"),
    (r"\.local_rep\.conv_1x1\.block\.conv\.", ".conv_1x1."),  # no norm, no bias
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.0\.", r".transformer.\1.norm1."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.qkv_proj\.", r".transformer.\1.attn.qkv."),
    (r"\.global_rep\.(\d+)\.pre_norm_mha\.1\.out_proj\.", r".transformer.\1.attn.proj."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.0\.", r".transformer.\1.norm2."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.1\.", r".transformer.\1.mlp.fc1."),
    (r"\.global_rep\.(\d+)\.pre_norm_ffn\.4\.", r".transformer.\1.mlp.fc2."),
    (r"\.global_rep\.\d+\.(weight|bias)$", r".norm.\1"),  # the LayerNorm after the last encoder
    _conv(r"\.conv_proj", ".conv_proj"),
    _conv(r"\.fusion", ".conv_fusion"),
]


# Hugging Face `transformers` ports the same weights (hub: apple/mobilevit-small, -x-small, -xx-small) under
# `mobilevit.*` + `classifier`, with plain module names and separate query/key/value projections.
_HF_RULES = [  # (HF pattern, timm replacement); applied in order, each at most once per key
    (r"^mobilevit\.conv_stem\.", "stem."),
    (r"^mobilevit\.conv_1x1_exp\.", "final_conv."),
    (r"^classifier\.", "head.fc."),
    (r"^mobilevit\.encoder\.layer\.(\d)\.layer\.(\d+)\.", r"stages.\1.\2."),  # MobileNet stages
    (r"^mobilevit\.encoder\.layer\.(\d)\.downsampling_layer\.", r"stages.\1.0."),
    (r"^mobilevit\.encoder\.layer\.(\d)\.", r"stages.\1.1."),  # the MobileViT block
    (r"\.expand_1x1\.", ".conv1_1x1."),
    (r"\.conv_3x3\.", ".conv2_kxk."),
    (r"\.reduce_1x1\.", ".conv3_1x1."),
    (r"\.conv_1x1\.convolution\.", ".conv_1x1."),
    (r"\.transformer\.layer\.(\d+)\.layernorm_before\.", r".transformer.\1.norm1."),
    (r"\.transformer\.layer\.(\d+)\.layernorm_after\.", r".transformer.\1.norm2."),
    (r"\.transformer\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.", r".transformer.\1.attn.\2."),
    (r"\.transformer\.layer\.(\d+)\.attention\.output\.dense\.", r".transformer.\1.attn.proj."),
    (r"\.transformer\.layer\.(\d+)\.intermediate\.dense\.", r".transformer.\1.mlp.fc1."),
    (r"\.transformer\.layer\.(\d+)\.output\.dense\.", r".transformer.\1.mlp.fc2."),
    (r"\.layernorm\.", ".norm."),
    (r"\.conv_projection\.", ".conv_proj."),
    (r"\.fusion\.", ".conv_fusion."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".bn."),
]


def _rename(state_dict: dict, rules) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key, count=1)
        out[key] = value
    return out


def _pack_qkv(state_dict: dict) -> dict:
    """Separate `attn.query/key/value` projections -> one `attn.qkv` (rows q, then k, then v, as ml-cvnets)."""
    out = {}
    for key, value in state_dict.items():
        m = re.match(r"(.+\.attn\.)(query|key|value)\.(weight|bias)$", key)
        if m is None:
            out[key] = value
        elif m[2] == "query" and all(f"{m[1]}{p}.{m[3]}" in state_dict for p in ("key", "value")):
            parts = [state_dict[f"{m[1]}{p}.{m[3]}"] for p in ("query", "key", "value")]
            out[f"{m[1]}qkv.{m[3]}"] = torch.cat(parts, dim=0)
        elif not all(f"{m[1]}{p}.{m[3]}" in state_dict for p in ("query", "key", "value")):
            out[key] = value  # incomplete: left as it is, so the strict load names it
    return out


def official_to_timm(state_dict: dict) -> dict:
    """Apple's MobileViT layouts -> timm names (then `timm_prefix_map`).

    ml-cvnets: layer_{i}.{j}.* -> stages.{i-1}.{j}.*; conv_1, conv_1x1_exp, classifier.fc -> stem,
        final_conv, head.fc; a ConvLayer's `block.conv/norm` -> `conv/bn`. Tensors are unchanged: same
        shapes, same q|k|v row packing, same patch unfolding order as timm.
    Hugging Face: mobilevit.encoder.layer.{i}.* -> stages.{i}.*; query/key/value are concatenated into qkv.
    Keys this does not recognise are passed through, so a strict load lists them.
    """
    if any(k.startswith("mobilevit.") for k in state_dict):
        return _pack_qkv(_rename(state_dict, _HF_RULES))
    return _rename(state_dict, _RULES)


def is_official(state_dict: dict) -> bool:
    """ml-cvnets (`conv_1.`, `layer_1.`, ...) or Hugging Face (`mobilevit.`) root names, which timm and
    latvit never use."""
    return any(re.match(r"(conv_1|layer_1|conv_1x1_exp|classifier|mobilevit)\.", k) for k in state_dict)
