"""Deploy folding: equivalence for every registered model, what is left after folding, the generic
protocol on plain modules, ONNX export of a deployed model."""

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import latvit
from latvit.deploy import deploy, fold_bn_, fold_scale_
from latvit.errors import SpecError
from latvit.models import MODELS

ALL = latvit.list_models()

# BatchNorms that follow no conv/linear and so stay (module path suffix: why)
UNFOLDABLE_BN = {"head.norm": "EfficientFormerV2's head BN follows the last block's residual add"}


def small_size(name: str) -> int:
    """The smallest input size the model takes (keeps the whole-zoo test cheap)."""
    spec = MODELS[name]
    for size in (64, 96, 128, 160, 192, 224):
        try:
            latvit.plan_network(spec, size)
            return size
        except SpecError:
            continue
    return spec.img_size


def leftovers(model: nn.Module) -> dict[str, list[str]]:
    """What deploy folding should have removed, by kind -> module/parameter names."""
    out = {"bn": [], "layer_scale": [], "drop": [], "bias_table": []}
    for name, m in model.named_modules():
        kind = type(m).__name__
        if isinstance(m, _BatchNorm) and not any(name.endswith(s) for s in UNFOLDABLE_BN):
            out["bn"].append(name)
        if "LayerScale" in kind or hasattr(m, "gamma"):
            out["layer_scale"].append(name)
        if isinstance(m, nn.modules.dropout._DropoutNd) or kind in ("DropPath", "DropBlock2d"):
            out["drop"].append(name)
    out["bias_table"] = [n for n, _ in model.named_parameters() if n.endswith("attention_biases")]
    return {k: v for k, v in out.items() if v}


@pytest.mark.parametrize("name", ALL)
def test_deploy_is_equivalent_and_folds_everything(name, randomize):
    size = small_size(name)
    model = randomize(latvit.create_model(name, num_classes=10, img_size=size, drop_path_rate=0.1)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = deploy(model)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():  # forward() is forward_head(forward_features()): check both in one pass
        feats_ref, feats = model.forward_features(x), fused.forward_features(x)
        ref, out = model.forward_head(feats_ref), fused.forward_head(feats)
    assert (out - ref).abs().max().item() <= 1e-5
    assert (feats - feats_ref).abs().max().item() <= 1e-5 * max(1.0, feats_ref.abs().max().item())
    assert not leftovers(fused), leftovers(fused)
    assert not fused.training
    # the original is untouched: same modules, same values
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())


def test_deploy_on_default_size_and_attention_bias_cache(randomize):
    model = randomize(latvit.create_model("efficientformerv2_s0")).eval()
    fused = deploy(model)
    caches = [m.bias_cache for m in fused.modules() if hasattr(m, "bias_cache")]
    assert caches and all(c is not None and c.dim() == 3 for c in caches)  # (heads, Nq, Nk)
    assert fused.head.fc_dist is None  # distilled classifiers merged into one linear
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() <= 1e-5
    assert deploy(fused).state_dict().keys() == fused.state_dict().keys()  # deploying twice is a no-op


def test_deploy_keeps_training_mode_of_the_original():
    model = latvit.create_model("mobilevit_xxs", num_classes=3, img_size=64).train()
    fused = deploy(model)
    assert model.training and not fused.training
    assert any(isinstance(m, _BatchNorm) for m in model.modules())


def test_generic_rules_on_plain_modules(randomize):
    class SelfFusing(nn.Module):  # returns a replacement, like timm's LeViT ConvNorm.fuse
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 8)

        def forward(self, x):
            return 2 * self.lin(x)

        def fuse(self):
            fold_scale_(self.lin, torch.full((8,), 2.0))
            return self.lin

    class Reparam(nn.Module):  # mutates in place and returns None, like timm's reparameterize()
        fused = False

        def forward(self, x):
            return x

        def reparameterize(self):
            self.fused = True

    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.BatchNorm2d(8),
        nn.AvgPool2d(3, 1, 1),
        nn.BatchNorm2d(8),  # after a pool: not foldable backwards, stays
        nn.Dropout(0.5),
        nn.Flatten(1, -1),
        nn.Linear(8 * 16, 8),
        nn.BatchNorm1d(8),
        SelfFusing(),
        Reparam(),
    )
    randomize(model).eval()
    fused = deploy(model)
    kinds = [type(m).__name__ for m in fused]
    assert kinds.count("BatchNorm2d") == 1 and "BatchNorm1d" not in kinds and "Dropout" not in kinds
    assert isinstance(fused[11], nn.Linear) and fused[12].fused
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["efficientvit_m0", "levit_128s"])
def test_timm_models_fuse_with_their_own_rules(name, randomize):
    """timm's ConvNorm is an nn.Sequential with its own fuse(): that rule runs, not the generic one first
    (which left it a BatchNorm-less Sequential to fuse: AttributeError)."""
    import timm

    model = randomize(timm.create_model(name)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (deploy(model)(x) - model(x)).abs().max().item() <= 1e-4


def test_fold_bn_rejects_what_it_cannot_fold():
    with pytest.raises(TypeError):
        fold_bn_(nn.ConvTranspose2d(4, 4, 2), nn.BatchNorm2d(4))
    with pytest.raises(TypeError):
        fold_bn_(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False))  # batch statistics


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_deployed_model_exports_to_onnx(tmp_path, randomize):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = randomize(latvit.create_model("efficientformer_l1", img_size=96)).eval()
    fused = deploy(model)
    x = torch.randn(1, 3, 96, 96)
    path = tmp_path / "l1.onnx"
    torch.onnx.export(fused, (x,), str(path), input_names=["x"], output_names=["logits"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
    with torch.no_grad():
        ref = model(x)
    assert (got - ref).abs().max().item() <= 1e-4 * max(1.0, ref.abs().max().item())
    ops = {n.op_type for n in __import__("onnx").load(str(path)).graph.node}
    assert "BatchNormalization" not in ops
