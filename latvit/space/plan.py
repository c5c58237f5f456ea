"""Walk a spec at an input size: validate it, propagate shapes, and cost every block analytically.

`plan_network(spec)` is the one place that knows how shapes flow through a spec. The builder builds from
it, `spec_cost` sums it, latency tables key on its `PlannedBlock`s, and every spec error is raised here
with the path of the offending block (`stages[3][2].heads: ...`).
"""

from __future__ import annotations

from dataclasses import dataclass

from latvit.errors import SpecError
from latvit.layers import cost as C
from latvit.layers.common import ACTIVATIONS, ClassifierHead
from latvit.space.blocks import BLOCK_KINDS, block_stride, check_block
from latvit.space.spec import BlockSpec, NetSpec


@dataclass(frozen=True)
class PlannedBlock:
    where: str  # "stem[0]" or "stages[2][3]"
    module_path: str  # "stem.0" or "stages.2.blocks.3"
    spec: BlockSpec
    c_in: int
    h: int
    w: int
    c_out: int
    h_out: int
    w_out: int
    cost: C.Cost

    @property
    def key(self) -> tuple:
        """Latency-table key: everything that determines this block's latency."""
        kind = BLOCK_KINDS[self.spec.kind]
        return (self.spec.kind, self.c_in, self.spec.width, self.h, self.w) + tuple(
            getattr(self.spec, f) for f in kind.fields
        )


@dataclass(frozen=True)
class NetPlan:
    spec: NetSpec
    img_size: int
    blocks: tuple[PlannedBlock, ...]
    stage_outputs: tuple[tuple[int, int, int], ...]  # (C, H, W) after each stage
    stage_reductions: tuple[int, ...]
    head_cost: C.Cost
    num_classes: int

    @property
    def cost(self) -> C.Cost:
        total = self.head_cost
        for b in self.blocks:
            total += b.cost
        return total

    @property
    def fixed_resolution(self) -> bool:
        return any(BLOCK_KINDS[b.spec.kind].fixed_resolution for b in self.blocks)

    @property
    def total_stride(self) -> int:
        """What H and W must be multiples of: the product of the blocks' strides. Not the last stage's
        reduction, which is the whole input side where a stage pools to 1x1 (Mobile-Former's mf_merge)."""
        stride = 1
        for b in self.blocks:
            stride *= block_stride(b.spec)
        return stride

    def token_start(self, stage: int) -> int | None:
        """Index of the first token-layout block of a stage (where the builder flattens), or None."""
        for b in self.blocks:
            if b.module_path.startswith(f"stages.{stage}.") and BLOCK_KINDS[b.spec.kind].tokens:
                return int(b.module_path.rsplit(".", 1)[1])
        return None


def _size_error(spec: NetSpec, img_size: int, where: str, h: int, w: int, stride: int, multiple: int) -> SpecError:
    return SpecError(
        f"input size {img_size} is not valid for {spec.name}: the {h}x{w} feature map at {where} cannot be "
        f"downsampled by {stride} exactly; use a multiple of {multiple} (e.g. {max(multiple, round(img_size / multiple) * multiple)})"
    )


def _check_stream(spec: NetSpec, where: str, b: BlockSpec, role: str, stream):
    """Follow the Mobile-Former token pair: returns the open stream ((tokens, dim), where) after block `b`."""
    if role == "open":
        if stream is not None:
            raise SpecError(f"{spec.name} {where}: global tokens are already open (since {stream[1]})")
        return (b.tokens, b.dim), where
    if role in ("use", "close"):
        if stream is None:
            raise SpecError(f"{spec.name} {where}: {b.kind} needs the global tokens; put an mf_tokens block before it")
        if (b.tokens, b.dim) != stream[0]:
            raise SpecError(
                f"{spec.name} {where}: tokens={b.tokens}, dim={b.dim} differ from the tokens opened at "
                f"{stream[1]} (tokens={stream[0][0]}, dim={stream[0][1]}); make them equal"
            )
        return None if role == "close" else stream
    if stream is not None:
        raise SpecError(
            f"{spec.name} {where}: a {b.kind} block cannot take the (map, tokens) pair; close it with "
            "mf_merge first, or use Mobile-Former blocks"
        )
    return None


