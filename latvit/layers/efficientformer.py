"""EfficientFormer (V1) and EfficientFormerV2 blocks.

V1 (Li et al. 2022): MB4D blocks (pooling token mixer + Conv-BN MLP) on 4-D feature maps, then MB3D
blocks (LayerNorm + attention with a learned relative-position bias + linear MLP) on tokens in the last
stage only, so the network reshapes once. V2 (Li et al. 2023): a local FFN (1x1, depthwise 3x3, 1x1,
all BatchNorm), attention with talking heads and a depthwise conv on V kept on the 4-D grid, stride
attention at 1/16 resolution, and attention downsampling between the last stages.

Every block has `from_spec(b, c_in, h, w, drop_path)` to build it from a `BlockSpec` and
`spec_cost(b, c_in, h, w)` giving its analytic cost without building it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import LayerScale, LayerScale2d, Mlp

from latvit.layers import cost as C
from latvit.layers.common import ConvNormAct, conv_out, drop_path_or_identity, make_act
from latvit.layers.fold import fold_bn_, fold_layer_scale, foldable_bn


def layer_scale(dim: int, init: float, channels_last: bool) -> nn.Module:
    if init <= 0:
        return nn.Identity()
    return LayerScale(dim, init) if channels_last else LayerScale2d(dim, init)


def relative_bias_index(q_hw: tuple[int, int], k_hw: tuple[int, int], q_stride: int = 1) -> torch.Tensor:
    """(Nq, Nk) index into a (heads, Hk*Wk) bias table: |dy| * Wk + |dx| between query and key cells.

    Queries sit on every `q_stride`-th key cell (attention downsampling), so one table serves both.
    """
    ky, kx = torch.meshgrid(torch.arange(k_hw[0]), torch.arange(k_hw[1]), indexing="ij")
    qy, qx = torch.meshgrid(
        torch.arange(0, q_stride * q_hw[0], q_stride), torch.arange(0, q_stride * q_hw[1], q_stride), indexing="ij"
    )
    dy = (qy.flatten()[:, None] - ky.flatten()[None, :]).abs()
    dx = (qx.flatten()[:, None] - kx.flatten()[None, :]).abs()
    return dy * k_hw[1] + dx


class BiasedAttentionMixin:
    """A learned (heads, Hk*Wk) relative-position bias, gathered to (heads, Nq, Nk) at each call.

    Deploy folding (`latvit.deploy`) replaces the gather by a precomputed constant.
    """

    def _init_bias(self, heads: int, q_hw, k_hw, q_stride: int = 1) -> None:
        self.attention_biases = nn.Parameter(torch.zeros(heads, k_hw[0] * k_hw[1]))
        self.register_buffer("attention_bias_idxs", relative_bias_index(q_hw, k_hw, q_stride), persistent=False)
        self.bias_cache = None  # set by deploy folding: (heads, Nq, Nk)

    def attention_bias(self) -> torch.Tensor:
        if self.bias_cache is not None:
            return self.bias_cache
        return self.attention_biases[:, self.attention_bias_idxs]  # (heads, Nq, Nk)

    def fuse(self) -> None:
        """Deploy folding: gather the bias once into a (heads, Nq, Nk) buffer; the table and index go."""
        if self.bias_cache is None:
            cache = self.attention_bias().detach().clone()
            del self.bias_cache, self.attention_biases, self.attention_bias_idxs
            self.register_buffer("bias_cache", cache, persistent=False)


# ---------------------------------------------------------------------------------------------------
# EfficientFormer V1
# ---------------------------------------------------------------------------------------------------
class PoolMixer(nn.Module):
    """PoolFormer token mixer `avgpool(x) - x` (the block adds x back)."""

    def __init__(self, kernel: int = 3):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel, 1, kernel // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return self.pool(x) - x


class ConvMlpBN(nn.Module):
    """1x1 conv -> BN -> act -> 1x1 conv -> BN on (B, C, H, W): the MLP of MB4D."""

    def __init__(self, dim: int, hidden: int, act: str):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.act = make_act(act)
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.fc2(self.act(self.norm1(self.fc1(x)))))

    def fuse(self) -> None:
        """Deploy folding: each BatchNorm into the 1x1 conv before it."""
        if foldable_bn(self.norm1):
            self.fc1, self.norm1 = fold_bn_(self.fc1, self.norm1), nn.Identity()
        if foldable_bn(self.norm2):
            self.fc2, self.norm2 = fold_bn_(self.fc2, self.norm2), nn.Identity()


class Meta4D(nn.Module):
    """MB4D: x + LS(pool(x) - x), then x + LS(ConvMlpBN(x)). (B, C, H, W) -> (B, C, H, W)."""

    def __init__(
        self,
        dim: int,
        *,
        mlp_ratio: float = 4.0,
        pool: int = 3,
        act: str = "gelu",
        layer_scale_init: float = 1e-5,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.token_mixer = PoolMixer(pool)
        self.ls1 = layer_scale(dim, layer_scale_init, channels_last=False)
        self.mlp = ConvMlpBN(dim, int(dim * mlp_ratio), act)
        self.ls2 = layer_scale(dim, layer_scale_init, channels_last=False)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))

    def fuse(self) -> nn.Module:
        """Deploy folding: BN and the MLP's LayerScale go into the MLP's convs; the pool mixer has no
        projection to take its LayerScale, so the mixer residual becomes one multiply-add (`FusedMeta4D`)."""
        self.mlp.fuse()
        self.ls2 = fold_layer_scale(self.ls2, self.mlp.fc2)
        gamma = getattr(self.ls1, "gamma", None)
        return FusedMeta4D(self.token_mixer.pool, self.mlp, None if gamma is None else gamma.detach())

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in, mlp_ratio=b.expansion, pool=b.kernel, act=b.act, layer_scale_init=b.layer_scale, drop_path=drop_path
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        hidden = int(c_in * b.expansion)
        ls = C.params(2 * c_in) if b.layer_scale > 0 else C.Cost()
        return (C.conv(c_in, hidden, 1, h, w) + C.norm(hidden) + C.conv(hidden, c_in, 1, h, w) + C.norm(c_in) + ls), (
            c_in,
            h,
            w,
        )


class FusedMeta4D(nn.Module):
    """Meta4D as `latvit.deploy` leaves it. (B, C, H, W) -> (B, C, H, W).

    x + g * (pool(x) - x) is one `addcmul` (3 kernels instead of 4; without layer scale it is just
    pool(x)); the MLP branch carries its BatchNorms and LayerScale in its conv weights.
    """

    def __init__(self, pool: nn.Module, mlp: nn.Module, mixer_scale: torch.Tensor | None):
        super().__init__()
        self.pool = pool
        self.mlp = mlp
        self.register_buffer("mixer_scale", None if mixer_scale is None else mixer_scale.reshape(-1, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(x)
        x = y if self.mixer_scale is None else torch.addcmul(x, self.mixer_scale, y - x)
        return x + self.mlp(x)


class TokenAttention(BiasedAttentionMixin, nn.Module):
    """LeViT-style attention on tokens with a relative-position bias. (B, N, C) -> (B, N, C).

    One linear produces, per head, [q (key_dim) | k (key_dim) | v (attn_ratio * key_dim)].
    """

    def __init__(
        self,
        dim: int,
        *,
        key_dim: int = 32,
        heads: int = 8,
        attn_ratio: float = 4.0,
        resolution: tuple[int, int] = (7, 7),
    ):
        super().__init__()
        self.heads, self.key_dim, self.val_dim = heads, key_dim, int(attn_ratio * key_dim)
        self.scale = key_dim**-0.5
        self.qkv = nn.Linear(dim, heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(heads * self.val_dim, dim)
        self._init_bias(heads, resolution, resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.heads, -1).permute(0, 2, 1, 3)  # (B, heads, N, 2kd + vd)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale + self.attention_bias()  # (B, heads, N, N)
        x = attn.softmax(dim=-1) @ v  # (B, heads, N, vd)
        return self.proj(x.transpose(1, 2).reshape(B, N, -1))

    @staticmethod
    def cost(dim, n, *, key_dim, heads, attn_ratio):
        vd = int(attn_ratio * key_dim)
        return (
            C.linear(dim, heads * (2 * key_dim + vd), n)
            + C.matmul(heads, n, key_dim, n)
            + C.matmul(heads, n, n, vd)
            + C.linear(heads * vd, dim, n)
            + C.params(heads * n)
        )


class Meta3D(nn.Module):
    """MB3D on tokens: x + LS(Attn(LN(x))), then x + LS(MLP(LN(x))). (B, N, C) -> (B, N, C)."""

    def __init__(
        self,
        dim: int,
        *,
        resolution: tuple[int, int],
        mlp_ratio: float = 4.0,
        key_dim: int = 32,
        heads: int = 8,
        attn_ratio: float = 4.0,
        act: str = "gelu",
        layer_scale_init: float = 1e-5,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = TokenAttention(
            dim, key_dim=key_dim, heads=heads, attn_ratio=attn_ratio, resolution=resolution
        )
        self.ls1 = layer_scale(dim, layer_scale_init, channels_last=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=type(make_act(act)))
        self.ls2 = layer_scale(dim, layer_scale_init, channels_last=True)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.token_mixer(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def fuse(self) -> None:
        """Deploy folding: each LayerScale into its branch's last linear (attention proj, MLP fc2)."""
        self.ls1 = fold_layer_scale(self.ls1, self.token_mixer.proj)
        self.ls2 = fold_layer_scale(self.ls2, self.mlp.fc2)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            resolution=(h, w),
            mlp_ratio=b.expansion,
            key_dim=b.key_dim,
            heads=b.heads,
            attn_ratio=b.attn_ratio,
            act=b.act,
            layer_scale_init=b.layer_scale,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        n, hidden = h * w, int(c_in * b.expansion)
        ls = C.params(2 * c_in) if b.layer_scale > 0 else C.Cost()
        cost = (
            C.norm(c_in) * 2
            + TokenAttention.cost(c_in, n, key_dim=b.key_dim, heads=b.heads, attn_ratio=b.attn_ratio)
            + C.linear(c_in, hidden, n)
            + C.linear(hidden, c_in, n)
            + ls
        )
        return cost, (c_in, h, w)


