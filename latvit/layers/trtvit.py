"""TRT-ViT blocks: ResNet BottleNeck, PVT-style Transformer, and MixBlock A / B / C.

TRT-ViT (Xia et al. 2022, arXiv:2205.09579) designs by TensorRT latency: BottleNecks are dense and fast
at high resolution, Transformers pay off only at low resolution, so early stages are convolutional and
late stages use MixBlocks that mix a Transformer with a BottleNeck. The paper's block-level guidelines:

- MixBlockA: one 1x1 projection, a channel split, a Transformer on R of the channels and a BottleNeck on
  the rest in parallel, concatenated.
- MixBlockB: local then global in series (BottleNeck, then a Transformer on its output), both halves
  concatenated; R is 0.5 by construction.
- MixBlockC: global then local (the order of B swapped, the paper's guideline 4): a Transformer produces
  R of the output channels, a BottleNeck refines them into the other 1 - R, concatenated; any R in (0, 1).

Transformers use LayerNorm + GELU, a fixed head dim (32), MLP ratio 3 and spatial-reduction attention
(keys and values from the map downsampled by S, as in PVT); BottleNecks use BatchNorm + ReLU. No public
implementation exists: where the paper is silent (the strided projection, the BottleNeck's inner width
inside MixBlocks) the choice is documented here and in docs/models/trtvit.md.

Every block works on (B, C, H, W) maps at any resolution (no resolution-dependent parameters) and has
`from_spec(b, c_in, h, w, drop_path)`, `spec_cost(b, c_in, h, w)` and `check(b, c_in, h, w)`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import Mlp

from latvit.layers import cost as C
from latvit.layers.common import ConvNormAct, conv_out, drop_path_or_identity, make_act
from latvit.layers.fold import fold_bn_, foldable_bn

BOTTLENECK_EXPANSION = 4.0  # ResNet: a BottleNeck's output width is 4x its inner width


def bottleneck_mid(c_out: int, expansion: float) -> int:
    """Inner width of a BottleNeck with `c_out` output channels (ResNet-50: 256 -> 64)."""
    return max(1, int(round(c_out / expansion)))


def transformer_channels(width: int, ratio: float) -> int:
    """Channels a MixBlock's Transformer produces: R of the block's output width."""
    return int(round(width * ratio))


# ---------------------------------------------------------------------------------------------------
# BottleNeck
# ---------------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """ResNet BottleNeck: 1x1 -> KxK (stride) -> 1x1, each Conv-BN, ReLU between, plus a shortcut
    (identity, or a 1x1 Conv-BN projection when the stride or width changes), then ReLU.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride); inner width C_out / expansion. The stride sits on
    the KxK conv (ResNet v1.5, as torchvision and timm do), which is more accurate than striding the 1x1.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        expansion: float = BOTTLENECK_EXPANSION,
        act: str = "relu",
        drop_path: float = 0.0,
    ):
        super().__init__()
        mid = bottleneck_mid(c_out, expansion)
        self.conv1 = ConvNormAct(c_in, mid, 1, bias=False, act=act)
        self.conv2 = ConvNormAct(mid, mid, kernel, stride=stride, bias=False, act=act)
        self.conv3 = ConvNormAct(mid, c_out, 1, bias=False)
        projected = stride != 1 or c_in != c_out
        self.shortcut = ConvNormAct(c_in, c_out, 1, stride=stride, bias=False) if projected else nn.Identity()
        self.drop_path = drop_path_or_identity(drop_path)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))  # (B, C_out, H', W')
        return self.act(self.shortcut(x) + self.drop_path(y))

    @staticmethod
    def cost(
        c_in: int,
        c_out: int,
        h: int,
        w: int,
        *,
        kernel: int = 3,
        stride: int = 1,
        expansion: float = BOTTLENECK_EXPANSION,
    ) -> C.Cost:
        mid = bottleneck_mid(c_out, expansion)
        h2, w2 = conv_out(h, stride), conv_out(w, stride)
        cost = (
            ConvNormAct.cost(c_in, mid, 1, h, w, bias=False)
            + ConvNormAct.cost(mid, mid, kernel, h2, w2, bias=False)
            + ConvNormAct.cost(mid, c_out, 1, h2, w2, bias=False)
        )
        if stride != 1 or c_in != c_out:
            cost += ConvNormAct.cost(c_in, c_out, 1, h2, w2, bias=False)
        return cost

    # block kind `bottleneck`
    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in, b.width, kernel=b.kernel, stride=b.stride, expansion=b.expansion, act=b.act, drop_path=drop_path
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        cost = Bottleneck.cost(c_in, b.width, h, w, kernel=b.kernel, stride=b.stride, expansion=b.expansion)
        return cost, (b.width, conv_out(h, b.stride), conv_out(w, b.stride))


