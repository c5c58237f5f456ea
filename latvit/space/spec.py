"""The design space: every latvit model is a `NetSpec`.

A spec is plain data (frozen dataclasses of ints, floats and strings): it can be compared, hashed,
edited with `dataclasses.replace`, written to JSON and read back. Search edits spec fields, never
modules; `latvit.space.build_model` turns a spec into an `nn.Module`.

A network is a stem (a few blocks), a sequence of stages (each a sequence of blocks, the first one
usually the downsampling block), and a head. Every block is a `BlockSpec` whose `kind` names an entry
of `latvit.space.blocks.BLOCK_KINDS`; a kind reads only the fields it needs (listed in the registry),
so one flat block type serves every family and per-block values (EfficientFormerV2's per-FFN
expansion ratios, say) are ordinary fields.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latvit.errors import SpecError
from latvit.utils import atomic_write_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BlockSpec:
    """One block. `width` is the number of output channels; other fields are read per kind.

    Defaults are the most common values in the seed families, so JSON only stores what differs.
    """

    kind: str
    width: int
    stride: int = 1
    kernel: int = 3
    expansion: float = 4.0  # FFN hidden ratio, or inverted-residual expansion
    heads: int = 8
    key_dim: int = 32
    attn_ratio: float = 4.0  # value dim = attn_ratio * key_dim (LeViT-style attention)
    attn_stride: int = 1  # EfficientFormerV2 stride attention: Q, K, V at 1/attn_stride resolution
    dim: int = 0  # inner transformer width of a MobileViT block; Mobile-Former token width
    depth: int = 1  # number of transformer layers inside a MobileViT block
    patch: int = 2  # MobileViT patch size; MixFormer attention window size
    ratio: float = 0.5  # TRT-ViT R: share of output channels produced by the Transformer branch
    sr: int = 1  # TRT-ViT S: spatial-reduction ratio of keys/values
    tokens: int = 6  # Mobile-Former: number of global tokens carried beside the feature map
    groups: int = 1  # grouped 1x1 convs (Mobile-Former 26M uses 4, with channel shuffle)
    act: str = "gelu"
    bias: bool = True  # conv bias before BatchNorm (the official checkpoints have it or not)
    layer_scale: float = 1e-5  # LayerScale init value; 0 disables LayerScale


@dataclass(frozen=True)
class StageSpec:
    blocks: tuple[BlockSpec, ...]


@dataclass(frozen=True)
class HeadSpec:
    """Classifier head: [1x1 conv-BN-act] -> [norm] -> global average pool -> linear (+ distillation)."""

    conv_width: int = 0  # MobileViT's final 1x1 conv; 0 = none
    act: str = "silu"
    norm: str = "none"  # "none" | "bn" | "ln" (ln only for token-layout outputs)
    distill: bool = False  # EfficientFormer: a second linear head, the two averaged at inference
    dropout: float = 0.0


@dataclass(frozen=True)
class NetSpec:
    name: str
    stem: tuple[BlockSpec, ...]
    stages: tuple[StageSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    img_size: int = 224
    in_chans: int = 3
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    family: str = ""
    paper: str = ""

    # -- convenience -----------------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.blocks[-1].width for s in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s.blocks) for s in self.stages)

    def map_blocks(self, fn, name: str | None = None) -> NetSpec:
        """A copy with every stage block replaced by `fn(block)` (the stem is kept)."""
        stages = tuple(StageSpec(tuple(fn(b) for b in s.blocks)) for s in self.stages)
        return dataclasses.replace(self, stages=stages, name=name or self.name)

    def with_act(self, act: str, name: str | None = None) -> NetSpec:
        """A copy with every activation (stem, stage blocks, head) set to `act`; blocks built without one
        (act "none", e.g. the Conv-BN downsamplings) keep none. The parameters are unchanged, so a
        checkpoint of this spec loads into the copy (then fine-tune: see docs/compression.md)."""

        def swap(b):
            return b if b.act == "none" else dataclasses.replace(b, act=act)

        head = self.head if self.head.act == "none" else dataclasses.replace(self.head, act=act)
        return dataclasses.replace(self.map_blocks(swap, name), stem=tuple(swap(b) for b in self.stem), head=head)

    def with_distill_head(self) -> NetSpec:
        """The same network with a distillation head (itself when it already has one)."""
        return (
            self if self.head.distill else dataclasses.replace(self, head=dataclasses.replace(self.head, distill=True))
        )

    def with_img_size(self, img_size: int | None) -> NetSpec:
        return self if img_size is None else dataclasses.replace(self, img_size=int(img_size))

    def to_dict(self) -> dict[str, Any]:
        return spec_to_dict(self)

    def to_json(self, path: str | Path | None = None, indent: int = 1) -> str:
        text = json.dumps(spec_to_dict(self), indent=indent)
        if path is not None:
            atomic_write_text(Path(path), text + "\n")
        return text

    @staticmethod
    def from_json(text_or_path: str | Path) -> NetSpec:
        return spec_from_json(text_or_path)


# -- serialisation ----------------------------------------------------------------------------------
_BLOCK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(BlockSpec) if f.default is not dataclasses.MISSING}


def _block_to_dict(b: BlockSpec) -> dict[str, Any]:
    d = {"kind": b.kind, "width": b.width}
    for name, default in _BLOCK_DEFAULTS.items():
        value = getattr(b, name)
        if value != default:
            d[name] = value
    return d


def spec_to_dict(spec: NetSpec) -> dict[str, Any]:
    """Compact dict: blocks store only the fields that differ from BlockSpec's defaults."""
    return {
        "format": SPEC_FORMAT_VERSION,
        "name": spec.name,
        "family": spec.family,
        "paper": spec.paper,
        "img_size": spec.img_size,
        "in_chans": spec.in_chans,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "stem": [_block_to_dict(b) for b in spec.stem],
        "stages": [[_block_to_dict(b) for b in s.blocks] for s in spec.stages],
        "head": dataclasses.asdict(spec.head),
    }


