"""MixFormer (Chen et al., CVPR 2022, arXiv:2204.02557): window attention and a depthwise conv side by side.

The mixing block replaces Swin's shifted windows by a parallel 3x3 depthwise-conv branch that connects the
windows, and lets the branches steer each other: a channel interaction (pooled conv features -> a sigmoid
gate on the attention's values) and a spatial interaction (attention output -> a sigmoid map gating the
conv branch). The attention branch works at half the width, the conv branch is projected to the other
half, and the two halves are concatenated and projected back. Layer choices follow the official
PaddleClas `mixformer.py`.

Blocks work on (B, C, H, W) maps like every latvit stage; inside, linears and LayerNorms run channels-last
(B, H, W, C), which is also where the window partition happens. A map that the window does not tile is
padded as the official code does: the normalised map gets zeros at the bottom and right up to a multiple of
the window, the whole mixer (both branches) runs on the padded map, and the result is cropped back. Where
the window tiles the map (every stage at 224 with 7x7 windows) nothing is padded and the graph is the
unpadded one; partition and reverse stay two static reshapes that every exporter handles.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp

from latvit.layers import cost as C
from latvit.layers.common import ConvNormAct, make_act
from latvit.layers.mobileformer import SingleSampleBatchNorm2d


@torch.no_grad()
def fold_input_bn_(layer: nn.Module, bn: nn.BatchNorm2d, start: int = 0) -> None:
    """Fold an eval-mode BatchNorm that feeds input channels start.. of `layer` (a conv without padding, or
    a linear) into `layer`, in place: W x' with x' = s x + t is (W s) x + W t. The caller drops the BN."""
    s = (bn.running_var.double() + bn.eps).rsqrt()
    t = -bn.running_mean.double() * s
    if bn.affine:
        s, t = s * bn.weight.double(), t * bn.weight.double() + bn.bias.double()
    w = layer.weight.double()  # (C_out, C_in[, k, k])
    part = w[:, start : start + s.numel()]
    shape = (1, -1) + (1,) * (w.dim() - 2)
    bias = layer.bias.double() if layer.bias is not None else w.new_zeros(w.shape[0])
    bias = bias + (part * t.reshape(shape)).flatten(1).sum(1)
    w[:, start : start + s.numel()] = part * s.reshape(shape)
    layer.weight.copy_(w.to(layer.weight.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
    else:
        layer.bias.copy_(bias.to(layer.bias.dtype))


def padded_to_window(n: int, window: int) -> int:
    """`n` rounded up to a multiple of `window`: the side of the map the mixer really works on."""
    return -(-n // window) * window


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C): one row of tokens per window."""
    B, H, W, Ch = x.shape
    x = x.reshape(B, H // window, window, W // window, window, Ch).transpose(2, 3)  # (B, nH, nW, w, w, C)
    return x.reshape(-1, window * window, Ch)


def window_reverse(windows: torch.Tensor, window: int, H: int, W: int) -> torch.Tensor:
    """(B * H/w * W/w, w*w, C) -> (B, H, W, C); inverse of `window_partition`."""
    Ch = windows.shape[-1]
    x = windows.reshape(-1, H // window, W // window, window, window, Ch).transpose(2, 3)  # (B, nH, w, nW, w, C)
    return x.reshape(-1, H, W, Ch)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into a ((2w-1)^2,) table of relative offsets, as in Swin."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), offsets shifted to >= 0
    return rel[0] * (2 * window - 1) + rel[1]


class MixingAttention(nn.Module):
    """Window attention (C/2 wide) || depthwise conv (C wide, projected to C/2), with channel and spatial
    interactions, concatenated and projected. (B, H, W, C) -> (B, H, W, C)."""

    fused_projections = {"qkv": 3}  # output rows stacked (chunks, width): see latvit.search.inherit

    def __init__(self, dim: int, *, heads: int, window: int = 7, kernel: int = 3, act: str = "gelu"):
        super().__init__()
        half = dim // 2
        self.heads, self.window = heads, window
        self.scale = (half // heads) ** -0.5
        self.proj_attn = nn.Linear(dim, half)
        self.proj_attn_norm = nn.LayerNorm(half)
        self.proj_cnn = nn.Linear(dim, dim)
        self.proj_cnn_norm = nn.LayerNorm(dim)
        # conv branch
        self.dwconv = ConvNormAct(dim, dim, kernel, groups=dim, act=act)
        self.channel_interaction = nn.Sequential(ConvNormAct(dim, dim // 8, 1, act=act), nn.Conv2d(dim // 8, half, 1))
        self.channel_interaction[0].bn = SingleSampleBatchNorm2d(dim // 8)  # it sees pooled (B, C, 1, 1) features
        self.projection = nn.Conv2d(dim, half, 1)
        self.conv_norm = nn.BatchNorm2d(half)
        # attention branch
        self.qkv = nn.Linear(half, 3 * half)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.spatial_interaction = nn.Sequential(ConvNormAct(half, dim // 16, 1, act=act), nn.Conv2d(dim // 16, 1, 1))
        self.attn_norm = nn.LayerNorm(half)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, H, W, C) for any H, W: a map the window does not tile is zero-padded at the
        bottom and right, mixed as a whole, and cropped (the official code's padding; no key mask, as there)."""
        H, W = int(x.shape[1]), int(x.shape[2])  # plain ints: the pad amounts are constants in an exported graph
        pad_h, pad_w = padded_to_window(H, self.window) - H, padded_to_window(W, self.window) - W
        if not (pad_h or pad_w):
            return self.mix(x)
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, H + pad_h, W + pad_w, C): zeros after the last row/column
        return self.mix(x)[:, :H, :W]

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """The mixer on a map the window tiles exactly. (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, _ = x.shape
        w, heads = self.window, self.heads
        xa = self.proj_attn_norm(self.proj_attn(x))  # (B, H, W, C/2)
        xc = self.proj_cnn_norm(self.proj_cnn(x)).permute(0, 3, 1, 2)  # (B, C, H, W)

        xc = self.dwconv(xc)
        gate_v = self.channel_interaction(xc.mean(dim=(2, 3), keepdim=True)).sigmoid()  # (B, C/2, 1, 1)
        xc = self.projection(xc)  # (B, C/2, H, W)

        tokens = window_partition(xa, w)  # (B*nW, N, C/2)
        Bw, N, half = tokens.shape
        q, k, v = self.qkv(tokens).reshape(Bw, N, 3, heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B*nW, heads, N, hd)
        v = (v.reshape(B, -1, heads, N, half // heads) * gate_v.reshape(B, 1, heads, 1, -1)).reshape(Bw, heads, N, -1)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (heads, N, N)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)  # (B*nW, heads, N, N)
        xa = window_reverse((attn @ v).transpose(1, 2).reshape(Bw, N, half), w, H, W)  # (B, H, W, C/2)

        gate_s = self.spatial_interaction(xa.permute(0, 3, 1, 2)).sigmoid()  # (B, 1, H, W)
        xc = self.conv_norm(xc * gate_s).permute(0, 2, 3, 1)  # (B, H, W, C/2)
        return self.proj(torch.cat((self.attn_norm(xa), xc), dim=-1))

    def fuse(self) -> None:
        """Deploy folding: the conv branch's last BatchNorm is an affine map on the second half of `proj`'s
        input, so it goes into those columns of `proj` (it cannot go backwards past the spatial gate)."""
        if isinstance(self.conv_norm, nn.BatchNorm2d) and self.conv_norm.running_mean is not None:
            fold_input_bn_(self.proj, self.conv_norm, start=self.proj.in_features // 2)
            self.conv_norm = nn.Identity()

    @staticmethod
    def cost(dim: int, h: int, w: int, *, heads: int, window: int, kernel: int) -> C.Cost:
        """Cost on an (h, w) map: every op of the mixer runs on the map padded to window multiples."""
        h, w = padded_to_window(h, window), padded_to_window(w, window)
        half, n = dim // 2, h * w
        windows, tokens = n // (window * window), window * window
        return (
            C.linear(dim, half, n)
            + C.norm(half)
            + C.linear(dim, dim, n)
            + C.norm(dim)
            + ConvNormAct.cost(dim, dim, kernel, h, w, dim)
            + ConvNormAct.cost(dim, dim // 8, 1, 1, 1)
            + C.conv(dim // 8, half, 1, 1, 1)
            + C.conv(dim, half, 1, h, w)
            + C.norm(half)
            + C.linear(half, 3 * half, n)
            + C.params((2 * window - 1) ** 2 * heads)
            + C.matmul(windows * heads, tokens, half // heads, tokens) * 2
            + ConvNormAct.cost(half, dim // 16, 1, h, w)
            + C.conv(dim // 16, 1, 1, h, w)
            + C.norm(half)
            + C.linear(dim, dim, n)
        )


class MixingBlock(nn.Module):
    """`mixing`: x + MixingAttention(LN(x)), x + MLP(LN(x)), a Swin block without shifts.
    (B, C, H, W) -> (B, C, H, W), any H and W (the mixer pads to window multiples)."""

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        window: int = 7,
        kernel: int = 3,
        mlp_ratio: float = 4.0,
        act: str = "gelu",
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MixingAttention(dim, heads=heads, window=window, kernel=kernel, act=act)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=type(make_act(act)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and the linears act on the last dim
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in, heads=b.heads, window=b.patch, kernel=b.kernel, mlp_ratio=b.expansion, act=b.act, drop_path=drop_path
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        hidden = int(c_in * b.expansion)
        cost = (
            C.norm(c_in) * 2
            + MixingAttention.cost(c_in, h, w, heads=b.heads, window=b.patch, kernel=b.kernel)
            + C.linear(c_in, hidden, h * w)
            + C.linear(hidden, c_in, h * w)
        )
        return cost, (c_in, h, w)


class PatchMerge(nn.Module):
    """2x2 stride-2 conv between stages. `mix_merge`: BatchNorm then conv (MixFormer's ConvMerging);
    `mix_embed`: conv then a LayerNorm over channels (the end of MixFormer's conv stem).
    (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, *, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.norm = nn.BatchNorm2d(c_in) if norm_first else nn.LayerNorm(c_out)
        self.conv = nn.Conv2d(c_in, c_out, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            return self.conv(self.norm(x))
        return self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LN over C, channels-last

    def fuse(self) -> None:
        """Deploy folding: a BatchNorm before an unpadded conv folds into the conv's weight and bias."""
        if self.norm_first and isinstance(self.norm, nn.BatchNorm2d) and self.norm.running_mean is not None:
            fold_input_bn_(self.conv, self.norm)
            self.norm = nn.Identity()

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.width, norm_first=b.kind == "mix_merge")

    @staticmethod
    def spec_cost(b, c_in, h, w):
        h2, w2 = h // 2, w // 2
        norm = C.norm(c_in) if b.kind == "mix_merge" else C.norm(b.width)
        return C.conv(c_in, b.width, 2, h2, w2) + norm, (b.width, h2, w2)


def check_mixing(b, c_in, h, w) -> str | None:
    if b.patch < 1:
        return f"window (the patch field) must be >= 1, got {b.patch}"
    if c_in < 16 or c_in % 2:
        return f"width {c_in} must be even and >= 16 (the interactions squeeze it by 8 and 16)"
    if b.heads < 1 or (c_in // 2) % b.heads:
        return f"half the width ({c_in // 2}, the attention branch) is not divisible by heads={b.heads}"
    return None
