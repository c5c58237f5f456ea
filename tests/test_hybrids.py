"""Mobile-Former and MixFormer: the smallest variants at two small sizes (forward, backward, analytic cost
equal to measured), every variant's spec round trip and published size, features, timm names, deploy
folding, ONNX export, and the errors a user can cause. Every variant runs forward/backward with its cost
checked at two full sizes in test_zoo.py; here sizes and models are small to keep this file fast."""

import dataclasses

import numpy as np
import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import latvit
from latvit.errors import SpecError
from latvit.models import MODELS
from latvit.space import NetSpec, StageSpec

MOBILEFORMER = latvit.list_models(family="mobileformer")
MIXFORMER = latvit.list_models(family="mixformer")


def small(name: str) -> tuple[NetSpec, tuple[int, int]]:
    """A variant and two small input sizes. At 64 and 96 MixFormer's 7x7 windows tile none of its maps
    (16..2 and 24..3 pixels), so every mixing block runs padded and the cost test covers the padding."""
    return MODELS[name], (64, 96)


def truncated(spec: NetSpec, keep: int) -> NetSpec:
    """MixFormer with the first `keep` blocks of every stage: a short network with every block kind, for
    slow paths such as ONNX export. Mobile-Former stages change width mid-stage, so it is kept whole (its
    small variants are cheap at 64x64 anyway)."""
    if spec.family == "mobileformer":
        return spec
    stages = tuple(StageSpec(s.blocks[: keep + (s.blocks[0].kind == "mix_merge")]) for s in spec.stages)
    return dataclasses.replace(spec, stages=stages, name=spec.name + "_short")


@pytest.mark.parametrize("name", ["mobileformer_26m", "mobileformer_52m", "mixformer_b0"])
def test_forward_backward_and_cost_at_two_sizes(name):
    spec, sizes = small(name)
    for size in sizes:
        model = latvit.create_model(spec, num_classes=5, img_size=size)
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        out.sum().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing[:5]
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, size, size))
        cost = latvit.spec_cost(model.spec, num_classes=5)
        assert cost.flops == counter.get_total_flops(), size
        assert cost.params == sum(p.numel() for p in model.parameters())


PUBLISHED_PARAMS_M = {
    "mobileformer_508m": 14.0,
    "mobileformer_294m": 11.4,
    "mobileformer_214m": 9.4,
    "mobileformer_151m": 7.6,
    "mobileformer_96m": 4.6,
    "mobileformer_52m": 3.5,
    "mobileformer_26m": 3.2,
}
PUBLISHED_GFLOPS = {
    "mixformer_b0": 0.4,
    "mixformer_b1": 0.7,
    "mixformer_b2": 0.9,
    "mixformer_b3": 1.9,
    "mixformer_b4": 3.6,
}


@pytest.mark.parametrize("name", MOBILEFORMER + MIXFORMER)
def test_built_models_match_the_papers(name):
    """Params (Mobile-Former, official README) to 0.1M; MACs within 10% of the published counts (the papers'
    counters include some element-wise work that torch.utils.flop_counter, and so latvit, leaves out)."""
    cost = latvit.spec_cost(MODELS[name])
    if name in PUBLISHED_PARAMS_M:
        assert round(cost.params / 1e6, 1) == PUBLISHED_PARAMS_M[name]
        assert abs(cost.flops / 2e6 / int(name.split("_")[1][:-1]) - 1) < 0.1
    else:
        assert abs(cost.flops / 2e9 / PUBLISHED_GFLOPS[name] - 1) < 0.1


@pytest.mark.parametrize("name", MOBILEFORMER + MIXFORMER)
def test_spec_round_trip(name):
    spec = MODELS[name]
    assert NetSpec.from_json(spec.to_json()) == spec


def test_save_and_reload_gives_same_outputs(tmp_path):
    spec, (size, _) = small("mobileformer_26m")
    model = latvit.create_model(spec, num_classes=3, img_size=size).eval()
    latvit.save(model, tmp_path / "mf")
    again = latvit.create_model(tmp_path / "mf").eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))


@pytest.mark.parametrize("name,size", [("mobileformer_52m", 64), ("mixformer_b0", 224)])
def test_features_only(name, size):
    model = latvit.create_model(name, features_only=True, img_size=size).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert len(feats) == len(model.feature_info)
    for f, info in zip(feats, model.feature_info):
        assert f.shape[:2] == (1, info["num_chs"])
    if name.startswith("mobileformer"):  # maps at strides 4..32, then the merged (B, 1024, 1, 1) feature
        assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1] and feats[-1].shape[1] == 1024
    else:
        assert [f.shape[-1] for f in feats] == [56, 28, 14, 7]


@pytest.mark.parametrize("name", ["mobileformer_26m", "mixformer_b0"])
def test_timm_create_model(name):
    model = timm.create_model(f"latvit_{name}", num_classes=3)
    assert isinstance(model, latvit.space.LatvitNet) and model.num_classes == 3
    assert model.spec == MODELS[name]


@pytest.mark.parametrize(
    "name,size", [("mobileformer_26m", 64), ("mobileformer_96m", 64), ("mixformer_b0", 224), ("mixformer_b0", 64)]
)
def test_deploy_folding_is_exact(name, size, randomize):
    deploy = pytest.importorskip("latvit.deploy").deploy
    model = randomize(latvit.create_model(truncated(MODELS[name], 1), img_size=size)).eval()
    folded = deploy(model)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert (folded(x) - model(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name,size", [("mobileformer_26m", 64), ("mixformer_b0", 224), ("mixformer_b0", 64)])
def test_onnx_export_round_trip(name, size, tmp_path, randomize):
    """Bridges, token creation and the window partition (at 64 also its padding and crop) export and run
    in ONNX Runtime (short networks: export time grows with the number of blocks, not with their size)."""
    ort = pytest.importorskip("onnxruntime")
    model = randomize(latvit.create_model(truncated(MODELS[name], 1), img_size=size)).eval()
    x = torch.randn(1, 3, size, size)
    path = tmp_path / f"{name}.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=17, input_names=["image"], output_names=["logits"]
        )
        ref = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"image": x.numpy()})[0]
    assert np.abs(out - ref).max() <= 1e-4