# ---------------------------------------------------------------------------------------------------
# EfficientFormerV2
# ---------------------------------------------------------------------------------------------------
class LocalFFN(nn.Module):
    """1x1 Conv-BN-act -> depthwise 3x3 Conv-BN-act -> 1x1 Conv-BN. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool = True):
        super().__init__()
        self.fc1 = ConvNormAct(dim, hidden, 1, bias=bias, act=act)
        self.mid = ConvNormAct(hidden, hidden, 3, groups=hidden, bias=bias, act=act)
        self.fc2 = ConvNormAct(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.mid(self.fc1(x)))

    @staticmethod
    def cost(dim, hidden, h, w, bias=True):
        return (
            ConvNormAct.cost(dim, hidden, 1, h, w, bias=bias)
            + ConvNormAct.cost(hidden, hidden, 3, h, w, hidden, bias)
            + ConvNormAct.cost(hidden, dim, 1, h, w, bias=bias)
        )


class TalkingHeadAttention2d(BiasedAttentionMixin, nn.Module):
    """EfficientFormerV2 attention on the 4-D grid. (B, C, H, W) -> (B, C, H, W).

    Q, K, V are 1x1 Conv-BN; a depthwise 3x3 on V adds locality; 1x1 convs across heads before and after
    softmax ("talking heads"). With `stride` > 1 a depthwise strided conv shrinks the grid first and a
    bilinear upsample restores it (the paper's stride attention: 2.7x cheaper at 1/16 resolution).
    """

    def __init__(
        self,
        dim: int,
        *,
        resolution: tuple[int, int],
        key_dim: int = 32,
        heads: int = 8,
        attn_ratio: float = 4.0,
        stride: int = 1,
        act: str = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.scale = key_dim**-0.5
        self.val_dim = int(attn_ratio * key_dim)
        dh, kh = self.val_dim * heads, key_dim * heads
        if stride > 1:
            resolution = (conv_out(resolution[0], stride), conv_out(resolution[1], stride))
            self.stride_conv = ConvNormAct(dim, dim, 3, stride=stride, groups=dim, bias=bias)
            self.upsample = nn.Upsample(scale_factor=stride, mode="bilinear")
        else:
            self.stride_conv = None
            self.upsample = None
        self.resolution = resolution
        self.q = ConvNormAct(dim, kh, 1, bias=bias)
        self.k = ConvNormAct(dim, kh, 1, bias=bias)
        self.v = ConvNormAct(dim, dh, 1, bias=bias)
        self.v_local = ConvNormAct(dh, dh, 3, groups=dh, bias=bias)
        self.talking_head1 = nn.Conv2d(heads, heads, 1)
        self.talking_head2 = nn.Conv2d(heads, heads, 1)
        self.act = make_act(act)
        self.proj = ConvNormAct(dh, dim, 1, bias=bias)
        self._init_bias(heads, resolution, resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        if self.stride_conv is not None:
            x = self.stride_conv(x)  # (B, C, H/s, W/s)
        rh, rw = self.resolution
        n = rh * rw
        q = self.q(x).reshape(B, self.heads, -1, n).transpose(2, 3)  # (B, heads, N, kd)
        k = self.k(x).reshape(B, self.heads, -1, n)  # (B, heads, kd, N)
        v = self.v(x)  # (B, heads * vd, rh, rw)
        v_local = self.v_local(v)
        v = v.reshape(B, self.heads, -1, n).transpose(2, 3)  # (B, heads, N, vd)
        attn = (q @ k) * self.scale + self.attention_bias()  # (B, heads, N, N)
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        x = (attn @ v).transpose(2, 3).reshape(B, -1, rh, rw) + v_local  # (B, heads * vd, rh, rw)
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))

    @staticmethod
    def cost(dim, h, w, *, key_dim, heads, attn_ratio, stride, bias=True):
        vd = int(attn_ratio * key_dim)
        dh, kh = vd * heads, key_dim * heads
        cost = C.Cost()
        if stride > 1:
            h2, w2 = conv_out(h, stride), conv_out(w, stride)
            cost += ConvNormAct.cost(dim, dim, 3, h2, w2, dim, bias)
        else:
            h2, w2 = h, w
        n = h2 * w2
        cost += (
            ConvNormAct.cost(dim, kh, 1, h2, w2, bias=bias) * 2
            + ConvNormAct.cost(dim, dh, 1, h2, w2, bias=bias)
            + ConvNormAct.cost(dh, dh, 3, h2, w2, dh, bias)
            + C.conv(heads, heads, 1, n, n) * 2
            + C.matmul(heads, n, key_dim, n)
            + C.matmul(heads, n, n, vd)
            + C.params(heads * n)
            + ConvNormAct.cost(dh, dim, 1, stride * h2, stride * w2, bias=bias)
        )
        return cost


class EfficientFormerV2Block(nn.Module):
    """[x + LS(Attention(x))] then x + LS(LocalFFN(x)). (B, C, H, W) -> (B, C, H, W).

    Kind `ffn_local` has no attention (stages 1-2 and early blocks of 3-4); kind `attn_ffn` has it.
    """

    def __init__(
        self,
        dim: int,
        *,
        mlp_ratio: float,
        use_attn: bool,
        resolution: tuple[int, int] = (7, 7),
        key_dim: int = 32,
        heads: int = 8,
        attn_ratio: float = 4.0,
        attn_stride: int = 1,
        act: str = "gelu",
        bias: bool = True,
        layer_scale_init: float = 1e-5,
        drop_path: float = 0.0,
    ):
        super().__init__()
        if use_attn:
            self.token_mixer = TalkingHeadAttention2d(
                dim,
                resolution=resolution,
                key_dim=key_dim,
                heads=heads,
                attn_ratio=attn_ratio,
                stride=attn_stride,
                act=act,
                bias=bias,
            )
            self.ls1 = layer_scale(dim, layer_scale_init, channels_last=False)
        else:
            self.token_mixer = None
        self.mlp = LocalFFN(dim, int(dim * mlp_ratio), act, bias)
        self.ls2 = layer_scale(dim, layer_scale_init, channels_last=False)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixer is not None:
            x = x + self.drop_path(self.ls1(self.token_mixer(x)))
        return x + self.drop_path(self.ls2(self.mlp(x)))

    def fuse(self) -> None:
        """Deploy folding: each LayerScale into its branch's last 1x1 conv (after that conv's BN is folded)."""
        if self.token_mixer is not None:
            self.token_mixer.proj.fuse()
            self.ls1 = fold_layer_scale(self.ls1, self.token_mixer.proj.conv)
        self.mlp.fc2.fuse()
        self.ls2 = fold_layer_scale(self.ls2, self.mlp.fc2.conv)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            mlp_ratio=b.expansion,
            use_attn=b.kind == "attn_ffn",
            resolution=(h, w),
            key_dim=b.key_dim,
            heads=b.heads,
            attn_ratio=b.attn_ratio,
            attn_stride=b.attn_stride,
            act=b.act,
            bias=b.bias,
            layer_scale_init=b.layer_scale,
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        ls = C.params(c_in) if b.layer_scale > 0 else C.Cost()
        cost = LocalFFN.cost(c_in, int(c_in * b.expansion), h, w, b.bias) + ls
        if b.kind == "attn_ffn":
            cost += (
                TalkingHeadAttention2d.cost(
                    c_in,
                    h,
                    w,
                    key_dim=b.key_dim,
                    heads=b.heads,
                    attn_ratio=b.attn_ratio,
                    stride=b.attn_stride,
                    bias=b.bias,
                )
                + ls
            )
        return cost, (c_in, h, w)


class LocalGlobalQuery(nn.Module):
    """Downsampled query: strided depthwise 3x3 (local) + stride-2 subsampling (global), then 1x1 Conv-BN."""

    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.local = nn.Conv2d(c_in, c_in, 3, 2, 1, groups=c_in)
        self.proj = ConvNormAct(c_in, c_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C_out, H/2, W/2)
        return self.proj(self.local(x) + x[:, :, ::2, ::2])


class AttentionDownsample(BiasedAttentionMixin, nn.Module):
    """Attention whose queries are at half resolution: (B, C, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        *,
        resolution: tuple[int, int],
        key_dim: int = 16,
        heads: int = 8,
        attn_ratio: float = 4.0,
        act: str = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.scale = key_dim**-0.5
        vd = int(attn_ratio * key_dim)
        dh, kh = vd * heads, key_dim * heads
        self.resolution = resolution
        self.resolution2 = (conv_out(resolution[0], 2), conv_out(resolution[1], 2))
        self.q = LocalGlobalQuery(dim, kh, bias)
        self.k = ConvNormAct(dim, kh, 1, bias=bias)
        self.v = ConvNormAct(dim, dh, 1, bias=bias)
        self.v_local = ConvNormAct(dh, dh, 3, stride=2, groups=dh, bias=bias)
        self.act = make_act(act)
        self.proj = ConvNormAct(dh, out_dim, 1, bias=bias)
        self._init_bias(heads, self.resolution2, resolution, q_stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        n, n2 = self.resolution[0] * self.resolution[1], self.resolution2[0] * self.resolution2[1]
        q = self.q(x).reshape(B, self.heads, -1, n2).transpose(2, 3)  # (B, heads, N/4, kd)
        k = self.k(x).reshape(B, self.heads, -1, n)  # (B, heads, kd, N)
        v = self.v(x)
        v_local = self.v_local(v)  # (B, heads * vd, H/2, W/2)
        v = v.reshape(B, self.heads, -1, n).transpose(2, 3)  # (B, heads, N, vd)
        attn = ((q @ k) * self.scale + self.attention_bias()).softmax(dim=-1)  # (B, heads, N/4, N)
        x = (attn @ v).transpose(2, 3).reshape(B, -1, *self.resolution2) + v_local
        return self.proj(self.act(x))

    @staticmethod
    def cost(dim, out_dim, h, w, *, key_dim, heads, attn_ratio, bias=True):
        vd = int(attn_ratio * key_dim)
        dh, kh = vd * heads, key_dim * heads
        h2, w2 = conv_out(h, 2), conv_out(w, 2)
        n, n2 = h * w, h2 * w2
        return (
            C.conv(dim, dim, 3, h2, w2, dim)
            + ConvNormAct.cost(dim, kh, 1, h2, w2, bias=bias)
            + ConvNormAct.cost(dim, kh, 1, h, w, bias=bias)
            + ConvNormAct.cost(dim, dh, 1, h, w, bias=bias)
            + ConvNormAct.cost(dh, dh, 3, h2, w2, dh, bias)
            + C.matmul(heads, n2, key_dim, n)
            + C.matmul(heads, n2, n, vd)
            + C.params(heads * n)
            + ConvNormAct.cost(dh, out_dim, 1, h2, w2, bias=bias)
        )


class AttnDownsampleBlock(nn.Module):
    """EfficientFormerV2 downsampling between the last stages: strided Conv-BN + attention downsampling."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        resolution: tuple[int, int],
        key_dim: int = 16,
        heads: int = 8,
        attn_ratio: float = 4.0,
        act: str = "gelu",
        bias: bool = True,
    ):
        super().__init__()
        self.conv = ConvNormAct(c_in, c_out, 3, stride=2, bias=bias)
        self.attn = AttentionDownsample(
            c_in, c_out, resolution=resolution, key_dim=key_dim, heads=heads, attn_ratio=attn_ratio, act=act, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        return self.attn(x) + self.conv(x)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            resolution=(h, w),
            key_dim=b.key_dim,
            heads=b.heads,
            attn_ratio=b.attn_ratio,
            act=b.act,
            bias=b.bias,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        h2, w2 = conv_out(h, 2), conv_out(w, 2)
        cost = ConvNormAct.cost(c_in, b.width, 3, h2, w2, bias=b.bias) + AttentionDownsample.cost(
            c_in, b.width, h, w, key_dim=b.key_dim, heads=b.heads, attn_ratio=b.attn_ratio, bias=b.bias
        )
        return cost, (b.width, h2, w2)
