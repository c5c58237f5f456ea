"""Integer-only ViT operators after I-ViT (Li & Gu, ICCV 2023): Shiftmax, ShiftGELU, I-LayerNorm.

Every operator takes an integer tensor `q` (int64 holding int32-range values) and its scale `s` (the real
value is q * s) and returns (integer tensor, scale): no floating-point arithmetic touches the data, only
adds, multiplies, integer divisions and bit shifts, so the same arithmetic runs on integer-only
accelerators. The scales are Python floats fixed at calibration time.

The approximations and their error (measured in tests/test_integer_ops.py against the float operators):
- exp(x) for x <= 0 is 2 ** (x * log2 e) with log2 e ~ 1.0111b = 1.4375 (shift-and-add), split into an
  integer part (a right shift) and a fraction r in (-1, 0] with 2 ** r ~ 1 + r / 2 (exact at r = 0, -1;
  at most 6.1% relative error in between);
- Shiftmax normalises with one integer division per row: probabilities with 8-bit output resolution,
  max abs error <= 0.02 against torch.softmax on attention-like logits;
- ShiftGELU uses GELU(x) ~ x * sigmoid(1.702 x) with 1.702 ~ 1.1011b = 1.6875 and the sigmoid from the
  same shift-exp: max abs error <= 0.05 on [-6, 6] (GELU's own sigmoid approximation is 0.02 of that);
- I-LayerNorm takes the standard deviation with an integer Newton square root (exact floor(sqrt(n)));
  max abs error <= 0.005 on normalised outputs (16-bit inputs, 12 fractional output bits);
- IntegerAttention (int8 q, k, v; Shiftmax probabilities rounded to 8 bits): max abs error <= 0.1 on
  outputs of magnitude ~1.3 for 49 tokens, head dim 32.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def quantize_symmetric(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, float]:
    """Float tensor -> (int64 tensor, scale) with a symmetric `bits`-bit range (the one float step, at
    the boundary of the integer path)."""
    qmax = 2 ** (bits - 1) - 1
    scale = float(x.abs().max().clamp_min(1e-8)) / qmax
    return torch.round(x / scale).clamp(-qmax, qmax).to(torch.int64), scale


def shift_exp(q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
    """exp(q * s) for q <= 0 with shifts only. Returns (q_exp, s): exp(q*s) ~ q_exp * s."""
    q = q + (q >> 1) - (q >> 4)  # x * log2(e), log2(e) ~ 1.0111b
    q_one = -max(1, round(1.0 / s))  # the integer that represents -1 at scale s
    z = torch.div(q, q_one, rounding_mode="floor")  # whole halvings: x log2 e = -(z + r), z >= 0
    r = q - z * q_one  # fraction in (q_one, 0], i.e. r*s in (-1, 0]
    q_exp = (r >> 1) - q_one  # 2 ** r ~ 1 + r / 2, at scale s
    return q_exp >> z.clamp(max=62), s


class Shiftmax(nn.Module):
    """Integer softmax along the last dimension; output probabilities at scale 2 ** -(out_bits - 1)."""

    def __init__(self, out_bits: int = 8, precision_bits: int = 30):
        super().__init__()
        self.out_bits, self.precision_bits = out_bits, precision_bits

    def forward(self, q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
        q = q - q.amax(dim=-1, keepdim=True)  # (..., N), all <= 0
        q_exp, _ = shift_exp(q, s)
        total = q_exp.sum(dim=-1, keepdim=True).clamp_min(1)
        factor = torch.div(torch.full_like(total, 2**self.precision_bits), total, rounding_mode="floor")
        shift = self.precision_bits - self.out_bits + 1
        q_out = (q_exp * factor + (1 << (shift - 1))) >> shift  # round to nearest: floor biases rows low
        return q_out, 2.0 ** -(self.out_bits - 1)


class ShiftGELU(nn.Module):
    """Integer GELU(x) ~ x * sigmoid(1.702 x); output at scale s * 2 ** -(sigmoid_bits - 1)."""

    def __init__(self, sigmoid_bits: int = 8, precision_bits: int = 30):
        super().__init__()
        self.sigmoid_bits, self.precision_bits = sigmoid_bits, precision_bits

    def forward(self, q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
        q_y = q + (q >> 1) + (q >> 3) + (q >> 4)  # 1.702 x ~ 1.1011b x
        q_max = q_y.clamp_min(0)  # sigmoid(y) = e^(y - m) / (e^(y - m) + e^-m), m = max(y, 0)
        e_y, _ = shift_exp(q_y - q_max, s)
        e_0, _ = shift_exp(-q_max, s)
        total = (e_y + e_0).clamp_min(1)
        factor = torch.div(torch.full_like(total, 2**self.precision_bits), total, rounding_mode="floor")
        q_sigmoid = (e_y * factor) >> (self.precision_bits - self.sigmoid_bits + 1)
        return q * q_sigmoid, s * 2.0 ** -(self.sigmoid_bits - 1)


def integer_sqrt(n: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """floor(sqrt(n)) for int64 n >= 0 by Newton's iteration x <- (x + n // x) / 2 from above."""
    bits = torch.floor(torch.log2(n.clamp_min(1).double())).to(torch.int64) + 1  # bit length (setup only)
    x = torch.ones_like(n) << ((bits + 1) >> 1)  # 2 ** ceil(bits / 2) >= sqrt(n)
    for _ in range(iters):
        y = (x + torch.div(n, x.clamp_min(1), rounding_mode="floor")) >> 1
        x = torch.minimum(x, y)  # monotone from above: stops at floor(sqrt(n))
    return x


