"""`latvit bench --models frontier`: today's mobile models from timm, each with its published top-1, and each
family measured in its deployed form (timm's `reparameterize` / `fuse` through `latvit.deploy`)."""

import re

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg
from torch.nn.modules.batchnorm import _BatchNorm

from latvit.cli import expand_models
from latvit.deploy import deploy
from latvit.latency.bench import FRONTIER_MODELS
from latvit.models.published import PUBLISHED_TOP1

# one small variant per family; True where the family reparameterizes (multi-branch or conv-BN blocks that
# timm folds with its own `reparameterize` / `fuse`), so deploy must leave fewer BatchNorms behind
FAMILIES = {
    "fastvit_t8": True,
    "repvit_m0_9": True,
    "mobileone_s0": True,
    "efficientvit_m2": True,
    "shvit_s1": True,
    "levit_128s": True,
    "tiny_vit_5m_224": True,
    "nextvit_small": True,
    "efficientvit_b0": False,
    "mobilenetv4_conv_small": False,
    "mobilenetv4_hybrid_medium": False,
    "swiftformer_xs": False,
    "starnet_s1": False,
    "edgenext_xx_small": False,
}
FIXED_SIZE = ("levit",)  # built for one input size: built at the test's


def test_every_frontier_model_is_in_timm_with_a_sourced_top1():
    for ref in FRONTIER_MODELS:
        name = ref.removeprefix("timm:")
        assert ref.startswith("timm:") and timm.is_model(name), ref
        top1, source = PUBLISHED_TOP1[ref]
        assert 55.0 < top1 < 90.0, ref
        assert re.search(r"arXiv:\d{4}\.\d{5}", source) or "paper" in source, source
        weights = re.search(r"csv: (\S+) at (\d+) px", source)
        if weights:  # the named weights exist in timm, at the size latvit bench measures the model at
            assert weights.group(1) in timm.list_pretrained(weights.group(1)), source
            size = get_pretrained_cfg(name).input_size[-1]
            assert size == int(weights.group(2)), (ref, size)
    assert {f"timm:{f}" if f != "tiny_vit_5m_224" else "timm:tiny_vit_5m_224.in1k" for f in FAMILIES} <= set(
        FRONTIER_MODELS
    )


def test_frontier_group_expands_to_the_preset():
    assert expand_models("frontier") == FRONTIER_MODELS
    assert expand_models("seeds,frontier")[-len(FRONTIER_MODELS) :] == FRONTIER_MODELS


@pytest.mark.parametrize("name", list(FAMILIES))
def test_deploy_keeps_each_frontier_family_equal(name, randomize):
    kwargs = {"img_size": 64} if name.startswith(FIXED_SIZE) else {}
    model = randomize(timm.create_model(name, pretrained=False, num_classes=10, **kwargs)).eval()
    fused = deploy(model)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, out = model(x), fused(x)
    # relative to the logits' scale: MobileOne's plain stack with random BatchNorm statistics reaches 1e15
    assert (out - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())

    def batchnorms(m):
        return sum(isinstance(mod, _BatchNorm) for mod in m.modules())

    if FAMILIES[name]:
        assert batchnorms(fused) < batchnorms(model), "deploy left the reparameterizable blocks as built"
