"""Analytic cost primitives: FLOPs, parameters and activations from shapes alone.

Conventions follow `torch.utils.flop_counter` so the two can be compared exactly: a multiply-add is
2 FLOPs, only convolutions, linear layers and matrix products are counted (norms, activations,
pooling, softmax and element-wise ops are 0 FLOPs there), biases add no FLOPs. `acts` counts the
output elements of every counted op (pycls's "activations"), a proxy for memory traffic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    params: int = 0
    acts: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.flops + other.flops, self.params + other.params, self.acts + other.acts)

    def __mul__(self, n: int) -> Cost:
        return Cost(self.flops * n, self.params * n, self.acts * n)


def conv(c_in: int, c_out: int, k: int, h_out: int, w_out: int, groups: int = 1, bias: bool = True) -> Cost:
    """A k x k convolution producing (c_out, h_out, w_out) for one image."""
    weights = c_out * (c_in // groups) * k * k
    return Cost(2 * weights * h_out * w_out, weights + (c_out if bias else 0), c_out * h_out * w_out)


def linear(d_in: int, d_out: int, tokens: int, bias: bool = True) -> Cost:
    return Cost(2 * d_in * d_out * tokens, d_in * d_out + (d_out if bias else 0), d_out * tokens)


def matmul(batch: int, m: int, k: int, n: int) -> Cost:
    """`batch` products of (m, k) @ (k, n)."""
    return Cost(2 * batch * m * k * n, 0, batch * m * n)


def norm(channels: int) -> Cost:
    """BatchNorm or LayerNorm with affine weight and bias."""
    return Cost(0, 2 * channels, 0)


def params(n: int) -> Cost:
    return Cost(0, n, 0)


def measured_flops(model, example) -> int:
    """FLOPs of one forward pass of `model` on `example`, counted by `torch.utils.flop_counter` (the
    convention every analytic cost above follows); works for any module, timm's included."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    return int(counter.get_total_flops())
