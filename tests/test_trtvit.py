"""TRT-ViT family: every variant at small sizes, MixBlocks at any R, exact analytic costs, clear errors.

The zoo test (tests/test_zoo.py) covers the default 224 input; here each model is built once and run at
64 and 96 (TRT-ViT has no resolution-dependent parameters), and small hand-made specs exercise every block
kind and R value cheaply.
"""

import dataclasses
import json

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import latvit
from latvit.cli import main
from latvit.errors import SpecError
from latvit.models import trtvit
from latvit.space import BlockSpec, NetSpec, StageSpec, plan_network

NAMES = sorted(trtvit.SPECS)


def measured(model, size):
    """(FLOPs counted by torch, parameter count) of one forward pass at size x size."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops(), sum(p.numel() for p in model.parameters())


def small_spec(kind="mixblock_c", **fields) -> NetSpec:
    """A narrow 5-stage pyramid (widths 32-256) whose stage 4 ends in one `kind` block with S = 2 and
    whose stage 5 is two `kind` blocks (the first downsamples)."""
    spec = trtvit.pyramid_spec("small", (1, 1, 2, 2), (0, 0, 1, 2), kind, (32, 64, 128, 256), stem_width=16)
    return spec.map_blocks(lambda b: dataclasses.replace(b, **fields) if b.kind == kind else b)


def test_registry_and_depth_mapping():
    assert {
        "trtvit_a",
        "trtvit_b",
        "trtvit_c",
        "trtvit_d",
        "mixnet_v",
        "mixnet_a",
        "mixnet_b",
        "mixnet_c",
        "refined_resnet50",
    } <= set(latvit.list_models(family="trtvit"))
    # the paper's four depths are stages 2-5; the stem is stage 1
    paper = {
        "trtvit_a": (2, 4, 5, 4),
        "trtvit_b": (3, 4, 7, 4),
        "trtvit_c": (3, 4, 9, 6),
        "trtvit_d": (4, 5, 9, 5),
        "refined_resnet50": (2, 3, 6, 5),
    }
    for name, depths in paper.items():
        assert latvit.get_spec(name).depths == depths
    kinds = [[b.kind for b in s.blocks] for s in latvit.get_spec("trtvit_c").stages]
    assert kinds[3] == ["mixblock_c"] * 6 and kinds[2][-2:] == ["mixblock_c"] * 2 and kinds[2][0] == "bottleneck"
    assert all(k == "bottleneck" for k in kinds[0] + kinds[1] + kinds[2][:-2])
    assert [b.kind for s in latvit.get_spec("trtvit_a").stages[:3] for b in s.blocks] == ["bottleneck"] * 11
    assert latvit.get_spec("trtvit_a").widths == (256, 512, 1024, 2048)


@pytest.mark.parametrize("name", NAMES)
def test_variant_forward_backward(name):
    """Built once, run at 64 and 96 (no resolution-dependent parameters). tests/test_zoo.py checks these
    models at 224 and 256, analytic cost included; the small specs below check costs at 64 and 96."""
    model = latvit.create_model(name, num_classes=5, img_size=64)
    for size, batch in ((64, 2), (96, 1)):
        out = model(torch.randn(batch, 3, size, size))
        assert out.shape == (batch, 5) and torch.isfinite(out).all()
        out.sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    "kind,fields",
    [
        ("mixblock_c", dict(ratio=0.25)),
        ("mixblock_c", dict(ratio=0.75, kernel=5)),
        ("mixblock_c", dict(ratio=0.5, sr=1, expansion=4.0)),
        ("mixblock_a", dict(ratio=0.25)),
        ("mixblock_b", dict()),
        ("transformer_sr", dict()),
    ],
)
def test_small_blocks_any_ratio(kind, fields):
    spec = small_spec(kind, **fields)
    model = latvit.create_model(spec, num_classes=3)
    for size in (64, 96):
        out = model.train()(torch.randn(2, 3, size, size))
        assert out.shape == (2, 3)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())
        flops, params = measured(model, size)
        cost = latvit.spec_cost(spec, img_size=size, num_classes=3)
        assert (cost.flops, cost.params) == (flops, params)


def test_mixblock_c_ratio_sets_the_transformer_share():
    for ratio, heads in ((0.25, 2), (0.75, 6)):
        model = latvit.create_model(small_spec(ratio=ratio), num_classes=3)
        block = model.stages[3].blocks[1]
        assert block.splits == (int(256 * ratio), 256 - int(256 * ratio))
        assert block.transformer.attn.heads == heads  # head dim 32
        assert block(torch.randn(1, 256, 2, 2)).shape == (1, 256, 2, 2)


@pytest.mark.parametrize("kind", ["mixblock_a", "mixblock_b", "mixblock_c", "transformer_sr"])
def test_deploy_folds_every_batchnorm(kind, randomize):
    from latvit.deploy import deploy

    model = randomize(latvit.create_model(small_spec(kind, sr=2), num_classes=3)).eval()
    folded = deploy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - folded(x)).abs().max().item() <= 1e-5


def test_features_only():
    model = latvit.create_model("trtvit_a", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 96))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 24, 24), (1, 512, 12, 12), (1, 1024, 6, 6), (1, 2048, 3, 3)]
    assert [i["reduction"] for i in model.feature_info] == [4, 8, 16, 32]


def test_json_round_trip_keeps_trt_fields(tmp_path):
    for name in NAMES:
        spec = latvit.get_spec(name)
        assert NetSpec.from_json(spec.to_json()) == spec
    spec = small_spec(ratio=0.25, sr=2, kernel=5)
    path = tmp_path / "spec.json"
    spec.to_json(path)
    block = json.loads(path.read_text())["stages"][3][1]
    assert block == {"kind": "mixblock_c", "width": 256, "kernel": 5, "expansion": 3.0, "ratio": 0.25, "sr": 2}
    assert NetSpec.from_json(path) == spec


def test_timm_create_model():
    model = timm.create_model("latvit_refined_resnet50", num_classes=3)
    assert isinstance(model, latvit.space.LatvitNet) and model.num_classes == 3
    assert model.spec == latvit.get_spec("refined_resnet50")


@pytest.mark.parametrize(
    "kind,fields,message",
    [
        ("mixblock_c", dict(ratio=0.0), "ratio R=0.0 must be strictly between 0 and 1"),
        ("mixblock_c", dict(ratio=1.0), "ratio R=1.0 must be strictly between 0 and 1"),
        ("mixblock_a", dict(ratio=-0.5), "must be strictly between 0 and 1"),
        ("mixblock_b", dict(ratio=0.25), "mixblock_b splits its width in halves"),
        ("mixblock_c", dict(ratio=0.3), "is not divisible by the head dim key_dim=32"),
        ("mixblock_c", dict(sr=0), "sr (spatial-reduction ratio S) must be >= 1"),
        ("mixblock_c", dict(sr=4), "sr=4 is larger than the 2x2 feature map"),
        ("mixblock_c", dict(kernel=4), "kernel must be a positive odd number"),
        ("transformer_sr", dict(key_dim=48), "Transformer width 128 is not divisible by the head dim key_dim=48"),
    ],
)
def test_bad_values_name_the_block_and_field(kind, fields, message):
    with pytest.raises(SpecError) as err:
        plan_network(small_spec(kind, **fields), img_size=64)
    assert message in str(err.value) and str(err.value).startswith("small stages[")


def test_width_not_divisible_by_heads():
    spec = NetSpec(
        "odd", (BlockSpec("conv_bn_act", 16, stride=2),), (StageSpec((BlockSpec("mixblock_c", 200, stride=2),)),)
    )
    with pytest.raises(
        SpecError,
        match=r"odd stages\[0\]\[0\]: Transformer width R \* width = 0.5 \* 200 = 100 is "
        r"not divisible by the head dim key_dim=32",
    ):
        latvit.create_model(spec)


def test_cli_lists_the_family(capsys):
    assert main(["models", "--family", "trtvit", "--json"]) == 0
    cards = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert set(cards) == set(NAMES)
    assert cards["trtvit_c"]["top1"] == 82.7 and cards["trtvit_a"]["gflops"] > 0
    assert main(["models", "trtvit"]) == 0
    out = capsys.readouterr().out
    assert "trtvit_a" in out and "trtvit_d" in out and "efficientformer_l1" not in out
