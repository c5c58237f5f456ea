"""Specs: JSON round trip, validation errors that name the field, input-size checks."""

import dataclasses
import json
import re

import pytest
import torch

import latvit
from latvit.errors import SpecError, UnknownModelError
from latvit.space import BlockSpec, NetSpec, StageSpec, plan_network


@pytest.mark.parametrize("name", latvit.list_models())
def test_json_round_trip(name, tmp_path):
    spec = latvit.get_spec(name)
    assert NetSpec.from_json(spec.to_json()) == spec
    path = tmp_path / "spec.json"
    spec.to_json(path)
    assert NetSpec.from_json(path) == spec
    assert latvit.spec_cost(latvit.create_model(path).spec) == latvit.spec_cost(spec)


def test_json_is_compact():
    """Blocks store only the fields that differ from the defaults."""
    d = json.loads(latvit.get_spec("efficientformer_l1").to_json())
    assert d["stages"][0][0] == {"kind": "meta4d", "width": 48}


def tiny_spec(**block_overrides) -> NetSpec:
    block = dataclasses.replace(BlockSpec("meta3d", 32), **block_overrides)
    return NetSpec(
        name="tiny",
        img_size=32,
        stem=(BlockSpec("conv_bn_act", 32, stride=2),),
        stages=(StageSpec((BlockSpec("meta4d", 32), block)),),
        head=latvit.HeadSpec(norm="ln"),
    )


def test_tiny_spec_builds():
    model = latvit.build_model(tiny_spec(), num_classes=3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(heads=0), "stages[0][1]: heads (0)"),
        (dict(width=48), "stages[0][1]: width 48 must equal the input width 32"),
        (dict(kernel=2), "kernel must be a positive odd number"),
        (dict(act="swish"), "unknown act 'swish'"),
        (dict(kind="meta5d"), "unknown block kind 'meta5d'"),
    ],
)
def test_invalid_block_names_the_field(overrides, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        plan_network(tiny_spec(**overrides))


def edit_blocks(spec, kind, **changes):
    return spec.map_blocks(lambda b: dataclasses.replace(b, **changes) if b.kind == kind else b)


MOBILEVIT, V2 = latvit.get_spec("mobilevit_xxs"), latvit.get_spec("efficientformerv2_s0")


@pytest.mark.parametrize(
    "spec, message",
    [  # each was a ZeroDivisionError or a torch error at build time
        (edit_blocks(MOBILEVIT, "mv2", stride=0), "stages[0][0]: stride must be 1 or 2, got 0"),
        (edit_blocks(MOBILEVIT, "mobilevit", heads=0), "heads must be >= 1, got 0"),
        (edit_blocks(MOBILEVIT, "mv2", expansion=0.01), "expansion 0.01 leaves no hidden channels at width 16"),
        (edit_blocks(MOBILEVIT, "mobilevit", expansion=0.001), "expansion 0.001 leaves no hidden channels at width 48"),
        (edit_blocks(V2, "attn_ffn", attn_ratio=0.0), "attn_ratio 0.0 x key_dim 32 leaves no value channels"),
        (
            dataclasses.replace(MOBILEVIT, head=dataclasses.replace(MOBILEVIT.head, dropout=1.5)),
            "head.dropout must be in [0, 1), got 1.5",
        ),
        (
            dataclasses.replace(MOBILEVIT, head=dataclasses.replace(MOBILEVIT.head, conv_width=-3)),
            "head.conv_width must be >= 0",
        ),
    ],
)
def test_degenerate_blocks_and_heads_are_spec_errors(spec, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        latvit.create_model(spec, img_size=64)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("imgsize", 64, "spec: unknown field(s) ['imgsize']"),  # it used to leave img_size at its default, silently
        ("mean", ["a", 1, 2], "spec.mean: expected a list of 3 numbers"),
        ("std", [0, 1, 1], "spec.std: every channel's std must be > 0"),
    ],
)
def test_spec_top_level_fields_are_checked(key, value, message):
    data = MOBILEVIT.to_dict() | {key: value}
    with pytest.raises(SpecError, match=re.escape(message)):
        latvit.space.spec_from_dict(data)


