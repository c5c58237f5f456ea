"""Token merging (ToMe, Bolya et al., ICLR 2023) for the attention blocks of every family, without retraining.

Between the attention and the MLP of each transformer layer, `r` tokens are merged into their most
similar partners by bipartite soft matching on the attention keys; merged tokens are size-weighted means,
attention is proportional (each key's logit gets + log(size), so a merged token counts as the tokens it
stands for), and relative-position biases (EfficientFormer MB3D) are averaged over the merged positions.

Written for export: the merge gathers the kept and merged tokens and adds the merged ones to their
partners with a small (r, N_b) one-hot product, instead of the reference implementation's
`scatter_reduce`, which the ONNX exporters and runtimes do not support. Where a block must return its full
feature map (MobileViT, EfficientFormer), each original token's current position is followed through the
merges, and unmerging is one gather.

The entrance merge (`keep`) is for short runs of layers that must unmerge (MobileViT's 2-4 layer
transformers): before the first layer, tokens merge by the similarity of their own features until a fraction
`keep` is left, so every layer, the first attention included, runs on fewer tokens and the matching runs
once per run instead of once per layer.

EfficientFormerV2 keeps a 4-D (B, C, H, W) grid through depthwise convs, talking heads and its stride-2
attention downsampling, so no token can leave the stream. There latvit merges on the key/value side only
(`KVMergingAttention`): inside each attention call, r keys (and their values) merge by the same matching,
every query stays, so the output is the full grid and nothing needs unmerging. The learned position
bias is merged with them (the mean of the merged keys' bias columns) and + log(size) is added where the
softmax runs, after the first talking-head mix, which is linear across heads and would otherwise mix the
size terms of different heads.

TRT-ViT's transformer is one layer on a map whose keys and values come from the map pooled S times
(spatial-reduction attention), so its keys say nothing about single tokens and there is no next layer to
carry merged tokens to. There (`MergingMapTransformer`) the attention runs on every token, then r tokens
merge by the similarity of their features, the MLP runs on the merged tokens, and each token adds its
group's MLP output to its own value: only the MLP is shared.

`TomeReport.skipped` names any attention module that none of these wrappers covers.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn

from latvit.deploy.sparsity import check_no_pruning_masks
from latvit.errors import LatvitError
from latvit.layers.efficientformer import AttentionDownsample, Meta3D, TalkingHeadAttention2d, TokenAttention
from latvit.layers.mobile import MobileViTBlock, MultiHeadAttention
from latvit.layers.trtvit import SRTransformer
from latvit.space.builder import LatvitNet, Stage


# -- matching -----------------------------------------------------------------------------------------------
class Matching(NamedTuple):
    """One bipartite matching over N tokens: set a = even positions (Na of them), set b = odd (Nb)."""

    order: torch.Tensor  # (B, Na) a-positions, weakest edge first: the first Na - r stay, the last r merge away
    partner: torch.Tensor  # (B, Na) each a-token's most similar b-position
    r: int


def match_tokens(metric: torch.Tensor, r: int, protect_first: bool = False) -> Matching:
    """Bipartite soft matching on metric (B, N, D): each a-token's most similar b-token (cosine) is its
    candidate edge, and the r strongest edges merge their a-token into the b-token."""
    metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    a, b = metric[:, ::2], metric[:, 1::2]  # (B, Na, D), (B, Nb, D)
    best, partner = (a @ b.transpose(1, 2)).max(dim=-1)  # (B, Na)
    if protect_first:  # -inf sorts first below, so a class token is never merged and stays in front
        best = best.masked_fill(torch.arange(best.shape[1], device=best.device) == 0, -torch.inf)
    # a full topk, not sort/argsort: ExecuTorch's portable runtime has no sort kernel
    order = best.topk(best.shape[1], dim=-1, largest=False).indices
    return Matching(order, partner, r)


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Batched row gather: x (B, N, C), index (B, K) -> (B, K, C). One flat `Gather` in the exported graph,
    not `gather` with an index broadcast to (B, K, C). The row offsets come from `arange`'s step, not a
    multiplication: int8 quantizers (XNNPACK's) turn a scalar operand of mul into a float constant, which
    would make the index float."""
    B, N, C = x.shape
    flat = (index + torch.arange(0, B * N, N, device=x.device).view(B, 1)).reshape(-1)
    return x.reshape(B * N, C)[flat].view(B, -1, C)


