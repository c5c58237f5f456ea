"""Mobile-Former (Chen et al., CVPR 2022, arXiv:2108.05895): a MobileNet and a tiny transformer in parallel.

The Mobile branch is a stack of inverted residuals on the feature map; the Former branch is a transformer
over a handful of learned global tokens (3 to 6, not image patches); two light cross-attention bridges
join them in every block: Mobile->Former (the tokens attend to the map, keys = values = the map itself,
no projection on the map side) and Former->Mobile (every pixel attends to the tokens). The Mobile
branch's activations are dynamic ReLUs whose slopes come from the first global token.

latvit keeps the design space flat, so each part is its own block kind and a Mobile-Former block is the
sequence `mf_m2f, mf_former, mf_mobile | mf_mobile_down, mf_f2m`. Between `mf_tokens` (which creates the
tokens) and `mf_merge` (the classifier stem that consumes them) every block takes and returns the pair
`(x, z)`: the map x (B, C, H, W) and the tokens z (B, T, D). The planner checks that the pair is opened
before it is used and closed before the head.

Layer choices follow the official code (github.com/AAboys/MobileFormer): bridges with 2 heads, the Former
with 4 heads, post-LayerNorm and an FFN of ratio 2, dynamic ReLU on the Mobile-Former bridge (Mobile->Former
gated per channel by the tokens), grouped 1x1 convs with channel shuffle for the 26M model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

from latvit.layers import cost as C
from latvit.layers.common import ConvNormAct, conv_out

HYPER_REDUCTION = 4  # dynamic-ReLU hyper-function squeeze: token width / 4, as in the paper
DOWN_EXPANSION2 = 4  # second depthwise expansion of the downsampling block (4 in every published model)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle so grouped 1x1 convs see every group. (B, C, H, W) -> (B, C, H, W)."""
    if groups == 1:
        return x
    B, Ch, H, W = x.shape
    return x.reshape(B, groups, Ch // groups, H, W).transpose(1, 2).reshape(B, Ch, H, W)


class SingleSampleBatchNorm:
    """Mixin for BatchNorms on pooled features: a training batch with one value per channel (batch 1 after
    global pooling) has no batch statistics, so it is normalised with the running ones, as in eval;
    otherwise the usual BatchNorm. Keeps batch-1 training steps working; folds like any BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.numel() == x.shape[1]:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class SingleSampleBatchNorm1d(SingleSampleBatchNorm, nn.BatchNorm1d):
    pass


class SingleSampleBatchNorm2d(SingleSampleBatchNorm, nn.BatchNorm2d):
    pass


# ---------------------------------------------------------------------------------------------------
# token stream: creation and the blocks that read or write it
# ---------------------------------------------------------------------------------------------------
class GlobalTokens(nn.Module):
    """`mf_tokens`: opens the token stream. x (B, C, H, W) -> (x, z) with z the learned (B, T, D) tokens."""

    def __init__(self, tokens: int, dim: int):
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(tokens, dim))  # nn.Embedding's N(0, 1) init, as the paper's code

    def forward(self, x: torch.Tensor):
        # repeat, not expand: a view of a parameter made under no_grad would still claim to need grad
        return x, self.tokens.unsqueeze(0).repeat(x.shape[0], 1, 1)  # (B, T, D)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(b.tokens, b.dim)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        return C.params(b.tokens * b.dim), (c_in, h, w)


class MobileToFormer(nn.Module):
    """`mf_m2f` bridge: the tokens attend to the feature map, which serves as keys and values unprojected
    (that is what makes the bridge light). A per-channel gate computed from the tokens scales the result
    (the dynamic bridge). (x, z) -> (x, z'), z' = LN(z + proj(gate * attn(q(z), x, x)))."""

    def __init__(self, channels: int, dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.q = nn.Linear(dim, channels)
        self.gate = nn.Sequential(nn.Linear(dim, channels), nn.Hardsigmoid())
        self.proj = nn.Linear(channels, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, xz):
        x, z = xz
        B, Ch, H, W = x.shape
        T = z.shape[1]
        q = self.q(z).reshape(B, T, self.heads, -1).transpose(1, 2)  # (B, heads, T, C/heads)
        k = x.reshape(B, self.heads, Ch // self.heads, H * W)  # (B, heads, C/heads, HW): keys = values = x
        attn = ((q * self.scale) @ k).softmax(dim=-1)  # (B, heads, T, HW)
        out = (attn @ k.transpose(-2, -1)).transpose(1, 2).reshape(B, T, Ch)  # (B, T, C)
        out = out * (2.0 * self.gate(z))  # gate in [0, 2], per token and channel
        return x, self.norm(z + self.proj(out))

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.dim, b.heads)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        n, t = h * w, b.tokens
        cost = (
            C.linear(b.dim, c_in, t) * 2
            + C.matmul(b.heads, t, c_in // b.heads, n)
            + C.matmul(b.heads, t, n, c_in // b.heads)
            + C.linear(c_in, b.dim, t)
            + C.norm(b.dim)
        )
        return cost, (c_in, h, w)


class Former(nn.Module):
    """`mf_former`: a post-norm transformer layer over the T global tokens, keys = values = the tokens.
    (x, z) -> (x, z'). Cheap: T is 3 to 6."""

    def __init__(self, dim: int, heads: int = 4, ffn_ratio: float = 2.0):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        hidden = int(dim * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, xz):
        x, z = xz
        B, T, D = z.shape
        q = self.q(z).reshape(B, T, self.heads, -1).transpose(1, 2)  # (B, heads, T, D/heads)
        k = z.reshape(B, T, self.heads, -1).transpose(1, 2)  # (B, heads, T, D/heads): keys = values
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, T, T)
        out = (attn @ k).transpose(1, 2).reshape(B, T, D)
        z = self.norm1(z + self.proj(out))
        return x, self.norm2(z + self.ffn(z))

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(b.dim, b.heads, b.expansion)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        t, d, hidden = b.tokens, b.dim, int(b.dim * b.expansion)
        cost = (
            C.linear(d, d, t) * 2
            + C.matmul(b.heads, t, d // b.heads, t) * 2
            + C.norm(d) * 2
            + C.linear(d, hidden, t)
            + C.linear(hidden, d, t)
        )
        return cost, (c_in, h, w)


class FormerToMobile(nn.Module):
    """`mf_f2m` bridge: every pixel attends to the tokens; the map is the query as it is (no projection),
    keys and values are projected from the tokens. (x, z) -> (x + attn(x, k(z), v(z)), z)."""

    def __init__(self, channels: int, dim: int, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.k = nn.Linear(dim, channels)
        self.v = nn.Linear(dim, channels)

    def forward(self, xz):
        x, z = xz
        B, Ch, H, W = x.shape
        T = z.shape[1]
        q = x.reshape(B, self.heads, Ch // self.heads, H * W).transpose(-2, -1)  # (B, heads, HW, C/heads)
        k = self.k(z).reshape(B, T, self.heads, -1).permute(0, 2, 3, 1)  # (B, heads, C/heads, T)
        v = self.v(z).reshape(B, T, self.heads, -1).transpose(1, 2)  # (B, heads, T, C/heads)
        attn = ((q * self.scale) @ k).softmax(dim=-1)  # (B, heads, HW, T)
        out = (attn @ v).transpose(-2, -1).reshape(B, Ch, H, W)  # back to the map layout
        return x + out, z

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.dim, b.heads)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        n, t, hd = h * w, b.tokens, c_in // b.heads
        cost = C.linear(b.dim, c_in, t) * 2 + C.matmul(b.heads, n, hd, t) + C.matmul(b.heads, n, t, hd)
        return cost, (c_in, h, w)


# ---------------------------------------------------------------------------------------------------
# Mobile branch
# ---------------------------------------------------------------------------------------------------
class DynamicReLU(nn.Module):
    """Dynamic ReLU (Chen et al. 2020) with two linear pieces whose per-channel slopes come from the first
    global token: y = max(a1 * x, a2 * x), a1 in [0, 2], a2 in [-1, 1]. (x (B, C, H, W), z (B, T, D)) -> x."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.hyper = nn.Sequential(
            nn.Linear(dim, dim // HYPER_REDUCTION),
            nn.ReLU(),
            nn.Linear(dim // HYPER_REDUCTION, 2 * channels),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        a = self.hyper(z[:, 0]).reshape(x.shape[0], 2, -1, 1, 1)  # (B, 2, C, 1, 1), in [0, 1]
        return torch.maximum(x * (2.0 * a[:, 0]), x * (2.0 * a[:, 1] - 1.0))

    @staticmethod
    def cost(channels: int, dim: int) -> C.Cost:
        return C.linear(dim, dim // HYPER_REDUCTION, 1) + C.linear(dim // HYPER_REDUCTION, 2 * channels, 1)


class MobileBlock(nn.Module):
    """The Mobile sub-block, on the map with dynamic ReLUs driven by the tokens. (x, z) -> (x', z).

    `mf_mobile`: 1x1 expand -> k x k depthwise (stride) -> 1x1 project, a MobileNetV2 inverted residual.
    `mf_mobile_down`: k x k depthwise expand (stride) -> 1x1 project -> k x k depthwise expand (x4) -> 1x1
    project with a residual around the second pair: the paper's downsampling block, which spends its
    FLOPs after the stride. Both add the input back when stride is 1 and widths match.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        dim: int,
        *,
        stride: int = 1,
        expansion: float = 4.0,
        kernel: int = 3,
        groups: int = 1,
        down: bool = False,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.down, self.groups = down, groups
        if down:
            hidden = int(round(c_in * expansion))
            self.conv1 = ConvNormAct(c_in, hidden, kernel, stride=stride, groups=c_in, bias=False)
            self.shuffle1 = c_in  # groups of the depthwise expansion's copies, interleaved for the grouped 1x1
            self.conv2 = ConvNormAct(hidden, c_out, 1, groups=groups, bias=False)
            hidden2 = c_out * DOWN_EXPANSION2
            self.conv3 = ConvNormAct(c_out, hidden2, kernel, groups=c_out, bias=False)
            self.act3 = DynamicReLU(hidden2, dim)
            self.conv4 = ConvNormAct(hidden2, c_out, 1, groups=groups, bias=False)
        else:
            hidden = int(round(c_in * expansion))
            self.conv1 = ConvNormAct(c_in, hidden, 1, groups=groups, bias=False)
            self.shuffle1 = groups
            self.conv2 = ConvNormAct(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
            self.act2 = DynamicReLU(hidden, dim)
            self.conv3 = ConvNormAct(hidden, c_out, 1, groups=groups, bias=False)
        self.act1 = DynamicReLU(hidden, dim)
        self.has_residual = stride == 1 and c_in == c_out
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_residual else nn.Identity()

    def forward(self, xz):
        x, z = xz
        shuffle1 = self.shuffle1 if self.groups > 1 else 1
        y = self.act1(channel_shuffle(self.conv1(x), shuffle1), z)
        if self.down:
            y = self.conv2(y)
            r = channel_shuffle(self.conv3(y), y.shape[1] if self.groups > 1 else 1)
            y = y + self.conv4(self.act3(r, z))
        else:
            y = channel_shuffle(self.conv3(self.act2(self.conv2(y), z)), self.groups)
        return (x + self.drop_path(y) if self.has_residual else y), z

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(
            c_in,
            b.width,
            b.dim,
            stride=b.stride,
            expansion=b.expansion,
            kernel=b.kernel,
            groups=b.groups,
            down=b.kind == "mf_mobile_down",
            drop_path=drop_path,
        )

    @staticmethod
    def spec_cost(b, c_in, h, w):
        h2, w2 = conv_out(h, b.stride), conv_out(w, b.stride)
        hidden, g, k = int(round(c_in * b.expansion)), b.groups, b.kernel
        if b.kind == "mf_mobile_down":
            hidden2 = b.width * DOWN_EXPANSION2
            cost = (
                ConvNormAct.cost(c_in, hidden, k, h2, w2, c_in, False)
                + DynamicReLU.cost(hidden, b.dim)
                + ConvNormAct.cost(hidden, b.width, 1, h2, w2, g, False)
                + ConvNormAct.cost(b.width, hidden2, k, h2, w2, b.width, False)
                + DynamicReLU.cost(hidden2, b.dim)
                + ConvNormAct.cost(hidden2, b.width, 1, h2, w2, g, False)
            )
        else:
            cost = (
                ConvNormAct.cost(c_in, hidden, 1, h, w, g, False)
                + DynamicReLU.cost(hidden, b.dim)
                + ConvNormAct.cost(hidden, hidden, k, h2, w2, hidden, False)
                + DynamicReLU.cost(hidden, b.dim)
                + ConvNormAct.cost(hidden, b.width, 1, h2, w2, g, False)
            )
        return cost, (b.width, h2, w2)


class LiteBottleneck(nn.Module):
    """`mf_lite`: the first block, before any token: k x k depthwise expansion (stride) -> ReLU6 -> 1x1
    project, residual when shapes match (MicroNet's lite bottleneck). (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        stride: int = 1,
        expansion: float = 2.0,
        kernel: int = 3,
        groups: int = 1,
        act: str = "relu6",
    ):
        super().__init__()
        hidden = int(round(c_in * expansion))
        self.shuffle = c_in if groups > 1 else 1
        self.conv1 = ConvNormAct(c_in, hidden, kernel, stride=stride, groups=c_in, bias=False, act=act)
        self.conv2 = ConvNormAct(hidden, c_out, 1, groups=groups, bias=False)
        self.has_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(channel_shuffle(self.conv1(x), self.shuffle))
        return x + y if self.has_residual else y

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.width, stride=b.stride, expansion=b.expansion, kernel=b.kernel, groups=b.groups, act=b.act)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        h2, w2 = conv_out(h, b.stride), conv_out(w, b.stride)
        hidden = int(round(c_in * b.expansion))
        cost = ConvNormAct.cost(c_in, hidden, b.kernel, h2, w2, c_in, False) + ConvNormAct.cost(
            hidden, b.width, 1, h2, w2, b.groups, False
        )
        return cost, (b.width, h2, w2)


class MergeHead(nn.Module):
    """`mf_merge`: closes the token stream, the classifier stem of the paper. 1x1 expand (x expansion) ->
    BN -> ReLU6 -> global pool -> h-swish, concatenated with the first token -> linear -> BN -> h-swish.
    (x (B, C, H, W), z (B, T, D)) -> (B, width, 1, 1), which latvit's head pools (a no-op) and classifies."""

    def __init__(self, c_in: int, c_out: int, dim: int, *, expansion: float = 6.0, groups: int = 1):
        super().__init__()
        hidden = int(round(c_in * expansion))
        self.groups = groups
        self.conv = ConvNormAct(c_in, hidden, 1, groups=groups, bias=False, act="relu6")
        self.act = nn.Hardswish()
        self.fc = nn.Sequential(nn.Linear(hidden + dim, c_out), SingleSampleBatchNorm1d(c_out), nn.Hardswish())

    def forward(self, xz) -> torch.Tensor:
        x, z = xz
        x = self.act(self.conv(channel_shuffle(x, self.groups)).mean(dim=(2, 3)))  # (B, hidden)
        x = self.fc(torch.cat((x, z[:, 0]), dim=1))  # (B, width)
        return x[:, :, None, None]  # (B, width, 1, 1)

    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.width, b.dim, expansion=b.expansion, groups=b.groups)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        hidden = int(round(c_in * b.expansion))
        cost = (
            ConvNormAct.cost(c_in, hidden, 1, h, w, b.groups, False)
            + C.linear(hidden + b.dim, b.width, 1)
            + C.norm(b.width)
        )
        return cost, (b.width, 1, 1)


# ---------------------------------------------------------------------------------------------------
# spec checks (used by latvit.space.blocks)
# ---------------------------------------------------------------------------------------------------
def check_tokens(b, c_in, h, w) -> str | None:
    if b.tokens < 1:
        return f"tokens (global token count) must be >= 1, got {b.tokens}"
    if b.dim < 1:
        return f"dim (token width) must be >= 1, got {b.dim}"
    return None


def check_bridge(b, c_in, h, w) -> str | None:
    """Bridges split the map's channels into heads; the Former splits the token width."""
    problem = check_tokens(b, c_in, h, w)
    if problem:
        return problem
    if b.heads < 1:
        return f"heads must be >= 1, got {b.heads}"
    split = b.dim if b.kind == "mf_former" else c_in
    what = "token width dim" if b.kind == "mf_former" else "input width"
    if split % b.heads:
        return f"{what} {split} is not divisible by heads={b.heads}"
    return None


def check_groups(b, c_in, h, w) -> str | None:
    if b.groups < 1:
        return f"groups must be >= 1, got {b.groups}"
    hidden = int(round(c_in * b.expansion))
    if b.kind in ("mf_lite", "mf_mobile_down") and hidden % c_in:
        return f"expansion {b.expansion} must be a whole number for a depthwise expansion ({b.kind})"
    widths = {"input width": c_in, "width": b.width, "hidden width": hidden}
    if b.kind == "mf_merge":
        widths = {"input width": c_in, "hidden width": hidden}
    for what, n in widths.items():
        if n % b.groups:
            return f"{what} {n} is not divisible by groups={b.groups}"
    if b.kind in ("mf_mobile", "mf_mobile_down", "mf_merge"):
        return check_tokens(b, c_in, h, w)
    return None
