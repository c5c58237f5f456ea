"""The block registry: every `BlockSpec.kind` latvit can build, in one explicit table.

Each entry says which module builds the kind, which `BlockSpec` fields it reads (they also form its
latency-table key), whether it works on 4-D maps or on tokens, whether its parameters depend on the
input resolution (attention biases), and the kind-specific checks that turn a bad spec into an error
naming the field. Adding a kind means adding one row here and one module with `from_spec`/`spec_cost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from latvit.layers.common import ACTIVATIONS, ConvNormAct
from latvit.layers.efficientformer import AttnDownsampleBlock, EfficientFormerV2Block, Meta3D, Meta4D
from latvit.layers.mixformer import MixingBlock, PatchMerge, check_mixing
from latvit.layers.mobile import InvertedResidual, MobileViTBlock
from latvit.layers.mobileformer import (
    Former,
    FormerToMobile,
    GlobalTokens,
    LiteBottleneck,
    MergeHead,
    MobileBlock,
    MobileToFormer,
    check_bridge,
    check_groups,
    check_tokens,
)
from latvit.layers.trtvit import Bottleneck, MixBlock, SRTransformer


@dataclass(frozen=True)
class BlockKind:
    module: type  # has from_spec(b, c_in, h, w, drop_path) and spec_cost(b, c_in, h, w)
    fields: tuple[str, ...]  # BlockSpec fields the kind reads, besides width
    tokens: bool = False  # works on (B, N, C) tokens instead of (B, C, H, W)
    fixed_resolution: bool = False  # parameters or reshapes depend on the input size
    keeps_width: bool = False  # residual block: width must equal the input width
    check: Callable | None = None  # (b, c_in, h, w) -> error message or None
    # Mobile-Former's global tokens travel beside the map as (x, z) pairs: "open" starts the pair, "use"
    # reads it (the spec's `tokens` and `dim` must match the opening block's), "close" ends it
    stream: str = ""
    description: str = ""


def _check_heads(b, c_in, h, w):
    if b.heads < 1 or b.key_dim < 1:
        return f"heads ({b.heads}) and key_dim ({b.key_dim}) must be >= 1"
    return None


def _check_stride_attention(b, c_in, h, w):
    if b.attn_stride not in (1, 2, 4):
        return f"attn_stride must be 1, 2 or 4, got {b.attn_stride}"
    if h % b.attn_stride or w % b.attn_stride:
        return f"attn_stride {b.attn_stride} must divide the {h}x{w} feature map (upsampling must restore it)"
    return _check_heads(b, c_in, h, w)


def _check_mobilevit(b, c_in, h, w):
    if b.dim < 1:
        return f"dim (transformer width) must be >= 1, got {b.dim}"
    if b.heads < 1:
        return f"heads must be >= 1, got {b.heads}"
    if b.dim % b.heads:
        return f"dim {b.dim} is not divisible by heads={b.heads}"
    if b.depth < 1 or b.patch < 1:
        return f"depth ({b.depth}) and patch ({b.patch}) must be >= 1"
    return None


BLOCK_KINDS: dict[str, BlockKind] = {
    "conv_bn_act": BlockKind(
        ConvNormAct, ("kernel", "stride", "act", "bias"), description="Conv-BN-act (stems, strided downsampling)"
    ),
    "meta4d": BlockKind(
        Meta4D,
        ("kernel", "expansion", "act", "layer_scale"),
        keeps_width=True,
        description="EfficientFormer MB4D: pooling mixer + Conv-BN MLP",
    ),
    "meta3d": BlockKind(
        Meta3D,
        ("expansion", "heads", "key_dim", "attn_ratio", "act", "layer_scale"),
        tokens=True,
        fixed_resolution=True,
        keeps_width=True,
        check=_check_heads,
        description="EfficientFormer MB3D: LN + attention with relative bias + MLP on tokens",
    ),
    "ffn_local": BlockKind(
        EfficientFormerV2Block,
        ("expansion", "act", "bias", "layer_scale"),
        keeps_width=True,
        description="EfficientFormerV2 local FFN (1x1, dw3x3, 1x1)",
    ),
    "attn_ffn": BlockKind(
        EfficientFormerV2Block,
        ("expansion", "heads", "key_dim", "attn_ratio", "attn_stride", "act", "bias", "layer_scale"),
        fixed_resolution=True,
        keeps_width=True,
        check=_check_stride_attention,
        description="EfficientFormerV2 talking-head attention + local FFN",
    ),
    "attn_downsample": BlockKind(
        AttnDownsampleBlock,
        ("heads", "key_dim", "attn_ratio", "act", "bias"),
        fixed_resolution=True,
        check=_check_heads,
        description="EfficientFormerV2 attention downsampling (stride 2)",
    ),
    "mv2": BlockKind(
        InvertedResidual, ("kernel", "stride", "expansion", "act", "bias"), description="MobileNetV2 inverted residual"
    ),
    "mobilevit": BlockKind(
        MobileViTBlock,
        ("kernel", "dim", "depth", "heads", "expansion", "patch", "act", "bias"),
        check=_check_mobilevit,
        description="MobileViT block: local conv + transformer over patches",
    ),
    # Mobile-Former: a block is mf_m2f, mf_former, mf_mobile[_down], mf_f2m on the (map, tokens) pair
    "mf_lite": BlockKind(
        LiteBottleneck,
        ("kernel", "stride", "expansion", "groups", "act"),
        check=check_groups,
        description="Mobile-Former first block: depthwise expansion + 1x1 (no tokens yet)",
    ),
    "mf_tokens": BlockKind(
        GlobalTokens,
        ("tokens", "dim"),
        keeps_width=True,
        check=check_tokens,
        stream="open",
        description="Mobile-Former: learned global tokens, start of the (map, tokens) pair",
    ),
    "mf_m2f": BlockKind(
        MobileToFormer,
        ("tokens", "dim", "heads"),
        keeps_width=True,
        check=check_bridge,
        stream="use",
        description="Mobile-Former bridge Mobile->Former: tokens attend to the map",
    ),
    "mf_former": BlockKind(
        Former,
        ("tokens", "dim", "heads", "expansion"),
        keeps_width=True,
        check=check_bridge,
        stream="use",
        description="Mobile-Former Former: post-norm transformer over the tokens",
    ),
    "mf_mobile": BlockKind(
        MobileBlock,
        ("tokens", "dim", "kernel", "stride", "expansion", "groups"),
        check=check_groups,
        stream="use",
        description="Mobile-Former Mobile: inverted residual with token-driven dynamic ReLU",
    ),
    "mf_mobile_down": BlockKind(
        MobileBlock,
        ("tokens", "dim", "kernel", "stride", "expansion", "groups"),
        check=check_groups,
        stream="use",
        description="Mobile-Former downsampling Mobile: dw-1x1-dw-1x1 with dynamic ReLU",
    ),
    "mf_f2m": BlockKind(
        FormerToMobile,
        ("tokens", "dim", "heads"),
        keeps_width=True,
        check=check_bridge,
        stream="use",
        description="Mobile-Former bridge Former->Mobile: pixels attend to the tokens",
    ),
    "mf_merge": BlockKind(
        MergeHead,
        ("tokens", "dim", "expansion", "groups"),
        check=check_groups,
        stream="close",
        description="Mobile-Former classifier stem: pooled map + first token -> (B, width, 1, 1)",
    ),
    # MixFormer
    "mixing": BlockKind(
        MixingBlock,
        ("heads", "kernel", "patch", "expansion", "act"),
        keeps_width=True,
        check=check_mixing,
        description="MixFormer mixing block: window attention || dw conv",
    ),
    "mix_merge": BlockKind(PatchMerge, (), description="MixFormer downsampling: BN + 2x2 stride-2 conv"),
    "mix_embed": BlockKind(PatchMerge, (), description="MixFormer stem end: 2x2 stride-2 conv + LayerNorm"),
    # TRT-ViT (latvit/layers/trtvit.py): expansion is the BottleNeck's output/inner ratio, or the MLP ratio
    "bottleneck": BlockKind(
        Bottleneck,
        ("kernel", "stride", "expansion", "act"),
        description="ResNet BottleNeck 1x1-KxK-1x1, BN + ReLU, projection shortcut",
    ),
    "transformer_sr": BlockKind(
        SRTransformer,
        ("stride", "expansion", "key_dim", "sr", "act"),
        check=SRTransformer.check,
        description="Transformer on a map, spatial-reduction attention (PVT), LN + GELU",
    ),
    "mixblock_a": BlockKind(
        MixBlock,
        ("stride", "kernel", "ratio", "sr", "expansion", "key_dim"),
        check=MixBlock.check,
        description="TRT-ViT MixBlockA: Transformer and BottleNeck in parallel on a channel split",
    ),
    "mixblock_b": BlockKind(
        MixBlock,
        ("stride", "kernel", "ratio", "sr", "expansion", "key_dim"),
        check=MixBlock.check,
        description="TRT-ViT MixBlockB: BottleNeck then Transformer (local-then-global), R = 0.5",
    ),
    "mixblock_c": BlockKind(
        MixBlock,
        ("stride", "kernel", "ratio", "sr", "expansion", "key_dim"),
        check=MixBlock.check,
        description="TRT-ViT MixBlockC: Transformer then BottleNeck (global-then-local), any R",
    ),
}

# kinds whose stride is implied rather than read from `stride`
STRIDED_KINDS = {"attn_downsample": 2, "mix_merge": 2, "mix_embed": 2}


def block_stride(b) -> int:
    return STRIDED_KINDS.get(b.kind, b.stride if "stride" in BLOCK_KINDS[b.kind].fields else 1)


def check_block(b, c_in: int, h: int, w: int) -> str | None:
    """Generic and kind-specific checks of one block at its input shape; an error message or None."""
    if b.kind not in BLOCK_KINDS:
        return f"unknown block kind '{b.kind}'; known kinds: {', '.join(sorted(BLOCK_KINDS))}"
    kind = BLOCK_KINDS[b.kind]
    if b.width < 1:
        return f"width must be >= 1, got {b.width}"
    if kind.keeps_width and b.width != c_in:
        return (
            f"width {b.width} must equal the input width {c_in} ({b.kind} is a residual block; "
            f"change widths with a downsampling block)"
        )
    if b.kernel < 1 or b.kernel % 2 == 0:
        return f"kernel must be a positive odd number, got {b.kernel}"
    if b.stride not in (1, 2):
        return f"stride must be 1 or 2, got {b.stride}"
    if b.expansion <= 0:
        return f"expansion must be > 0, got {b.expansion}"
    narrowest = min(v for v in (c_in, b.width, b.dim) if v > 0)  # the widths an expansion multiplies
    if "expansion" in kind.fields and int(narrowest * b.expansion) < 1:
        return f"expansion {b.expansion} leaves no hidden channels at width {narrowest}; use >= {1 / narrowest:.3g}"
    if "attn_ratio" in kind.fields and b.key_dim >= 1 and int(b.attn_ratio * b.key_dim) < 1:
        return (
            f"attn_ratio {b.attn_ratio} x key_dim {b.key_dim} leaves no value channels; "
            f"use attn_ratio >= {1 / b.key_dim:.3g}"
        )
    if b.act not in ACTIVATIONS:
        return f"unknown act '{b.act}'; choose one of {sorted(ACTIVATIONS)}"
    return kind.check(b, c_in, h, w) if kind.check else None
