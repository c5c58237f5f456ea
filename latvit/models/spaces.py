"""Search spaces over latvit specs: what latency tables enumerate and what searches explore.

A space is a family's spec generator plus, per stage, the widths and depths it may take and the FFN
expansion ratios a block may take. `sample(rng)` draws a random valid spec; `largest()`/`smallest()` are
the supernet and its smallest subnet; `enumerate_blocks(img_size)` lists every distinct block
configuration (kind, input/output width, resolution and the fields the kind reads) that any spec of the
space contains, which is what a latency lookup table must measure.

Enumeration is exact and cheap: a block's configuration depends only on its stage's width and expansion
and on the previous stage's width, so the union of the blocks of a small covering set of specs (one per
(previous width, width, expansion) of each stage, at maximum depth) is the set of all blocks. Only
`plan_network` runs; no module is built.

The spaces (their bounds are latvit's choice, sized so a table builds in minutes on a 2-core CPU):
- `efficientformer`: EfficientFormer-L1 as the supernet (the seed's latency-driven slimming shrinks it):
  widths multiples of 16 around L1's, MB4D blocks in every stage, 1 to 3 MB3D at the end of stage 4.
- `efficientformerv2`: a slimmable supernet around S0/S1: widths multiples of 16, per-FFN expansion ratios
  {2, 3, 4}, attention in the last two blocks of stages 3 and 4.
- `mobilevit`: MobileViT-XXS/XS-sized: stage widths, transformer widths (multiples of heads) and depths.
- `trtvit`: TRT-ViT-A/B-sized pyramids (widths multiples of 64 around the reconstructed ResNet-50 widths),
  2 to 4 MixBlockC at the end of the last stage.
- `zoo`: exactly the registered models (nothing to sample).
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

from latvit.errors import LatvitError
from latvit.models import MODELS
from latvit.models.efficientformer import efficientformer_spec
from latvit.models.efficientformer_v2 import efficientformer_v2_spec
from latvit.models.mobilevit import mobilevit_spec
from latvit.models.trtvit import pyramid_spec
from latvit.space.plan import PlannedBlock, plan_network
from latvit.space.spec import NetSpec


@dataclass(frozen=True)
class Choice:
    """A point of a space: per-stage widths and depths, per-block expansion ratios (stage -> tuple)."""

    widths: tuple[int, ...]
    depths: tuple[int, ...]
    expansions: tuple[tuple[float, ...], ...]
    extra: int = 0  # family-specific integer (EfficientFormer: number of MB3D blocks)


@dataclass(frozen=True)
class SearchSpace:
    name: str
    widths: tuple[tuple[int, ...], ...]  # per stage, ascending
    depths: tuple[tuple[int, ...], ...]  # per stage, ascending
    expansions: tuple[float, ...]  # per block, ascending
    extras: tuple[int, ...]  # ascending
    make_spec: Callable[[Choice, int], NetSpec]  # (choice, img_size) -> spec
    img_size: int = 224

    # -- points ------------------------------------------------------------------------------------
    def spec(self, choice: Choice, img_size: int | None = None) -> NetSpec:
        return self.make_spec(choice, img_size or self.img_size)

    def largest(self) -> Choice:
        return Choice(
            tuple(w[-1] for w in self.widths),
            tuple(d[-1] for d in self.depths),
            tuple((self.expansions[-1],) * d[-1] for d in self.depths),
            self.extras[-1],
        )

    def smallest(self) -> Choice:
        return Choice(
            tuple(w[0] for w in self.widths),
            tuple(d[0] for d in self.depths),
            tuple((self.expansions[0],) * d[0] for d in self.depths),
            self.extras[0],
        )

    def sample(self, rng: random.Random) -> Choice:
        depths = tuple(rng.choice(d) for d in self.depths)
        return Choice(
            tuple(rng.choice(w) for w in self.widths),
            depths,
            tuple(tuple(rng.choice(self.expansions) for _ in range(d)) for d in depths),
            rng.choice(self.extras),
        )

    def sample_specs(self, n: int, seed: int = 0, img_size: int | None = None) -> list[NetSpec]:
        """`n` distinct random valid specs (named `<space>_rand<i>`)."""
        rng, seen, specs = random.Random(seed), set(), []
        for _ in range(100 * n):
            choice = self.sample(rng)
            if choice in seen:
                continue
            seen.add(choice)
            spec = dataclasses.replace(self.spec(choice, img_size), name=f"{self.name}_rand{len(specs)}")
            plan_network(spec)  # every sampled spec must be valid
            specs.append(spec)
            if len(specs) == n:
                return specs
        raise LatvitError(f"space {self.name} has fewer than {n} distinct points")

    # -- blocks ------------------------------------------------------------------------------------
    def covering_choices(self) -> list[Choice]:
        """Choices whose blocks together include every block configuration of the space: each stage in
        turn takes every (previous width, width, depth, expansion), the rest stay at their largest."""
        big = self.largest()
        out = []
        for si in range(len(self.widths)):
            prev_widths = self.widths[si - 1] if si else (None,)
            for prev, width, depth, exp in itertools.product(
                prev_widths, self.widths[si], self.depths[si], self.expansions
            ):
                widths, depths, expansions = list(big.widths), list(big.depths), list(big.expansions)
                widths[si], depths[si], expansions[si] = width, depth, (exp,) * depth
                if prev is not None:
                    widths[si - 1] = prev
                for extra in self.extras:
                    out.append(Choice(tuple(widths), tuple(depths), tuple(expansions), extra))
        return out

    def enumerate_blocks(self, img_size: int | None = None) -> list[PlannedBlock]:
        """Every distinct block configuration of the space at `img_size`, in a stable order."""
        found: dict[tuple, PlannedBlock] = {}
        for choice in self.covering_choices():
            for block in plan_network(self.spec(choice, img_size)).blocks:
                found.setdefault(block.key, block)
        return list(found.values())


# -- the spaces --------------------------------------------------------------------------------------
def _efficientformer(choice: Choice, img_size: int) -> NetSpec:
    spec = efficientformer_spec("efficientformer_space", choice.widths, choice.depths, choice.extra, img_size)
    return _set_expansions(spec, choice.expansions, ("meta4d", "meta3d"))


def _efficientformer_v2(choice: Choice, img_size: int) -> NetSpec:
    return efficientformer_v2_spec(
        "efficientformerv2_space", choice.widths, choice.depths, 2, choice.expansions, img_size
    )


def _mobilevit(choice: Choice, img_size: int) -> NetSpec:
    # widths: 5 stage widths; the transformer width of stages 3-5 is 4/3 of the stage width (as in XXS/XS),
    # rounded to a multiple of the 4 heads; depths of stages 3-5 are transformer depths.
    # MV2 expansion per stage: the first ratio drawn for that stage.
    dims = tuple(4 * round(w * 4 / 3 / 4) for w in choice.widths[2:])
    spec = mobilevit_spec(
        "mobilevit_space", choice.widths, dims, choice.depths[2:], 4.0, 4 * choice.widths[-1], img_size
    )
    return _set_expansions(spec, [(e[0],) for e in choice.expansions], ("mv2",))


def _trtvit(choice: Choice, img_size: int) -> NetSpec:
    # extra = number of MixBlockC at the end of the last stage (TRT-ViT-A/B: 4); expansion stays the paper's
    return pyramid_spec(
        "trtvit_space", choice.depths, (0, 0, 0, choice.extra), "mixblock_c", choice.widths, img_size=img_size
    )


def _set_expansions(spec: NetSpec, expansions, kinds) -> NetSpec:
    """Give the residual blocks of each stage the per-block expansion ratios of the choice."""
    stages = []
    for stage, ratios in zip(spec.stages, expansions):
        blocks, j = [], 0
        for b in stage.blocks:
            if b.kind in kinds:
                b = dataclasses.replace(b, expansion=float(ratios[min(j, len(ratios) - 1)]))
                j += 1
            blocks.append(b)
        stages.append(dataclasses.replace(stage, blocks=tuple(blocks)))
    return dataclasses.replace(spec, stages=tuple(stages))


SPACES: dict[str, SearchSpace] = {
    "efficientformer": SearchSpace(
        "efficientformer",
        widths=((32, 48), (64, 80, 96), (160, 176, 192, 208, 224), (320, 352, 384, 416, 448)),
        depths=((1, 2, 3), (1, 2), (2, 3, 4, 5, 6), (2, 3, 4)),
        expansions=(4.0,),
        extras=(1, 2),
        make_spec=_efficientformer,
    ),
    "efficientformerv2": SearchSpace(
        "efficientformerv2",
        widths=((16, 32), (32, 48), (64, 96, 128), (128, 176, 224)),
        depths=((1, 2), (1, 2, 3), (2, 4, 6), (2, 3, 4)),
        expansions=(2.0, 3.0, 4.0),
        extras=(0,),
        make_spec=_efficientformer_v2,
    ),
    "mobilevit": SearchSpace(
        "mobilevit",
        widths=((16,), (24, 32), (48, 64), (64, 80), (80, 96)),
        depths=((1,), (1,), (1, 2), (2, 3, 4), (2, 3)),
        expansions=(2.0, 4.0),
        extras=(0,),
        make_spec=_mobilevit,
        img_size=256,
    ),
    "trtvit": SearchSpace(
        "trtvit",
        widths=((192, 256), (384, 512), (768, 1024), (1536, 2048)),
        depths=((2, 3), (3, 4), (4, 5, 6), (3, 4)),
        expansions=(3.0,),
        extras=(2, 3, 4),
        make_spec=_trtvit,
    ),
}


ZOO = "zoo"  # a space of exactly the registered models: covered (`covering_specs`), never sampled


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise LatvitError(f"unknown search space '{name}'; choose one of {', '.join(sorted(SPACES))} or '{ZOO}'")
    return SPACES[name]


def covering_specs(name: str, img_size: int | None = None) -> list[NetSpec]:
    """Specs whose blocks together are every block of space `name`: a search space's covering choices,
    or for `zoo` every registered model (each at its own size unless `img_size`)."""
    if name == ZOO:
        return [spec.with_img_size(img_size) for spec in MODELS.values()]
    space = get_space(name)
    return [space.spec(choice, img_size) for choice in space.covering_choices()]