def _typed(cls, data: dict[str, Any], where: str):
    """Build dataclass `cls` from `data`, checking names and types so errors name the field."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {unknown}; valid fields are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default
        expected = type(default) if default is not dataclasses.MISSING else None
        if name in ("kind", "name"):
            expected = str
        if name == "width":
            expected = int
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is not None and not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise SpecError(f"{where}.{name}: expected {expected.__name__}, got {value!r}")
        kwargs[name] = value
    missing = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in kwargs
    ]
    if missing:
        raise SpecError(f"{where}: missing field(s) {missing}")
    return cls(**kwargs)


def spec_from_dict(d: dict[str, Any]) -> NetSpec:
    if not isinstance(d, dict):
        raise SpecError(f"spec: expected a JSON object, got {type(d).__name__}")
    if d.get("format", SPEC_FORMAT_VERSION) != SPEC_FORMAT_VERSION:
        raise SpecError(f"spec: format {d.get('format')} is not supported (this latvit reads {SPEC_FORMAT_VERSION})")
    for key in ("name", "stem", "stages"):
        if key not in d:
            raise SpecError(f"spec: missing field '{key}'")
    if not isinstance(d["stages"], list) or not all(isinstance(s, list) for s in d["stages"]):
        raise SpecError("spec.stages: expected a list of stages, each a list of blocks")
    if not isinstance(d["stem"], list):
        raise SpecError("spec.stem: expected a list of blocks")
    known = {f.name for f in dataclasses.fields(NetSpec)} | {"format"}
    unknown = sorted(set(d) - known)
    if unknown:  # a misspelt key ("imgsize") would otherwise leave its field at the default, silently
        raise SpecError(f"spec: unknown field(s) {unknown}; valid fields are {sorted(known)}")
    stem = tuple(_typed(BlockSpec, b, f"stem[{i}]") for i, b in enumerate(d["stem"]))
    stages = tuple(
        StageSpec(tuple(_typed(BlockSpec, b, f"stages[{si}][{bi}]") for bi, b in enumerate(s)))
        for si, s in enumerate(d["stages"])
    )
    head = _typed(HeadSpec, d.get("head", {}), "head")
    top = {k: d[k] for k in ("name", "family", "paper", "img_size", "in_chans") if k in d}
    for k in ("mean", "std"):
        if k in d:
            if not (
                isinstance(d[k], list)
                and len(d[k]) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d[k])
            ):
                raise SpecError(f"spec.{k}: expected a list of 3 numbers, got {d[k]!r}")
            top[k] = tuple(float(v) for v in d[k])
    if any(v <= 0 for v in top.get("std", ())):
        raise SpecError(f"spec.std: every channel's std must be > 0, got {list(top['std'])}")
    probe = _typed(NetSpec, {**top, "stem": (), "stages": ()}, "spec")
    return dataclasses.replace(probe, stem=stem, stages=stages, head=head)


def spec_from_json(text_or_path: str | Path) -> NetSpec:
    """Read a spec from a JSON string or a path to a JSON file."""
    text = str(text_or_path)
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        text = path.read_text()
        where = str(path)
    else:
        where = "spec JSON"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{where} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return spec_from_dict(data)