# ---------------------------------------------------------------------------------------------------
# Transformer with spatial-reduction attention
# ---------------------------------------------------------------------------------------------------
class PatchProjection(nn.Module):
    """Conv-BN with kernel = stride and no padding (PVT's patch embedding, BN instead of LN so it folds
    into the conv): (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). With stride 1 it is a 1x1 conv.

    Used where a Transformer or MixBlock changes width or resolution: a 2x2 stride-2 conv sees every
    pixel, unlike a strided 1x1, and costs 4/9 of a 3x3.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, stride, stride, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def fuse(self) -> None:
        """Deploy folding (`latvit.deploy`): the BatchNorm goes into the conv."""
        if foldable_bn(self.bn):
            fold_bn_(self.conv, self.bn)
            self.bn = nn.Identity()

    @staticmethod
    def cost(c_in: int, c_out: int, h: int, w: int, stride: int = 1) -> C.Cost:
        return C.conv(c_in, c_out, stride, h // stride, w // stride, bias=False) + C.norm(c_out)


class SRAttention(nn.Module):
    """Multi-head attention whose keys and values come from the map downsampled S times (PVT's
    spatial-reduction attention): an SxS stride-S conv + LayerNorm before the key/value projection.

    Tokens (B, N, C) of an H x W map -> (B, N, C); heads = C / head_dim. Explicit matmuls, not
    `scaled_dot_product_attention`, so runtimes export it alike and `torch.utils.flop_counter` sees it.
    """

    fused_projections = {"kv": 2}  # output rows stacked (chunks, width): see latvit.search.inherit

    def __init__(self, dim: int, *, head_dim: int = 32, sr: int = 1):
        super().__init__()
        self.heads = dim // head_dim
        self.scale = head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.sr = nn.Conv2d(dim, dim, sr, sr) if sr > 1 else None
        self.norm = nn.LayerNorm(dim) if sr > 1 else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C_ = x.shape
        q = self.q(x).reshape(B, N, self.heads, -1).transpose(1, 2)  # (B, heads, N, hd)
        if self.sr is not None:
            x = x.transpose(1, 2).reshape(B, C_, h, w)  # (B, C, H, W)
            x = self.norm(self.sr(x).flatten(2).transpose(1, 2))  # (B, M, C), M = (H/S) * (W/S)
        kv = self.kv(x).reshape(B, -1, 2, self.heads, C_ // self.heads)  # (B, M, 2, heads, hd)
        k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, heads, M, hd)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, M)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C_))  # (B, N, C)

    @staticmethod
    def cost(dim: int, h: int, w: int, *, head_dim: int = 32, sr: int = 1) -> C.Cost:
        heads, n = dim // head_dim, h * w
        hk, wk = h // sr, w // sr  # the SxS stride-S conv floors
        m = hk * wk
        cost = C.linear(dim, dim, n) + C.linear(dim, 2 * dim, m) + C.linear(dim, dim, n)
        cost += C.matmul(heads, n, head_dim, m) + C.matmul(heads, n, m, head_dim)
        if sr > 1:
            cost += C.conv(dim, dim, sr, hk, wk) + C.norm(dim)
        return cost


class SRTransformer(nn.Module):
    """Pre-norm Transformer layer on a map: x + Attn(LN(x)), x + MLP(LN(x)), LayerNorm + GELU.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). When the stride or width changes, a
    `PatchProjection` comes first (as PVT starts each stage with a patch embedding). The map is flattened
    to tokens inside the block and reshaped back, so it mixes freely with convolutional blocks.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        stride: int = 1,
        head_dim: int = 32,
        sr: int = 1,
        mlp_ratio: float = 3.0,
        act: str = "gelu",
        drop_path: float = 0.0,
    ):
        super().__init__()
        projected = stride != 1 or c_in != c_out
        self.embed = PatchProjection(c_in, c_out, stride) if projected else nn.Identity()
        self.norm1 = nn.LayerNorm(c_out)
        self.attn = SRAttention(c_out, head_dim=head_dim, sr=sr)
        self.norm2 = nn.LayerNorm(c_out)
        self.mlp = Mlp(c_out, int(c_out * mlp_ratio), act_layer=type(make_act(act)))
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        B, C_, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        t = t + self.drop_path(self.attn(self.norm1(t), H, W))
        t = t + self.drop_path(self.mlp(self.norm2(t)))
        return t.transpose(1, 2).reshape(B, C_, H, W)  # back to (B, C, H, W)

    @staticmethod
    def cost(
        c_in: int,
        c_out: int,
        h: int,
        w: int,
        *,
        stride: int = 1,
        head_dim: int = 32,
        sr: int = 1,
        mlp_ratio: float = 3.0,
    ) -> C.Cost:
        cost = C.Cost()
        if stride != 1 or c_in != c_out:
            cost += PatchProjection.cost(c_in, c_out, h, w, stride)
            h, w = h // stride, w // stride
        hidden = int(c_out * mlp_ratio)
        return (
            cost
            + C.norm(c_out) * 2
            + SRAttention.cost(c_out, h, w, head_dim=head_dim, sr=sr)
            + C.linear(c_out, hidden, h * w)
            + C.linear(hidden, c_out, h * w)
        )

    # block kind `transformer_sr`
    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            stride=b.stride,
            head_dim=b.key_dim,
            sr=b.sr,
            mlp_ratio=b.expansion,
            act=b.act,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        cost = SRTransformer.cost(
            c_in, b.width, h, w, stride=b.stride, head_dim=b.key_dim, sr=b.sr, mlp_ratio=b.expansion
        )
        return cost, (b.width, h // b.stride, w // b.stride)

    @staticmethod
    def check(b, c_in, h, w):
        return _check_heads(b.width, b.key_dim, "width") or _check_sr(b.sr, h // b.stride, w // b.stride)


def _check_heads(dim: int, head_dim: int, what: str) -> str | None:
    if head_dim < 1:
        return f"key_dim (the Transformer's head dim) must be >= 1, got {head_dim}"
    if dim % head_dim:
        return (
            f"Transformer {what} {dim} is not divisible by the head dim key_dim={head_dim} "
            f"(heads = width / key_dim); use a multiple of {head_dim} or change key_dim"
        )
    return None


def _check_sr(sr: int, h: int, w: int) -> str | None:
    if sr < 1:
        return f"sr (spatial-reduction ratio S) must be >= 1, got {sr}"
    if sr > min(h, w):
        return f"sr={sr} is larger than the {h}x{w} feature map it reduces; use sr <= {min(h, w)} (or a larger input)"
    return None


# ---------------------------------------------------------------------------------------------------
# MixBlock A / B / C
# ---------------------------------------------------------------------------------------------------
class MixBlock(nn.Module):
    """TRT-ViT MixBlock; `mode` is "a", "b" or "c". (B, C_in, H, W) -> (B, C_out, H/stride, W/stride).

    A `PatchProjection` (1x1, or 2x2 stride 2 when downsampling) projects the input, then with
    d = R * C_out Transformer channels:
      a: project to C_out, split [d | C_out - d]; Transformer(d) and BottleNeck(C_out - d) in parallel.
      b: project to C_out / 2; l = BottleNeck(l), g = Transformer(l) in series; output [l | g]. R = 0.5.
      c: project to d; g = Transformer(g), l = BottleNeck(g -> C_out - d) in series; output [g | l].
    Transformer: head dim `head_dim`, spatial reduction `sr`, MLP ratio `mlp_ratio`, LN + GELU.
    BottleNeck: kernel `kernel`, inner width a quarter of its output (ResNet), BN + ReLU.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        mode: str = "c",
        ratio: float = 0.5,
        stride: int = 1,
        kernel: int = 3,
        sr: int = 1,
        head_dim: int = 32,
        mlp_ratio: float = 3.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.mode = mode
        d = transformer_channels(c_out, ratio)
        self.splits = (d, c_out - d)
        self.proj = PatchProjection(c_in, c_out if mode == "a" else d, stride)
        self.transformer = SRTransformer(d, d, head_dim=head_dim, sr=sr, mlp_ratio=mlp_ratio, drop_path=drop_path)
        local_in = {"a": c_out - d, "b": d, "c": d}[mode]
        self.bottleneck = Bottleneck(local_in, c_out - d, kernel=kernel, drop_path=drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, C_out or d, H', W')
        if self.mode == "a":
            glob, loc = x.split(self.splits, dim=1)  # (B, d, H', W'), (B, C_out - d, H', W')
            return torch.cat((self.transformer(glob), self.bottleneck(loc)), dim=1)
        if self.mode == "b":
            loc = self.bottleneck(x)  # local first ...
            return torch.cat((loc, self.transformer(loc)), dim=1)  # ... then global
        g = self.transformer(x)  # global first ...
        return torch.cat((g, self.bottleneck(g)), dim=1)  # ... then local

    @staticmethod
    def cost(
        c_in: int,
        c_out: int,
        h: int,
        w: int,
        *,
        mode: str = "c",
        ratio: float = 0.5,
        stride: int = 1,
        kernel: int = 3,
        sr: int = 1,
        head_dim: int = 32,
        mlp_ratio: float = 3.0,
    ) -> C.Cost:
        d = transformer_channels(c_out, ratio)
        local_in = {"a": c_out - d, "b": d, "c": d}[mode]
        h2, w2 = h // stride, w // stride
        return (
            PatchProjection.cost(c_in, c_out if mode == "a" else d, h, w, stride)
            + SRTransformer.cost(d, d, h2, w2, head_dim=head_dim, sr=sr, mlp_ratio=mlp_ratio)
            + Bottleneck.cost(local_in, c_out - d, h2, w2, kernel=kernel)
        )

    # block kinds `mixblock_a`, `mixblock_b`, `mixblock_c`
    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            mode=b.kind[-1],
            ratio=b.ratio,
            stride=b.stride,
            kernel=b.kernel,
            sr=b.sr,
            head_dim=b.key_dim,
            mlp_ratio=b.expansion,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        cost = MixBlock.cost(
            c_in,
            b.width,
            h,
            w,
            mode=b.kind[-1],
            ratio=b.ratio,
            stride=b.stride,
            kernel=b.kernel,
            sr=b.sr,
            head_dim=b.key_dim,
            mlp_ratio=b.expansion,
        )
        return cost, (b.width, h // b.stride, w // b.stride)

    @staticmethod
    def check(b, c_in, h, w):
        if not 0.0 < b.ratio < 1.0:
            return (
                f"ratio R={b.ratio} must be strictly between 0 and 1 (the Transformer produces R of the "
                f"output channels, the BottleNeck the rest)"
            )
        if b.kind == "mixblock_b" and (b.ratio != 0.5 or b.width % 2):
            return (
                f"mixblock_b splits its width in halves (R = 0.5), got ratio={b.ratio} and width {b.width}; "
                f"use an even width, or mixblock_c for another R"
            )
        d = transformer_channels(b.width, b.ratio)
        if not 0 < d < b.width:
            return (
                f"ratio R={b.ratio} of width {b.width} leaves no channels for the "
                f"{'Transformer' if d == 0 else 'BottleNeck'}; use a larger width or an R nearer 0.5"
            )
        return _check_heads(d, b.key_dim, f"width R * width = {b.ratio} * {b.width} =") or _check_sr(
            b.sr, h // b.stride, w // b.stride
        )