def merge_tokens(m: Matching, x: torch.Tensor) -> torch.Tensor:
    """Sum merged tokens: x (B, N, C) -> (B, N - r, C), the kept a-tokens followed by every b-token plus the
    a-tokens merged into it. A gather and an (r, Nb) one-hot product, not the reference's scatter_reduce,
    which the ONNX exporters and runtimes do not support, nor an (N - r, N) merge matrix, whose product
    costs N^2 C per layer."""
    b = x[:, 1::2]  # (B, Nb, C)
    n_kept = m.order.shape[1] - m.r
    kept, merged = take_tokens(x[:, ::2], m.order).split([n_kept, m.r], dim=1)  # set a in `order`: (B, Na-r | r, C)
    into = m.partner.gather(1, m.order[:, n_kept:])  # (B, r): the b-position each merged token joins
    one_hot = (into.unsqueeze(-1) == torch.arange(b.shape[1], device=x.device)).to(x.dtype)  # (B, r, Nb)
    return torch.cat([kept, b + one_hot.transpose(1, 2) @ merged], dim=1)


def merge_weighted(m: Matching, x: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted mean of merged tokens and their new sizes: x (B, N, C), size (B, N) ->
    (B, N - r, C), (B, N - r)."""
    # the sizes ride along as one more channel, so the tokens and their sizes merge in one pass
    size = size.unsqueeze(-1)  # (B, N, 1)
    summed, size = merge_tokens(m, torch.cat([x * size, size], dim=-1)).split([x.shape[-1], 1], dim=-1)
    return summed / size, size.squeeze(-1)


def follow_merge(m: Matching, position: torch.Tensor) -> torch.Tensor:
    """Where tokens go: position (B, K) indexes the current tokens -> their index after `merge_tokens`."""
    B, Na = m.order.shape
    n_kept = Na - m.r
    rank = m.order.topk(Na, dim=-1, largest=False).indices  # (B, Na): the inverse permutation
    # n_kept + i, looked up rather than added: int8 quantizers turn a scalar operand of add into a float
    # constant (see take_tokens); i < Na for every partner and every half position
    slot = torch.arange(n_kept, n_kept + Na, device=position.device).expand(B, Na)
    dest_a = torch.where(rank < n_kept, rank, slot.gather(1, m.partner))  # kept: its rank; merged: partner's slot
    half = torch.div(position, 2, rounding_mode="floor")
    return torch.where(position % 2 == 0, dest_a.gather(1, half), slot.gather(1, half))


# -- attention with merged tokens ----------------------------------------------------------------------------
def _attention_parts(attn: nn.Module, x: torch.Tensor):
    """(q, k, v) as (B, heads, N, d) for the attention modules latvit knows, plus scale, bias, output fn."""
    B, N, C = x.shape
    if isinstance(attn, TokenAttention):
        qkv = attn.qkv(x).reshape(B, N, attn.heads, -1).permute(0, 2, 1, 3)  # (B, heads, N, 2kd + vd)
        q, k, v = qkv.split([attn.key_dim, attn.key_dim, attn.val_dim], dim=3)
        return q, k, v, attn.scale, attn.attention_bias(), lambda o: attn.proj(o)
    if isinstance(attn, MultiHeadAttention):
        q, k, v = attn.qkv(x).reshape(B, N, 3, attn.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, N, hd)
        return q, k, v, attn.scale, None, lambda o: attn.proj(o)
    if hasattr(attn, "qkv") and hasattr(attn, "num_heads"):  # timm's vision_transformer.Attention
        q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return q, k, v, attn.scale, None, lambda o: attn.proj(attn.norm(o))
    raise LatvitError(f"token merging does not know the attention module {type(attn).__name__}")


def _layer_parts(layer: nn.Module):
    """(norm1, attention, ls1, norm2, mlp, ls2) of a pre-norm transformer layer (drop path is eval-off)."""
    attn = getattr(layer, "attn", None) or layer.token_mixer
    identity = nn.Identity()
    return (layer.norm1, attn, getattr(layer, "ls1", identity), layer.norm2, layer.mlp, getattr(layer, "ls2", identity))


class MergingTransformer(nn.Module):
    """A run of pre-norm transformer layers with `r[i]` tokens merged after layer i's attention, and
    optionally merged at the entrance until a fraction `keep` of the tokens is left.

    (B, N, C) -> (B, N, C) when `unmerge` (every original token gets its group's value), else the merged
    tokens (B, N', C). Merging only happens in eval mode semantics (no drop path).

    The entrance merge is for short runs that must unmerge (MobileViT: 2-4 layers per block): merging
    after each attention leaves the first attention on every token and at most halves the tokens per
    layer, so the run never gets cheap. There, before the first layer, tokens merge by the cosine
    similarity of their own features in bipartite rounds of at most half the tokens each, and every layer
    then runs on round(N * keep) tokens, with proportional attention.
    """

    def __init__(
        self, layers: list[nn.Module], r: list[int], unmerge: bool, protect_first: bool = False, keep: float = 1.0
    ):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.r, self.unmerge, self.protect_first, self.keep = list(r), unmerge, protect_first, keep
        # where each original token now is: needed to unmerge and to average a learned attention bias
        self.track_positions = unmerge or any(isinstance(_layer_parts(layer)[1], TokenAttention) for layer in layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        size = x.new_ones(B, N)  # (B, N_cur): original tokens per current token
        position = torch.arange(N, device=x.device).expand(B, N) if self.track_positions else None  # (B, N_0)
        target = max(1 + int(self.protect_first), round(N * self.keep))
        while x.shape[1] > target:  # the entrance merge, in rounds of at most half the tokens
            m = match_tokens(
                x, min(x.shape[1] - target, (x.shape[1] - int(self.protect_first)) // 2), self.protect_first
            )
            x, size = merge_weighted(m, x, size)
            if position is not None:
                position = follow_merge(m, position)
        for layer, r in zip(self.layers, self.r):
            norm1, attn, ls1, norm2, mlp, ls2 = _layer_parts(layer)
            q, k, v, scale, bias, project = _attention_parts(attn, norm1(x))
            logits = (q @ k.transpose(-2, -1)) * scale + size.log()[:, None, None, :]  # proportional attention
            if bias is not None:  # this layer's bias, averaged over the merged (query, key) position pairs
                members = position.unsqueeze(1) == torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
                members = members.to(x.dtype)  # (B, N_cur, N_0): the original tokens each current token holds
                pair = torch.einsum("bin,hnm,bjm->bhij", members, bias, members)
                logits = logits + pair / (size[:, None, :, None] * size[:, None, None, :])
            out = logits.softmax(dim=-1) @ v  # (B, heads, N_cur, dv)
            x = x + ls1(project(out.transpose(1, 2).reshape(B, x.shape[1], -1)))
            r = min(r, (x.shape[1] - int(self.protect_first)) // 2)
            if r > 0:
                m = match_tokens(k.mean(dim=1), r, self.protect_first)  # keys, averaged over heads, as metric
                x, size = merge_weighted(m, x, size)
                if position is not None:
                    position = follow_merge(m, position)
            x = x + ls2(mlp(norm2(x)))
        if self.unmerge:  # every original token takes its group's value
            x = take_tokens(x, position)
        return x


# -- key/value-side merging on the 4-D grid (EfficientFormerV2) -----------------------------------------------
def merge_keys_values(k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, r: int):
    """Merge r of the N keys and values of one attention call; every token starts with size 1.

    k (B, heads, kd, N), v (B, heads, N, vd), bias (heads, Nq, N) -> k (B, heads, kd, N - r),
    v (B, heads, N - r, vd), bias (B, heads, Nq, N - r), size (B, 1, 1, N - r). Merged keys, values and
    bias columns are means over the tokens they hold, so q @ k and the bias merge alike.
    """
    B, heads, kd, N = k.shape
    m = match_tokens(k.mean(dim=1).transpose(1, 2), r)  # keys averaged over heads as metric
    # keys, values, bias columns and a count merge together as the channels of N tokens
    parts = [
        k.flatten(1, 2).transpose(1, 2),
        v.transpose(1, 2).flatten(2),  # (B, N, heads*kd), (B, N, heads*vd)
        bias.flatten(0, 1).transpose(0, 1).expand(B, -1, -1),
        k.new_ones(B, N, 1),
    ]  # (B, N, heads*Nq), (B, N, 1)
    *sums, size = merge_tokens(m, torch.cat(parts, dim=-1)).split([p.shape[-1] for p in parts], dim=-1)
    k, v, bias = (s / size for s in sums)  # means over each group, (B, N - r, ...)
    k = k.transpose(1, 2).reshape(B, heads, kd, N - r)
    v = v.reshape(B, N - r, heads, -1).transpose(1, 2)  # (B, heads, N - r, vd)
    bias = bias.transpose(1, 2).reshape(B, heads, -1, N - r)  # (B, heads, Nq, N - r)
    return k, v, bias, size.view(B, 1, 1, N - r)


class KVMergingAttention(nn.Module):
    """EfficientFormerV2 attention (talking-head or downsampling) with r keys/values merged per call.

    Wraps the original module (its weights are shared, not copied): (B, C, H, W) -> the same output shape
    as the wrapped attention. With r = 0 it calls the original forward, so the function is exactly the
    original; r is capped at half the keys.
    """

    def __init__(self, attn: nn.Module, r: int):
        super().__init__()
        self.attn, self.r = attn, r

    @property
    def proj(self) -> nn.Module:  # the block's deploy rule folds its LayerScale into the attention's projection
        return self.attn.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn
        n = a.resolution[0] * a.resolution[1]  # keys seen by the attention (after any stride conv)
        r = min(self.r, n // 2)
        if r == 0:
            return a(x)
        B = x.shape[0]
        if isinstance(a, AttentionDownsample):
            (rh, rw), (qh, qw), talking = a.resolution, a.resolution2, False
            q = a.q(x)  # queries at half resolution (B, heads * kd, H/2, W/2)
        else:
            if a.stride_conv is not None:
                x = a.stride_conv(x)  # (B, C, H/s, W/s)
            (rh, rw), talking = a.resolution, True
            (qh, qw), q = (rh, rw), a.q(x)
        nq = qh * qw
        q = q.reshape(B, a.heads, -1, nq).transpose(2, 3)  # (B, heads, Nq, kd)
        k = a.k(x).reshape(B, a.heads, -1, n)  # (B, heads, kd, N)
        v = a.v(x)  # (B, heads * vd, rh, rw)
        v_local = a.v_local(v)  # the local branch sees the full grid, unmerged
        v = v.reshape(B, a.heads, -1, n).transpose(2, 3)  # (B, heads, N, vd)
        k, v, bias, size = merge_keys_values(k, v, a.attention_bias(), r)
        attn = (q @ k) * a.scale + bias  # (B, heads, Nq, N - r)
        if talking:
            # The first head mix is linear and keeps column means, so + log(size) goes after it. The second
            # mixes probabilities, whose columns now stand for `size` keys each: its bias counts per key.
            attn = (a.talking_head1(attn) + size.log()).softmax(dim=-1)
            th2 = a.talking_head2
            attn = th2(attn) if th2.bias is None else th2(attn) + th2.bias.view(1, -1, 1, 1) * (size - 1)
        else:
            attn = (attn + size.log()).softmax(dim=-1)
        x = (attn @ v).transpose(2, 3).reshape(B, -1, qh, qw) + v_local  # (B, heads * vd, qh, qw)
        if talking and a.upsample is not None:
            x = a.upsample(x)
        return a.proj(a.act(x))


# -- one transformer layer on a map (TRT-ViT) ------------------------------------------------------------------
class MergingMapTransformer(nn.Module):
    """TRT-ViT's `SRTransformer` with r tokens merged for its MLP: (B, C_in, H, W) -> (B, C, H', W').

    Wraps the original layer (weights shared). x + Attn(LN(x)) on all tokens, then the r most similar
    token pairs (cosine of the features) merge, the MLP runs on N - r tokens, and every token adds its
    group's MLP output. r = 0 calls the original forward; r is capped at half the tokens.
    """

    def __init__(self, layer: nn.Module, r: int):
        super().__init__()
        self.layer, self.r = layer, r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if self.r == 0:
            return layer(x)
        x = layer.embed(x)
        B, C, H, W = x.shape
        r = min(self.r, H * W // 2)
        t = x.flatten(2).transpose(1, 2)  # (B, N, C)
        t = t + layer.attn(layer.norm1(t), H, W)
        if r > 0:
            m = match_tokens(t, r)
            merged, _ = merge_weighted(m, t, t.new_ones(B, H * W))  # (B, N - r, C)
            position = follow_merge(m, torch.arange(H * W, device=x.device).expand(B, -1))  # each token's group
            t = t + take_tokens(layer.mlp(layer.norm2(merged)), position)
        else:  # a one-token map: nothing to merge
            t = t + layer.mlp(layer.norm2(t))
        return t.transpose(1, 2).reshape(B, C, H, W)


# -- applying it to a model ------------------------------------------------------------------------------------
def parse_schedule(text: str | int) -> int | list[int]:
    """A merging schedule as the command line writes it: '13' -> 13 (every layer); 'RxL', e.g. '26x6' ->
    [26] * 6 (R tokens in each of the first L layers, none after: a decreasing schedule)."""
    r, x, layers = str(text).strip().partition("x")
    if not (r.isdigit() and (layers.isdigit() or not x)):
        raise LatvitError(
            f"token merging schedule '{text}': expected R (tokens merged per layer, >= 0) or RxL "
            f"(R in each of the first L layers), e.g. 13 or 26x6"
        )
    return [int(r)] * int(layers) if x else int(r)


def parse_tome(text: str | int) -> dict:
    """A token merging setting as the command line writes it -> `tome` keyword arguments: a schedule
    ('13', '26x6', see `parse_schedule`), 'keepF' (the entrance merge alone, e.g. keep0.25), or both
    ('8+keep0.5'). `tome(model, **parse_tome(text))`."""
    found = re.fullmatch(r"(?:(\d+(?:x\d+)?)(?:\+keep(\d*\.?\d+))?|keep(\d*\.?\d+))", str(text).strip())
    keep = float(found[2] or found[3] or 1.0) if found else 0.0
    if not found or not 0.0 < keep <= 1.0:
        raise LatvitError(
            f"token merging setting '{text}': expected R, RxL, keepF or R+keepF with 0 < F <= 1 "
            f"(the fraction of tokens left by the entrance merge), e.g. 13, 26x6, keep0.25, 8+keep0.5"
        )
    return {"r": parse_schedule(found[1]) if found[1] else 0, "keep": keep}


def merges_tokens(r: int | list[int], keep: float = 1.0) -> bool:
    """Whether `tome(model, r, keep=keep)` changes the model (r = 0 everywhere and keep = 1 do not)."""
    return bool(any(r) if isinstance(r, (list, tuple)) else r > 0) or keep < 1.0


@dataclass
class TomeReport:
    merged_layers: int = 0
    skipped: list[str] = field(default_factory=list)


def tome(model: nn.Module, r: int | list[int] = 8, report: TomeReport | None = None, keep: float = 1.0) -> nn.Module:
    """A copy of `model` (eval mode) with token merging in its transformer layers.

    r: tokens merged per layer (an int for every layer, or a list used in order across all wrapped
       layers; each layer merges at most half its tokens). r = 0 and keep = 1 give the original function.
    keep: the entrance merge (`MergingTransformer`): each run of transformer layers first merges its
       tokens until this fraction is left. For the token-sequence transformers only (MobileViT,
       EfficientFormer MB3D, timm ViTs), not EfficientFormerV2's or TRT-ViT's map attention.
    Works on latvit MobileViT and EfficientFormer (MB3D) models, EfficientFormerV2 (key/value side, one r
    per attention call), TRT-ViT (for the MLP of each transformer layer) and timm ViTs (e.g. DeiT); see the
    module docstring for how, and `report.skipped` for attention it does not cover.
    """
    schedule = iter(r) if isinstance(r, (list, tuple)) else None
    if (isinstance(r, int) and r < 0) or (schedule is not None and any(v < 0 for v in r)):
        raise LatvitError(f"r must be >= 0 tokens per layer, got {r}")
    if not 0.0 < keep <= 1.0:
        raise LatvitError(f"keep is the fraction of tokens the entrance merge leaves: 0 < keep <= 1, got {keep}")

    def take(n: int) -> list[int]:
        return [next(schedule, 0) for _ in range(n)] if schedule is not None else [r] * n

    check_no_pruning_masks(model, "token merging")
    report = report if report is not None else TomeReport()
    model = copy.deepcopy(model).eval()
    if isinstance(model, LatvitNet):
        for module in model.modules():
            if isinstance(module, MobileViTBlock):
                layers = list(module.transformer)
                module.transformer = MergingTransformer(layers, take(len(layers)), unmerge=True, keep=keep)
                report.merged_layers += len(layers)
            elif isinstance(module, Stage):
                run = [i for i, b in enumerate(module.blocks) if isinstance(b, Meta3D)]
                if run and run == list(range(run[0], len(module.blocks))):
                    blocks = list(module.blocks)
                    merged = MergingTransformer(blocks[run[0] :], take(len(run)), unmerge=True, keep=keep)
                    module.blocks = nn.ModuleList(blocks[: run[0]] + [merged])
                    report.merged_layers += len(run)
            elif not isinstance(module, (KVMergingAttention, MergingMapTransformer)):
                for child_name, child in list(module.named_children()):
                    if isinstance(child, (TalkingHeadAttention2d, AttentionDownsample)):  # EfficientFormerV2
                        setattr(module, child_name, KVMergingAttention(child, take(1)[0]))
                        report.merged_layers += 1
                    elif isinstance(child, SRTransformer):  # TRT-ViT: a block, or a MixBlock's branch
                        setattr(module, child_name, MergingMapTransformer(child, take(1)[0]))
                        report.merged_layers += 1
        if keep < 1.0 and not any(isinstance(m, MergingTransformer) for m in model.modules()):
            raise LatvitError(
                f"keep={keep}: {model.spec.name} has no token-sequence transformer to merge at the "
                f"entrance (EfficientFormerV2 and TRT-ViT attend over maps); use r alone"
            )
        wrappers = (MergingTransformer, KVMergingAttention, MergingMapTransformer)
        handled = {id(m) for mt in model.modules() if isinstance(mt, wrappers) for m in mt.modules()}
        report.skipped += [
            name for name, m in model.named_modules() if "Attention" in type(m).__name__ and id(m) not in handled
        ]
        if merges_tokens(r, keep) and report.merged_layers == 0:  # asked for, nothing to merge: say so
            raise LatvitError(
                f"token merging does not apply to {model.spec.name}: it has none of the attention "
                f"layers it supports (MobileViT, EfficientFormer MB3D, EfficientFormerV2, TRT-ViT)"
            )
        return model
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and all(hasattr(b, "attn") and hasattr(b, "mlp") for b in blocks):
        if getattr(model, "num_prefix_tokens", 0) > 1:  # the matching protects one leading token only
            raise LatvitError(
                f"token merging protects one class token; this model has {model.num_prefix_tokens} "
                f"prefix tokens (distillation or register tokens), which it could merge away"
            )
        cls_pooled = getattr(model, "global_pool", "") == "token" and getattr(model, "num_prefix_tokens", 1) == 1
        model.blocks = MergingTransformer(
            list(blocks),
            take(len(blocks)),
            unmerge=not cls_pooled,
            protect_first=getattr(model, "num_prefix_tokens", 0) > 0,
            keep=keep,
        )
        report.merged_layers += len(blocks)
        return model
    raise LatvitError(
        f"token merging supports latvit models and timm ViTs with a `blocks` sequence, not {type(model).__name__}"
    )