class IntLayerNorm(nn.Module):
    """Integer LayerNorm over the last dimension with integer affine weights.

    weight/bias are float parameters quantized to `out_bits` fractional bits when the module is built
    (`from_float`); the output has scale 2 ** -out_bits.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, out_bits: int = 12):
        super().__init__()
        self.out_bits = out_bits
        self.register_buffer("q_weight", torch.round(weight.detach() * 2**out_bits).to(torch.int64))
        self.register_buffer("q_bias", torch.round(bias.detach() * 2 ** (2 * out_bits)).to(torch.int64))

    @classmethod
    def from_float(cls, norm: nn.LayerNorm, out_bits: int = 12) -> IntLayerNorm:
        return cls(norm.weight, norm.bias, out_bits)

    def forward(self, q: torch.Tensor, s: float) -> tuple[torch.Tensor, float]:
        c = q.shape[-1]
        centred = q * c - q.sum(dim=-1, keepdim=True)  # c * (x - mean), exact in integers
        var_c2 = (centred * centred).sum(dim=-1, keepdim=True) // c  # c^2 * var
        std_c = integer_sqrt(var_c2).clamp_min(1)  # c * std
        q_norm = torch.div(centred << self.out_bits, std_c, rounding_mode="floor")  # (x - mean) / std
        return (q_norm * self.q_weight + self.q_bias) >> self.out_bits, 2.0**-self.out_bits


class IntegerAttention(nn.Module):
    """Integer-only attention core softmax(q k^T / sqrt(d)) v for int8 q, k, v.

    Inputs are float (B, heads, N, d) tensors quantized at the boundary; the products, the softmax
    (Shiftmax) and the weighted sum run in integers; the result is dequantized once at the end.
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.scale = head_dim**-0.5
        self.softmax = Shiftmax()

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qq, sq = quantize_symmetric(q)
        qk, sk = quantize_symmetric(k)
        qv, sv = quantize_symmetric(v)
        logits = qq @ qk.transpose(-2, -1)  # (B, heads, N, N) int64, scale sq * sk
        probs, sp = self.softmax(logits, sq * sk * self.scale)
        out = probs @ qv  # (B, heads, N, d), scale sp * sv
        return out.to(torch.float32) * (sp * sv)
