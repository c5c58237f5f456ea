"""MobileNetV2 inverted residuals, a plain pre-norm transformer block, and the MobileViT block.

MobileViT (Mehta & Rastegari 2022) reads a convolution as unfold -> matmul -> fold and replaces the
local matmul by a transformer over unfolded patches: n x n conv, 1x1 conv, unfold into patches, L
transformer layers across patches (one sequence per pixel position inside a patch), fold, 1x1 conv,
concatenate with the input, n x n fusion conv.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

from latvit.errors import SpecError
from latvit.layers import cost as C
from latvit.layers.common import ConvNormAct, conv_out, make_act


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> depthwise kxk (stride) -> 1x1 project, residual when shapes match.

    (B, C_in, H, W) -> (B, C_out, H/stride, W/stride). The hidden width is expansion * C_in.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        stride: int = 1,
        expansion: float = 4.0,
        kernel: int = 3,
        act: str = "silu",
        bias: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        hidden = int(round(c_in * expansion))
        self.conv1_1x1 = ConvNormAct(c_in, hidden, 1, bias=bias, act=act)
        self.conv2_kxk = ConvNormAct(hidden, hidden, kernel, stride=stride, groups=hidden, bias=bias, act=act)
        self.conv3_1x1 = ConvNormAct(hidden, c_out, 1, bias=bias)
        self.has_residual = stride == 1 and c_in == c_out
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_residual else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return x + self.drop_path(y) if self.has_residual else y

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            stride=b.stride,
            expansion=b.expansion,
            kernel=b.kernel,
            act=b.act,
            bias=b.bias,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        hidden = int(round(c_in * b.expansion))
        h2, w2 = conv_out(h, b.stride), conv_out(w, b.stride)
        cost = (
            ConvNormAct.cost(c_in, hidden, 1, h, w, bias=b.bias)
            + ConvNormAct.cost(hidden, hidden, b.kernel, h2, w2, hidden, b.bias)
            + ConvNormAct.cost(hidden, b.width, 1, h2, w2, bias=b.bias)
        )
        return cost, (b.width, h2, w2)


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention on tokens: (B, N, C) -> (B, N, C).

    Written with explicit matmuls rather than `scaled_dot_product_attention`: every runtime exports it
    the same way, its FLOPs are visible to `torch.utils.flop_counter`, and token merging can scale it.
    """

    fused_projections = {"qkv": 3}  # output rows stacked (chunks, width): see latvit.search.inherit

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % heads:
            raise SpecError(f"attention width {dim} is not divisible by heads={heads}; pick heads that divide it")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C_ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, N, hd)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C_))

    @staticmethod
    def cost(dim, n, heads, batch=1):
        """`batch` sequences of `n` tokens each."""
        hd = dim // heads
        return (
            C.linear(dim, 3 * dim, batch * n)
            + C.matmul(batch * heads, n, hd, n)
            + C.matmul(batch * heads, n, n, hd)
            + C.linear(dim, dim, batch * n)
        )


class TransformerBlock(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x)), x + MLP(LN(x)). (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, *, heads: int, mlp_ratio: float, act: str = "gelu", drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=type(make_act(act)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    @staticmethod
    def cost(dim, n, *, heads, mlp_ratio, batch=1):
        hidden = int(dim * mlp_ratio)
        return (
            C.norm(dim) * 2
            + MultiHeadAttention.cost(dim, n, heads, batch)
            + C.linear(dim, hidden, batch * n)
            + C.linear(hidden, dim, batch * n)
        )


class MobileViTBlock(nn.Module):
    """MobileViT block. (B, C, H, W) -> (B, C_out, H, W). Maps that are not whole patches are resized
    bilinearly to whole patches around the transformer, as ml-cvnets does."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        dim: int,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        patch: int = 2,
        kernel: int = 3,
        act: str = "silu",
        bias: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.patch = patch
        self.conv_kxk = ConvNormAct(c_in, c_in, kernel, bias=bias, act=act)
        self.conv_1x1 = nn.Conv2d(c_in, dim, 1, bias=False)
        self.transformer = nn.Sequential(
            *[
                TransformerBlock(dim, heads=heads, mlp_ratio=mlp_ratio, act=act, drop_path=drop_path)
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvNormAct(dim, c_out, 1, bias=bias, act=act)
        self.conv_fusion = ConvNormAct(c_in + c_out, c_out, kernel, bias=bias, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        B, D, H, W = x.shape
        p, nh, nw = self.patch, -(-H // self.patch), -(-W // self.patch)
        if (nh * p, nw * p) != (H, W):  # e.g. 7x7 maps at 224 input: resize to whole patches and back
            x = F.interpolate(x, size=(nh * p, nw * p), mode="bilinear", align_corners=False)
        # unfold: one sequence of nh*nw patches per pixel position inside a patch
        x = x.reshape(B, D, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(B * p * p, nh * nw, D)  # (B*P, N, D)
        x = self.norm(self.transformer(x))
        x = x.reshape(B, p, p, nh, nw, D).permute(0, 5, 3, 1, 4, 2).reshape(B, D, nh * p, nw * p)  # fold back
        if (nh * p, nw * p) != (H, W):
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        return self.conv_fusion(torch.cat((shortcut, self.conv_proj(x)), dim=1))

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            dim=b.dim,
            depth=b.depth,
            heads=b.heads,
            mlp_ratio=b.expansion,
            patch=b.patch,
            kernel=b.kernel,
            act=b.act,
            bias=b.bias,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        p2, n = b.patch * b.patch, -(-h // b.patch) * -(-w // b.patch)
        cost = (
            ConvNormAct.cost(c_in, c_in, b.kernel, h, w, bias=b.bias)
            + C.conv(c_in, b.dim, 1, h, w, bias=False)
            + TransformerBlock.cost(b.dim, n, heads=b.heads, mlp_ratio=b.expansion, batch=p2) * b.depth
            + C.norm(b.dim)
            + ConvNormAct.cost(b.dim, b.width, 1, h, w, bias=b.bias)
            + ConvNormAct.cost(c_in + b.width, b.width, b.kernel, h, w, bias=b.bias)
        )
        return cost, (b.width, h, w)
