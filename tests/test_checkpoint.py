"""Checkpoints: save/load round trip, file formats, strict errors, attention-bias resizing."""

import pytest
import timm
import torch
from safetensors.torch import save_file

import latvit
from latvit.errors import CheckpointError


def test_save_and_load_directory(tmp_path, randomize):
    model = randomize(latvit.create_model("efficientformerv2_s0", num_classes=10)).eval()
    latvit.save(model, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["model.safetensors", "spec.json"]
    loaded = latvit.create_model(tmp_path / "run").eval()
    assert loaded.num_classes == 10
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_pth_wrappers(tmp_path, wrapper, randomize):
    reference = randomize(timm.create_model("mobilevit_xxs", num_classes=4)).eval()
    sd = reference.state_dict()
    torch.save(sd if wrapper is None else {wrapper: sd, "epoch": 3}, tmp_path / "ckpt.pth")
    model = latvit.create_model("mobilevit_xxs", num_classes=4, checkpoint=tmp_path / "ckpt.pth").eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_safetensors_timm_layout(tmp_path, randomize):
    reference = randomize(timm.create_model("efficientformer_l1")).eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = latvit.create_model("efficientformer_l1", checkpoint=tmp_path / "w.safetensors").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max() <= 1e-5


def test_extra_and_missing_keys_are_listed():
    sd = timm.create_model("efficientformerv2_s0").state_dict()
    sd["stages.0.blocks.0.extra.weight"] = torch.zeros(1)
    del sd["head.weight"]
    with pytest.raises(
        CheckpointError,
        match=r"1 missing key\(s\): head.fc.weight.*1 unexpected key\(s\): stages.0.blocks.0.extra.weight",
    ):
        latvit.create_model("efficientformerv2_s0", checkpoint=sd)


def test_wrong_shapes_are_listed():
    sd = timm.create_model("mobilevit_xxs").state_dict()
    with pytest.raises(
        CheckpointError, match=r"shape mismatch.*head.fc.weight: checkpoint \(1000, 320\) vs model \(10, 320\)"
    ):
        latvit.create_model("mobilevit_xxs", num_classes=10, checkpoint=sd)


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        latvit.create_model("mobilevit_xxs", checkpoint=tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        latvit.create_model("mobilevit_xxs", checkpoint=tmp_path / "junk.pth")
    (tmp_path / "empty.pth").write_bytes(b"")  # torch raises EOFError(''): no message line to quote
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*empty.pth: EOFError; is it a complete"):
        latvit.create_model("mobilevit_xxs", checkpoint=tmp_path / "empty.pth")
    torch.save({"model": [1, 2, 3]}, tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        latvit.create_model("mobilevit_xxs", checkpoint=tmp_path / "list.pth")


def test_attention_biases_resized_for_other_input_size(randomize):
    reference = randomize(timm.create_model("efficientformerv2_s0")).eval()
    model = latvit.create_model("efficientformerv2_s0", img_size=256, checkpoint=reference.state_dict()).eval()
    biases = {n: p for n, p in model.named_parameters() if n.endswith("attention_biases")}
    assert biases and all(p.shape[1] in (8 * 8, 16 * 16) for p in biases.values())  # 1/32 and 1/16 grids at 256
    out = model(torch.randn(1, 3, 256, 256))
    assert torch.isfinite(out).all()
    # weights other than the biases are loaded unchanged
    ref_sd = reference.state_dict()
    assert torch.equal(model.state_dict()["stem.0.conv.weight"], ref_sd["stem.conv1.conv.weight"])


def test_saved_model_dir_without_spec(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(latvit.LatvitError, match="spec.json is missing"):
        latvit.create_model(tmp_path / "empty")