def test_width_not_divisible_by_heads():
    spec = latvit.get_spec("mobilevit_xxs")
    stages = list(spec.stages)
    last = stages[-1].blocks
    stages[-1] = StageSpec((last[0], dataclasses.replace(last[1], dim=90, heads=4)))
    with pytest.raises(SpecError, match=r"stages\[4\]\[1\]: dim 90 is not divisible by heads=4"):
        plan_network(dataclasses.replace(spec, stages=tuple(stages)))


@pytest.mark.parametrize(
    "name, size",
    [("efficientformer_l1", 100), ("mobilevit_xxs", 200), ("efficientformerv2_s0", 16), ("mobilevit_s", 0)],
)
def test_invalid_input_size(name, size):
    with pytest.raises(SpecError, match="input size|img_size must be a positive"):
        latvit.create_model(name, img_size=size)


def test_feature_map_vanishes_message():
    with pytest.raises(SpecError, match=r"use a multiple of 32"):
        latvit.create_model("efficientformer_l1", img_size=16)


def test_wrong_input_channels_and_size():
    model = latvit.create_model("efficientformerv2_s0").eval()
    with pytest.raises(SpecError, match=r"expects input of shape \(B, 3, H, W\)"):
        model(torch.randn(1, 1, 224, 224))
    with pytest.raises(SpecError, match="built for 224x224 input, got 256x256; create it with img_size=256"):
        model(torch.randn(1, 3, 256, 256))
    flexible = latvit.create_model("mobilevit_xxs").eval()
    assert flexible(torch.randn(1, 3, 192, 192)).shape == (1, 1000)  # not fixed-resolution: any multiple of 32
    with pytest.raises(SpecError, match="multiples of 32"):
        flexible(torch.randn(1, 3, 200, 200))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ('{"name": "x", "stem": [], "stages": [[{"kind": "mv2"}]]}', r"stages\[0\]\[0\]: missing field"),
        (
            '{"name": "x", "stem": [], "stages": [[{"kind": "mv2", "width": "8"}]]}',
            r"stages\[0\]\[0\].width: expected int",
        ),
        (
            '{"name": "x", "stem": [], "stages": [[{"kind": "mv2", "width": 8, "colour": 1}]]}',
            r"unknown field\(s\) \['colour'\]",
        ),
        ('{"name": "x", "stages": []}', "missing field 'stem'"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_spec_json(text, message, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        latvit.create_model(path)


def test_unknown_model_suggests_names():
    with pytest.raises(UnknownModelError, match="did you mean .*efficientformer_l1"):
        latvit.create_model("efficientformer_l2")


def test_benchmark_specs_build():
    """The spec files the benchmarks read (benchmarks/specs) stay valid as the spec format evolves; the ReLU
    MobileViT-S differs from the zoo's only in its activations."""
    from pathlib import Path

    from latvit.models import get_spec
    from latvit.space.spec import spec_from_json

    specs = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
    files = sorted(specs.glob("*.json"))
    assert files
    for path in files:
        latvit.create_model(str(path), img_size=64)
    for name in ("mobilevit_s", "efficientformerv2_s1"):  # the int8 study's ReLU variants (docs/compression.md)
        assert spec_from_json(specs / f"{name}_relu.json") == get_spec(name).with_act("relu", name=f"{name}_relu")


def test_with_act_swaps_every_activation_and_keeps_the_parameters():
    from latvit.models import get_spec

    for name in ("mobilevit_s", "efficientformerv2_s1", "efficientformer_l1"):
        spec = get_spec(name)
        relu = spec.with_act("relu")
        blocks = lambda s: [*s.stem, *(b for st in s.stages for b in st.blocks)]  # noqa: E731
        assert [b.act == "none" for b in blocks(spec)] == [b.act == "none" for b in blocks(relu)]
        assert {b.act for b in blocks(relu)} <= {"relu", "none"} and relu.head.act == "relu"
        drop_act = lambda b: dataclasses.replace(b, act="")  # noqa: E731
        assert [drop_act(b) for b in blocks(relu)] == [drop_act(b) for b in blocks(spec)]
        a = latvit.create_model(spec, img_size=64)
        b = latvit.create_model(relu, img_size=64)
        b.load_state_dict(a.state_dict())  # strict: the same parameters
        kinds = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
        assert "ReLU" in kinds(b) and not kinds(b) & {"GELU", "SiLU"}
