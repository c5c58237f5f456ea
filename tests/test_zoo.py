"""One parametrised test file for the whole zoo: forward, backward, features, costs, timm parity."""

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import latvit
from latvit.models import MODELS

ALL = latvit.list_models()
TIMM_FAMILIES = ("efficientformer", "efficientformerv2", "mobilevit")
TIMM_BACKED = [n for n in ALL if MODELS[n].family in TIMM_FAMILIES]


def small_sizes(name: str) -> tuple[int, int]:
    """The two smallest valid input sizes of a model (cheap enough to run the whole zoo in CI; the
    default size is exercised by the cost test)."""
    valid = []
    for size in (64, 96, 128, 160, 192, 224, 256, 448):
        try:
            latvit.plan_network(MODELS[name], size)
        except latvit.space.plan.SpecError:
            continue
        valid.append(size)
        if len(valid) == 2:
            return valid[0], valid[1]
    raise AssertionError(f"{name}: fewer than two valid sizes")


def test_registry_has_the_seed_families():
    expected = {
        "efficientformer_l1",
        "efficientformer_l3",
        "efficientformer_l7",
        "efficientformerv2_s0",
        "efficientformerv2_s1",
        "efficientformerv2_s2",
        "efficientformerv2_l",
        "mobilevit_xxs",
        "mobilevit_xs",
        "mobilevit_s",
    }
    assert expected <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward(name):
    """The seed families at their default size (the foundation issue's contract); the larger later
    families at their smallest valid size, so the whole zoo stays within the CI budget."""
    size = MODELS[name].img_size if MODELS[name].family in TIMM_FAMILIES else small_sizes(name)[0]
    model = latvit.create_model(name, num_classes=7, img_size=size)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_other_size(name):
    size = small_sizes(name)[1]
    model = latvit.create_model(name, num_classes=5, img_size=size)
    out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_analytic_cost_equals_measured(name):
    for size in sorted({MODELS[name].img_size, *small_sizes(name)}):
        model = latvit.create_model(name, img_size=size).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, size, size))
        cost = latvit.spec_cost(model.spec)
        assert cost.flops == counter.get_total_flops(), size
        assert cost.params == sum(p.numel() for p in model.parameters()), size


@pytest.mark.parametrize("name", ALL)
def test_features_only(name):
    size = small_sizes(name)[1]
    model = latvit.create_model(name, features_only=True, img_size=size).eval()
    feats = model(torch.randn(1, 3, size, size))
    assert len(feats) == len(model.feature_info) == len(model.spec.stages)
    for f, info in zip(feats, model.feature_info):
        assert f.shape == (1, info["num_chs"], size // info["reduction"], size // info["reduction"])


@pytest.mark.parametrize("name", ALL)
def test_uniform_interface(name):
    size = small_sizes(name)[0]
    model = latvit.create_model(name, num_classes=4, img_size=size).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (1, model.num_features)
        assert torch.allclose(model.forward_head(feats), model(x))
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)


@pytest.mark.parametrize("name", TIMM_BACKED)
def test_timm_parity(name, tmp_path, randomize):
    """timm model with random weights -> state dict file -> latvit: same logits within 1e-5."""
    reference = randomize(timm.create_model(name)).eval()
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    model = latvit.create_model(name, checkpoint=path).eval()
    x = torch.randn(2, 3, model.img_size, model.img_size)
    with torch.no_grad():
        diff = (reference(x) - model(x)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("name", ["efficientformer_l1", "efficientformerv2_s0", "mobilevit_xxs"])
def test_timm_create_model_names(name):
    model = timm.create_model(f"latvit_{name}", num_classes=3)
    assert isinstance(model, latvit.space.LatvitNet) and model.num_classes == 3
    assert name not in {n for n in timm.list_models() if n.startswith("latvit_")}