# -- input sizes: every multiple of 32 ------------------------------------------------------------------------
@pytest.mark.parametrize("size", [256, 320])
def test_mixformer_builds_for_sizes_its_windows_do_not_tile(size):
    """At 256 and 320 the 7x7 windows tile no stage map (64, 80, ...): the blocks pad, and the analytic cost
    counts the padded mixer exactly (short network: one block per stage)."""
    model = latvit.create_model(truncated(MODELS["mixformer_b0"], 1), num_classes=3, img_size=size).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 3) and torch.isfinite(out).all()
    assert latvit.spec_cost(model.spec, num_classes=3).flops == counter.get_total_flops()


def test_mixformer_built_at_224_takes_a_256_input():
    model = latvit.create_model(truncated(MODELS["mixformer_b0"], 1), num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 3)


def test_mixer_pads_with_zeros_at_the_bottom_right_and_crops(randomize):
    """The official padding: on a map the window does not tile, the mixer's output is that of the map with
    zero rows and columns appended (bottom, right), cropped; where the window tiles the map nothing changes."""
    block = randomize(latvit.create_model("mixformer_b0", img_size=224)).eval().stages[0].blocks[0]
    attn = block.attn
    x = torch.randn(2, 10, 12, attn.proj.in_features)  # (B, H, W, C): 10x12 is padded to 14x14
    with torch.no_grad():
        padded = torch.nn.functional.pad(x, (0, 0, 0, 2, 0, 4))
        assert torch.equal(attn(x), attn(padded)[:, :10, :12])
        tiled = torch.randn(2, 14, 7, attn.proj.in_features)
        assert torch.equal(attn(tiled), attn.mix(tiled))
        assert block(torch.randn(1, attn.proj.in_features, 10, 12)).shape == (1, attn.proj.in_features, 10, 12)


@pytest.mark.parametrize("built", [224, 256])
def test_mobileformer_takes_any_multiple_of_32(built):
    """Mobile-Former has no resolution-bound parameter: built at one size it takes any multiple of 32."""
    model = latvit.create_model("mobileformer_26m", num_classes=3, img_size=built).eval()
    assert model.input_multiple == 32
    with torch.no_grad():
        for size in (64, 256):
            assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


def test_mobileformer_wrong_size_says_what_fits():
    model = latvit.create_model("mobileformer_26m", num_classes=3).eval()
    with pytest.raises(
        SpecError,
        match=r"multiples of 32, got 250x250; resize or crop the input to a multiple "
        r"of 32 \(e.g. 256x256\)",
    ):
        model(torch.randn(1, 3, 250, 250))


# -- errors a user can cause ----------------------------------------------------------------------------
def test_window_below_one_is_a_clear_error():
    with pytest.raises(SpecError, match=r"stages\[0\]\[0\]: window \(the patch field\) must be >= 1, got 0"):
        latvit.plan_network(
            MODELS["mixformer_b0"].map_blocks(lambda b: dataclasses.replace(b, patch=0) if b.kind == "mixing" else b)
        )


def test_token_count_zero_is_a_clear_error():
    spec = MODELS["mobileformer_26m"].map_blocks(
        lambda b: dataclasses.replace(b, tokens=0) if b.kind.startswith("mf_") else b
    )
    with pytest.raises(SpecError, match=r"stages\[0\]\[1\]: tokens \(global token count\) must be >= 1, got 0"):
        latvit.plan_network(spec)


def test_token_stream_errors_name_the_block_and_the_fix():
    spec = MODELS["mobileformer_26m"]
    first = spec.stages[1].blocks[0]
    mismatched = spec.map_blocks(lambda b: dataclasses.replace(b, dim=64) if b is first else b)
    with pytest.raises(
        SpecError,
        match=r"stages\[1\]\[0\]: tokens=3, dim=64 differ from the tokens opened at "
        r"stages\[0\]\[1\]",
    ):
        latvit.plan_network(mismatched)
    no_tokens = dataclasses.replace(
        spec, stages=(StageSpec(spec.stages[0].blocks[:1] + spec.stages[0].blocks[2:]),) + spec.stages[1:]
    )
    with pytest.raises(SpecError, match=r"needs the global tokens; put an mf_tokens block before it"):
        latvit.plan_network(no_tokens)
    never_closed = dataclasses.replace(spec, stages=spec.stages[:-1])
    with pytest.raises(SpecError, match=r"never closed; end the last stage with an mf_merge block"):
        latvit.plan_network(never_closed)


def test_bad_heads_and_groups_are_clear_errors():
    spec = MODELS["mobileformer_26m"]
    with pytest.raises(SpecError, match=r"input width 12 is not divisible by heads=5"):
        latvit.plan_network(spec.map_blocks(lambda b: dataclasses.replace(b, heads=5) if b.kind == "mf_m2f" else b))
    with pytest.raises(SpecError, match=r"is not divisible by groups=5"):
        latvit.plan_network(spec.map_blocks(lambda b: dataclasses.replace(b, groups=5) if b.kind == "mf_mobile" else b))