def plan_network(spec: NetSpec, img_size: int | None = None, num_classes: int = 1000) -> NetPlan:
    """Validate `spec` at `img_size` (default: the spec's) and return its shapes and analytic costs."""
    img_size = spec.img_size if img_size is None else int(img_size)
    if img_size < 1:
        raise SpecError(f"img_size must be a positive integer, got {img_size}")
    if not spec.stages or any(len(s.blocks) == 0 for s in spec.stages):
        raise SpecError(f"{spec.name}: every stage needs at least one block")
    if spec.in_chans < 1:
        raise SpecError(f"in_chans must be >= 1, got {spec.in_chans}")
    # (where, module path, block, ends its stage)
    all_blocks = [(f"stem[{i}]", f"stem.{i}", b, False) for i, b in enumerate(spec.stem)]
    for si, stage in enumerate(spec.stages):
        all_blocks += [
            (f"stages[{si}][{bi}]", f"stages.{si}.blocks.{bi}", b, bi == len(stage.blocks) - 1)
            for bi, b in enumerate(stage.blocks)
        ]
    multiple = 1
    for _, _, b, _ in all_blocks:
        if b.kind in BLOCK_KINDS:
            multiple *= block_stride(b)

    size = img_size  # size errors first: they are the user's most common mistake and have a simple fix
    for where, _, b, _ in all_blocks:
        stride = block_stride(b) if b.kind in BLOCK_KINDS else 1
        if stride < 1:
            raise SpecError(f"{spec.name} {where}: stride must be 1 or 2, got {stride}")
        if size % stride or size < stride:
            raise _size_error(spec, img_size, where, size, size, stride, multiple)
        size //= stride

    c, h, w = spec.in_chans, img_size, img_size
    planned, stage_outputs, reductions = [], [], []
    tokens = False
    stream = None  # (tokens, dim) of an open Mobile-Former (map, tokens) pair, where that pair opened
    last_stage = f"stages.{len(spec.stages) - 1}."
    for where, path, b, stage_end in all_blocks:
        problem = check_block(b, c, h, w)
        if problem:
            raise SpecError(f"{spec.name} {where}: {problem}")
        kind = BLOCK_KINDS[b.kind]
        if tokens and not kind.tokens:
            raise SpecError(
                f"{spec.name} {where}: a {b.kind} block cannot follow token-layout blocks; "
                "put token blocks (meta3d) at the end of the last stage"
            )
        if kind.tokens and not path.startswith(last_stage):
            raise SpecError(f"{spec.name} {where}: token-layout blocks ({b.kind}) are only supported in the last stage")
        tokens = tokens or kind.tokens
        stream = _check_stream(spec, where, b, kind.stream, stream)
        cost, (c2, h2, w2) = kind.module.spec_cost(b, c, h, w)
        planned.append(PlannedBlock(where, path, b, c, h, w, c2, h2, w2, cost))
        c, h, w = c2, h2, w2
        if stage_end:
            stage_outputs.append((c, h, w))
            reductions.append(img_size // h)
    if stream is not None:
        raise SpecError(
            f"{spec.name}: the global tokens opened at {stream[1]} are never closed; end the last "
            "stage with an mf_merge block"
        )
    hd = spec.head
    for problem in (
        hd.conv_width < 0 and f"conv_width must be >= 0 (0: no conv), got {hd.conv_width}",
        not 0.0 <= hd.dropout < 1.0 and f"dropout must be in [0, 1), got {hd.dropout}",
        hd.act not in ACTIVATIONS and f"unknown act '{hd.act}'; choose one of {sorted(ACTIVATIONS)}",
    ):
        if problem:
            raise SpecError(f"{spec.name} head.{problem}")
    if hd.norm not in ("none", "bn", "ln"):
        raise SpecError(f"{spec.name} head.norm: must be 'none', 'bn' or 'ln', got '{hd.norm}'")
    if hd.norm == "ln" and not tokens:
        raise SpecError(f"{spec.name} head.norm: 'ln' needs a token-layout last stage; use 'bn' for 4-D outputs")
    head_cost = ClassifierHead.cost(c, h, w, num_classes, conv_width=hd.conv_width, norm=hd.norm, distill=hd.distill)
    return NetPlan(spec, img_size, tuple(planned), tuple(stage_outputs), tuple(reductions), head_cost, num_classes)


def spec_cost(spec: NetSpec, img_size: int | None = None, num_classes: int = 1000) -> C.Cost:
    """Analytic FLOPs / params / activations of the whole network for one image, without building it."""
    return plan_network(spec, img_size, num_classes).cost
