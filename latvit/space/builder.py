"""One builder for every spec: `build_model(spec) -> LatvitNet`.

`LatvitNet` has timm's model surface (`forward_features`, `forward_head(x, pre_logits=)`,
`reset_classifier`, `feature_info`, `num_classes`, `num_features`, `pretrained_cfg`), so it drops into
timm-based training and evaluation code unchanged.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from latvit.errors import SpecError
from latvit.layers.common import ClassifierHead
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.plan import NetPlan, plan_network
from latvit.space.spec import NetSpec


class Stage(nn.Module):
    """A sequence of blocks; flattens (B, C, H, W) -> (B, N, C) once, before its first token block."""

    def __init__(self, blocks: list[nn.Module], token_start: int | None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.token_start = token_start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            if i == self.token_start:
                x = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, C): the network's only reshape
            x = block(x)
        return x


class LatvitNet(nn.Module):
    """A network built from a `NetSpec`. Input (B, in_chans, S, S); output logits (B, num_classes),
    or with `features_only=True` the list of per-stage feature maps (B, C_i, S / r_i, S / r_i)."""

    def __init__(
        self, spec: NetSpec, *, num_classes: int = 1000, drop_path_rate: float = 0.0, features_only: bool = False
    ):
        super().__init__()
        if num_classes < 0:
            raise SpecError(f"num_classes must be >= 0, got {num_classes}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise SpecError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        plan = plan_network(spec, num_classes=num_classes)
        self.spec = spec
        self.in_chans = spec.in_chans
        self.img_size = spec.img_size
        self.fixed_input_size = plan.fixed_resolution
        self.input_multiple = plan.total_stride
        self.features_only = features_only

        stage_blocks = [p for p in plan.blocks if p.module_path.startswith("stages.")]
        rates = torch.linspace(0, drop_path_rate, max(len(stage_blocks), 1)).tolist()
        drop_path = {p.module_path: r for p, r in zip(stage_blocks, rates)}
        modules = {
            p.module_path: BLOCK_KINDS[p.spec.kind].module.from_spec(
                p.spec, p.c_in, p.h, p.w, drop_path.get(p.module_path, 0.0)
            )
            for p in plan.blocks
        }

        self.stem = nn.Sequential(*[modules[f"stem.{i}"] for i in range(len(spec.stem))])
        self.stages = nn.ModuleList(
            [
                Stage([modules[f"stages.{si}.blocks.{bi}"] for bi in range(len(s.blocks))], plan.token_start(si))
                for si, s in enumerate(spec.stages)
            ]
        )
        self.feature_info = [
            dict(num_chs=c, reduction=r, module=f"stages.{i}")
            for i, ((c, _, _), r) in enumerate(zip(plan.stage_outputs, plan.stage_reductions))
        ]
        self.stage_shapes = plan.stage_outputs
        c_last = plan.stage_outputs[-1][0]
        self.tokens_out = plan.token_start(len(spec.stages) - 1) is not None
        hd = spec.head
        self.head = (
            None
            if features_only
            else ClassifierHead(
                c_last,
                num_classes,
                conv_width=hd.conv_width,
                act=hd.act,
                norm=hd.norm,
                distill=hd.distill,
                dropout=hd.dropout,
                tokens=self.tokens_out,
            )
        )
        self.num_classes = 0 if features_only else num_classes
        self.num_features = self.head.num_features if self.head is not None else c_last
        for m in self.modules():  # heads init themselves; other linears as timm's ViTs do
            if isinstance(m, nn.Linear) and not (self.head is not None and m in (self.head.fc, self.head.fc_dist)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.pretrained_cfg = self.default_cfg = dict(
            input_size=(spec.in_chans, spec.img_size, spec.img_size),
            mean=spec.mean,
            std=spec.std,
            num_classes=self.num_classes,
            interpolation="bicubic",
            crop_pct=0.95,
            fixed_input_size=self.fixed_input_size,
            first_conv="stem.0.conv",
            classifier="head.fc",
        )

    @property
    def plan(self) -> NetPlan:
        return plan_network(self.spec, num_classes=self.num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a SpecError naming the fix when `x` cannot go through this network."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise SpecError(f"{self.spec.name} expects input of shape (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        h, w = int(x.shape[2]), int(x.shape[3])
        m = self.input_multiple
        if h % m or w % m:  # first: no model of this spec takes such a size, so img_size= would not help
            near = max(m, round(max(h, w) / m) * m)
            raise SpecError(
                f"{self.spec.name} needs H and W to be multiples of {m}, got {h}x{w}; resize or crop "
                f"the input to a multiple of {m} (e.g. {near}x{near})"
            )
        if self.fixed_input_size and (h, w) != (self.img_size, self.img_size):
            fix = f"create it with img_size={h} (CLI: --img-size {h})" if h == w else "give it a square input"
            raise SpecError(f"{self.spec.name} was built for {self.img_size}x{self.img_size} input, got {h}x{w}; {fix}")

    # -- timm's model surface ------------------------------------------------------------------------
    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage outputs, all as (B, C, H, W) maps."""
        self.check_input(x)
        x = self.stem(x)
        feats = []
        for stage, (_, h, w) in zip(self.stages, self.stage_shapes):
            x = stage(x)
            if isinstance(x, tuple):  # Mobile-Former's (map, global tokens) pair: the map is the feature
                feats.append(x[0])
            elif x.dim() == 3:  # tokens (B, N, C) -> (B, C, H, W); token stages have a fixed grid
                feats.append(x.transpose(1, 2).reshape(x.shape[0], -1, h, w))
            else:
                feats.append(x)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head.forward_norm(x) if self.head is not None else x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if self.head is None:
            raise SpecError("a features_only model has no classifier to reset")
        self.head.reset(num_classes)
        self.num_classes = num_classes

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def set_distilled_training(self, enable: bool = True) -> None:
        self.head.distilled_training = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """timm's parameter grouping (layer-wise lr decay): the stem, then each stage (coarse) or each block,
        then the head's conv and norm; the classifier is the last group."""
        blocks = (
            r"^stages\.(\d+)"
            if coarse
            else [(r"^stages\.(\d+)\.blocks\.(\d+)", None), (r"^head\.(?:conv|norm)", (99999,))]
        )
        return {"stem": r"^stem", "blocks": blocks}

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if "attention_biases" in n}


def build_model(
    spec: NetSpec,
    *,
    num_classes: int = 1000,
    img_size: int | None = None,
    drop_path_rate: float = 0.0,
    features_only: bool = False,
) -> LatvitNet:
    """Build a randomly initialised network from `spec` (at `img_size` if given)."""
    return LatvitNet(
        spec.with_img_size(img_size),
        num_classes=num_classes,
        drop_path_rate=drop_path_rate,
        features_only=features_only,
    )
