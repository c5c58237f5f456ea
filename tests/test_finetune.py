"""Fine-tuning to your own classes: `latvit train MODEL --init CHECKPOINT --data FOLDER` with a 1000-class
checkpoint and a 3-class ImageFolder loads the backbone strictly, re-initialises the classifier and the
distillation head for 3 classes and says so; a checkpoint whose backbone does not match stays a one-line
error listing the keys. A tiny spec at 32 px, a generated ImageFolder, a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import latvit
from latvit.cli import main as cli
from latvit.data import write_synthetic_imagefolder
from latvit.errors import CheckpointError
from latvit.models import load_backbone
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

ROOT = Path(__file__).resolve().parents[1]
QUICK = [
    "--img-size",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "8",
    "--set",
    "num_workers=0",
    "--set",
    "threads=1",
    "--set",
    "progress=false",
    "--set",
    "warmup_epochs=0",
]


def tiny_spec(width: int = 24, distill: bool = True) -> NetSpec:
    return NetSpec(
        name="tiny_ft",
        img_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        stem=(BlockSpec("conv_bn_act", 16, stride=2, act="relu"),),
        stages=(StageSpec((BlockSpec("conv_bn_act", width, stride=2, act="relu"), BlockSpec("ffn_local", width))),),
        head=HeadSpec(distill=distill),
    )


@pytest.fixture(scope="module")
def imagenet_model(tmp_path_factory) -> Path:
    """A saved 1000-class model with a distillation head, as an ImageNet checkpoint would be."""
    torch.manual_seed(0)
    return latvit.save(latvit.create_model(tiny_spec()), tmp_path_factory.mktemp("in1k") / "tiny_in1k")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_synthetic_imagefolder(
        tmp_path_factory.mktemp("data") / "three", num_classes=3, train_per_class=8, val_per_class=2, size=32
    )


def test_backbone_loads_and_the_classifier_starts_fresh(imagenet_model):
    source = latvit.create_model(str(imagenet_model)).state_dict()
    model = latvit.create_model(tiny_spec(), num_classes=3)
    fresh = model.state_dict()
    notes = load_backbone(model, imagenet_model / "model.safetensors")
    assert notes == [
        "head.fc (1000 classes in the checkpoint, 3 here)",
        "head.fc_dist (1000 classes in the checkpoint, 3 here)",
    ]
    for name, tensor in model.state_dict().items():
        expected = fresh[name] if name.startswith(("head.fc.", "head.fc_dist.")) else source[name]
        assert torch.equal(tensor, expected), name
    # the same class count loads everything, the classifier included
    same = latvit.create_model(tiny_spec())
    assert load_backbone(same, imagenet_model / "model.safetensors") == []
    assert torch.equal(same.state_dict()["head.fc.weight"], source["head.fc.weight"])
    # a student without the checkpoint's distillation head drops it; one with a head the checkpoint lacks
    # starts it fresh
    plain = latvit.create_model(tiny_spec(distill=False), num_classes=3)
    assert load_backbone(plain, imagenet_model / "model.safetensors") == [
        "head.fc (1000 classes in the checkpoint, 3 here)"
    ]
    no_dist = {k: v for k, v in source.items() if not k.startswith("head.fc_dist.")}
    assert load_backbone(latvit.create_model(tiny_spec()), no_dist) == ["head.fc_dist (not in the checkpoint)"]


def test_cli_fine_tunes_a_1000_class_checkpoint_on_three_classes(imagenet_model, folder, tmp_path, capsys):
    out = tmp_path / "ft"
    spec = tmp_path / "tiny_ft.json"
    tiny_spec().to_json(spec)
    code = cli(
        [
            "train",
            str(spec),
            "--init",
            str(imagenet_model),
            "--data",
            str(folder),
            "--config",
            str(ROOT / "configs" / "finetune.yaml"),
            "--output",
            str(out),
            *QUICK,
            "--set",
            "layer_decay=0.8",
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "re-initialised for 3 classes: head.fc (1000 classes in the checkpoint, 3 here)" in err
    tuned = latvit.create_model(str(out / "best"))
    assert tuned.num_classes == 3 and tuned(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    # a saved 1000-class model as MODEL itself fine-tunes the same way
    code = cli(["train", str(imagenet_model), "--data", str(folder), "--output", str(tmp_path / "ft2"), *QUICK])
    assert code == 0 and latvit.create_model(str(tmp_path / "ft2" / "best")).num_classes == 3


def test_a_backbone_that_does_not_match_is_a_one_line_error(imagenet_model, folder, tmp_path, capsys):
    wider = tmp_path / "wider.json"
    tiny_spec(width=32).to_json(wider)
    code = cli(
        [
            "train",
            str(wider),
            "--init",
            str(imagenet_model),
            "--data",
            str(folder),
            "--output",
            str(tmp_path / "bad"),
            *QUICK,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not match tiny_ft" in err and "shape mismatch" in err and "stages.0.blocks.0.conv.weight" in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(CheckpointError, match="missing key"):  # another spec's keys entirely
        load_backbone(latvit.create_model(tiny_spec()), {"foo.weight": torch.zeros(1)})


def test_layer_decay_groups_lower_blocks_at_lower_learning_rates():
    from timm.optim import create_optimizer_v2

    model = latvit.create_model(tiny_spec(), num_classes=3)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    scale = {
        name: group["lr_scale"]
        for group in optimizer.param_groups
        for name, p in model.named_parameters()
        if any(p is q for q in group["params"])
    }
    assert scale["head.fc.weight"] == 1.0
    stem, down, block = (
        scale[f"{name}.weight"] for name in ("stem.0.conv", "stages.0.blocks.0.conv", "stages.0.blocks.1.mlp.fc1.conv")
    )
    assert stem < down < block < 1.0
