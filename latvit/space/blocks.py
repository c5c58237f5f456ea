"""The block registry: every `BlockSpec.kind` latvit can build, in one explicit table.

Each entry says which module builds the kind, which `BlockSpec` fields it reads (they also form its
latency-table key), whether it works on 4-D maps or on tokens, whether its parameters depend on the
input resolution (attention biases), and the kind-specific checks that turn a bad spec into an error
naming the field. Adding a kind means adding one row here and one module with `from_spec`/`spec_cost`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from latvit.layers.common import ACTIVATIONS, ConvNormAct
from latvit.layers.efficientformer import AttnDownsampleBlock, EfficientFormerV2Block, Meta3D, Meta4D
from latvit.layers.mobile import InvertedResidual, MobileViTBlock


@dataclass(frozen=True)
class BlockKind:
    module: type  # has from_spec(b, c_in, h, w, drop_path) and spec_cost(b, c_in, h, w)
    fields: tuple[str, ...]  # BlockSpec fields the kind reads, besides width
    tokens: bool = False  # works on (B, N, C) tokens instead of (B, C, H, W)
    fixed_resolution: bool = False  # parameters or reshapes depend on the input size
    keeps_width: bool = False  # residual block: width must equal the input width
    check: Callable | None = None  # (b, c_in, h, w) -> error message or None
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
    if b.dim % b.heads:
        return f"dim {b.dim} is not divisible by heads={b.heads}"
    if b.depth < 1 or b.patch < 1:
        return f"depth ({b.depth}) and patch ({b.patch}) must be >= 1"
    return None


BLOCK_KINDS: dict[str, BlockKind] = {
    "conv_bn_act": BlockKind(ConvNormAct, ("kernel", "stride", "act", "bias"),
                             description="Conv-BN-act (stems, strided downsampling)"),
    "meta4d": BlockKind(Meta4D, ("kernel", "expansion", "act", "layer_scale"), keeps_width=True,
                        description="EfficientFormer MB4D: pooling mixer + Conv-BN MLP"),
    "meta3d": BlockKind(Meta3D, ("expansion", "heads", "key_dim", "attn_ratio", "act", "layer_scale"),
                        tokens=True, fixed_resolution=True, keeps_width=True, check=_check_heads,
                        description="EfficientFormer MB3D: LN + attention with relative bias + MLP on tokens"),
    "ffn_local": BlockKind(EfficientFormerV2Block, ("expansion", "act", "bias", "layer_scale"), keeps_width=True,
                           description="EfficientFormerV2 local FFN (1x1, dw3x3, 1x1)"),
    "attn_ffn": BlockKind(EfficientFormerV2Block,
                          ("expansion", "heads", "key_dim", "attn_ratio", "attn_stride", "act", "bias", "layer_scale"),
                          fixed_resolution=True, keeps_width=True, check=_check_stride_attention,
                          description="EfficientFormerV2 talking-head attention + local FFN"),
    "attn_downsample": BlockKind(AttnDownsampleBlock, ("heads", "key_dim", "attn_ratio", "act", "bias"),
                                 fixed_resolution=True, check=_check_heads,
                                 description="EfficientFormerV2 attention downsampling (stride 2)"),
    "mv2": BlockKind(InvertedResidual, ("kernel", "stride", "expansion", "act", "bias"),
                     description="MobileNetV2 inverted residual"),
    "mobilevit": BlockKind(MobileViTBlock, ("kernel", "dim", "depth", "heads", "expansion", "patch", "act", "bias"),
                           check=_check_mobilevit, description="MobileViT block: local conv + transformer over patches"),
}

STRIDED_KINDS = {"attn_downsample": 2}  # kinds whose stride is implied rather than read from `stride`


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
        return (f"width {b.width} must equal the input width {c_in} ({b.kind} is a residual block; "
                f"change widths with a downsampling block)")
    if b.kernel < 1 or b.kernel % 2 == 0:
        return f"kernel must be a positive odd number, got {b.kernel}"
    if b.stride not in (1, 2):
        return f"stride must be 1 or 2, got {b.stride}"
    if b.expansion <= 0:
        return f"expansion must be > 0, got {b.expansion}"
    if b.act not in ACTIVATIONS:
        return f"unknown act '{b.act}'; choose one of {sorted(ACTIVATIONS)}"
    return kind.check(b, c_in, h, w) if kind.check else None
