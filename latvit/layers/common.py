"""Building blocks shared by every family: activations, Conv-BN-act, the classifier head.

Parameter names inside blocks follow timm's for the same layers (`conv`/`bn`, `fc1`/`fc2`,
`ls1.gamma`, ...), so timm checkpoints map onto latvit by renaming block prefixes only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.layers import DropPath

from latvit.errors import SpecError
from latvit.layers import cost as C
from latvit.layers.fold import fold_bn_, foldable_bn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "none": nn.Identity,
}


def make_act(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise SpecError(f"unknown activation '{name}'; choose one of {sorted(ACTIVATIONS)}") from None


class ConvNormAct(nn.Module):
    """Conv2d -> BatchNorm2d -> activation. (B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        act: str = "none",
    ):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Deploy folding (`latvit.deploy`): the BatchNorm goes into the conv's weight and bias."""
        if foldable_bn(self.bn):
            fold_bn_(self.conv, self.bn)
            self.bn = nn.Identity()

    @staticmethod
    def cost(c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1, bias: bool = True) -> C.Cost:
        return C.conv(c_in, c_out, kernel, h_out, w_out, groups, bias) + C.norm(c_out)

    # block kind `conv_bn_act`: stems and strided Conv-BN downsampling between stages
    @classmethod
    def from_spec(cls, b, c_in, h, w, drop_path=0.0):
        return cls(c_in, b.width, b.kernel, stride=b.stride, bias=b.bias, act=b.act)

    @staticmethod
    def spec_cost(b, c_in, h, w):
        h2, w2 = conv_out(h, b.stride), conv_out(w, b.stride)
        return ConvNormAct.cost(c_in, b.width, b.kernel, h2, w2, bias=b.bias), (b.width, h2, w2)


def drop_path_or_identity(p: float) -> nn.Module:
    """Stochastic depth with drop probability `p` (timm's DropPath), or nothing when `p` is 0."""
    return DropPath(p) if p > 0 else nn.Identity()


def conv_out(size: int, stride: int) -> int:
    """Output size of a conv with padding kernel//2 (odd kernels): ceil(size / stride)."""
    return (size + stride - 1) // stride


class ClassifierHead(nn.Module):
    """[1x1 Conv-BN-act] -> [norm] -> average pool -> dropout -> linear, plus an optional distillation
    linear whose logits are averaged with the main ones at inference (EfficientFormer, LeViT).

    Input is (B, C, H, W) or tokens (B, N, C); output (B, num_classes) or (B, C) with pre_logits.
    """

    def __init__(
        self,
        c_in: int,
        num_classes: int,
        *,
        conv_width: int = 0,
        act: str = "silu",
        norm: str = "none",
        distill: bool = False,
        dropout: float = 0.0,
        tokens: bool = False,
    ):
        super().__init__()
        self.conv = ConvNormAct(c_in, conv_width, 1, bias=False, act=act) if conv_width else None
        self.num_features = conv_width or c_in
        if norm == "bn":
            self.norm = nn.BatchNorm2d(self.num_features)
        elif norm == "ln":
            self.norm = nn.LayerNorm(self.num_features)
        else:
            self.norm = nn.Identity()
        self.tokens = tokens
        self.distill = distill
        self.drop = nn.Dropout(dropout)
        self.distilled_training = False  # set by the trainer: return (cls, dist) logits in training
        self.reset(num_classes)

    def reset(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.fc_dist = (
            (nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()) if self.distill else None
        )
        for m in (self.fc, self.fc_dist):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            x = self.conv(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, pre_logits: bool = False):
        x = x.mean(dim=1) if self.tokens else x.mean(dim=(2, 3))  # (B, C)
        x = self.drop(x)
        if pre_logits:
            return x
        if self.fc_dist is None:
            return self.fc(x)
        x, x_dist = self.fc(x), self.fc_dist(x)
        if self.distilled_training and self.training:
            return x, x_dist
        return (x + x_dist) / 2

    @torch.no_grad()
    def fuse(self) -> None:
        """Deploy folding (`latvit.deploy`): at inference the two distilled classifiers average, which is
        one linear with averaged weight and bias."""
        if isinstance(self.fc, nn.Linear) and isinstance(self.fc_dist, nn.Linear):
            for name in ("weight", "bias"):
                mean = (getattr(self.fc, name).double() + getattr(self.fc_dist, name).double()) / 2
                getattr(self.fc, name).copy_(mean)
            self.fc_dist = None

    @staticmethod
    def cost(
        c_in: int, h: int, w: int, num_classes: int, *, conv_width: int = 0, norm: str = "none", distill: bool = False
    ) -> C.Cost:
        cost = C.Cost()
        if conv_width:
            cost += ConvNormAct.cost(c_in, conv_width, 1, h, w, bias=False)
            c_in = conv_width
        if norm != "none":
            cost += C.norm(c_in)
        if num_classes > 0:
            cost += C.linear(c_in, num_classes, 1) * (2 if distill else 1)
        return cost
