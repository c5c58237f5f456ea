"""Official checkpoints: snap-research/EfficientFormer (V1, V2), apple/ml-cvnets and Hugging Face (MobileViT).

No weights can be downloaded here, so each test builds an official-layout state dict from a randomised
latvit model with a small reference of the official module tree written in this file (names, shapes and
configuration tables read from the official model definitions, independent of the converters in
latvit/models), saves it the way the official repositories do, loads it with `latvit.create_model`
and requires identical logits. A wrong rename, a missing reshape or a swapped tensor changes the
logits or fails the strict load.
"""

import pytest
import timm
import torch

import latvit
from latvit.errors import CheckpointError
from latvit.models import efficientformer_v2, mobilevit


class Official:
    """Rows (official key, official shape, latvit key or None) of one official model, in module order."""

    def __init__(self):
        self.rows: list[tuple[str, tuple, str | None]] = []

    def add(self, official: str, shape: tuple, latvit_key: str | None, part: slice = slice(None)):
        """`part`: the rows of the latvit tensor this official tensor holds (a packed qkv split in three)."""
        self.rows.append((official, tuple(shape), latvit_key, part))

    def conv(self, o: str, lk: str, c_out: int, c_in_per_group: int, k: int, bias: bool = True):
        self.add(f"{o}.weight", (c_out, c_in_per_group, k, k), f"{lk}.weight")
        if bias:
            self.add(f"{o}.bias", (c_out,), f"{lk}.bias")

    def bn(self, o: str, lk: str, c: int):
        for name in ("weight", "bias", "running_mean", "running_var"):
            self.add(f"{o}.{name}", (c,), f"{lk}.{name}")
        self.add(f"{o}.num_batches_tracked", (), f"{lk}.num_batches_tracked")

    def linear(self, o: str, lk: str, c_out: int, c_in: int):
        self.add(f"{o}.weight", (c_out, c_in), f"{lk}.weight")
        self.add(f"{o}.bias", (c_out,), f"{lk}.bias")

    def state_dict(self, latvit_sd: dict) -> dict:
        """The official checkpoint holding `latvit_sd`'s values (derived buffers filled like the original)."""
        out = {}
        for key, shape, lk, part in self.rows:
            if lk is None:
                out[key] = torch.zeros(shape, dtype=torch.long)  # attention_bias_idxs: rebuilt on load
            else:
                value = latvit_sd[lk] if part == slice(None) else latvit_sd[lk][part]
                assert value.numel() == torch.Size(shape).numel(), (key, lk, shape)
                out[key] = value.reshape(shape).clone()
        return out


# -- EfficientFormer (V1), from snap-research/EfficientFormer models/efficientformer.py -------------------------
V1_OFFICIAL = {  # EfficientFormer_width, EfficientFormer_depth, vit_num
    "efficientformer_l1": ([48, 96, 224, 448], [3, 2, 6, 4], 1),
    "efficientformer_l3": ([64, 128, 320, 512], [4, 4, 12, 6], 4),
    "efficientformer_l7": ([96, 192, 384, 768], [6, 6, 18, 8], 8),
}


def v1_official(name: str, num_classes: int = 1000) -> Official:
    widths, depths, vit_num = V1_OFFICIAL[name]
    t = Official()
    t.conv("patch_embed.0", "stem.0.conv", widths[0] // 2, 3, 3)
    t.bn("patch_embed.1", "stem.0.bn", widths[0] // 2)
    t.conv("patch_embed.3", "stem.1.conv", widths[0], widths[0] // 2, 3)
    t.bn("patch_embed.4", "stem.1.bn", widths[0])
    for i, (w, depth) in enumerate(zip(widths, depths)):
        offset = 0
        if i > 0:  # Embedding: network.{2i-1}.proj/norm; latvit's block 0
            t.conv(f"network.{2 * i - 1}.proj", f"stages.{i}.blocks.0.conv", w, widths[i - 1], 3)
            t.bn(f"network.{2 * i - 1}.norm", f"stages.{i}.blocks.0.bn", w)
            offset = 1
        vit = vit_num if i == 3 else 0
        index = 0  # position in the official Sequential: a parameter-free Flat() sits before the first Meta3D
        for j in range(depth):
            if j == depth - vit:
                index += 1
            o, lk = f"network.{2 * i}.{index}", f"stages.{i}.blocks.{j + offset}"
            if j >= depth - vit:  # Meta3D on tokens
                t.add(f"{o}.norm1.weight", (w,), f"{lk}.norm1.weight")
                t.add(f"{o}.norm1.bias", (w,), f"{lk}.norm1.bias")
                t.linear(f"{o}.token_mixer.qkv", f"{lk}.token_mixer.qkv", 8 * (32 + 32 + 128), w)
                t.linear(f"{o}.token_mixer.proj", f"{lk}.token_mixer.proj", w, 8 * 128)
                t.add(f"{o}.token_mixer.attention_biases", (8, 49), f"{lk}.token_mixer.attention_biases")
                t.add(f"{o}.token_mixer.attention_bias_idxs", (49, 49), None)
                t.add(f"{o}.norm2.weight", (w,), f"{lk}.norm2.weight")
                t.add(f"{o}.norm2.bias", (w,), f"{lk}.norm2.bias")
                t.linear(f"{o}.mlp.fc1", f"{lk}.mlp.fc1", 4 * w, w)
                t.linear(f"{o}.mlp.fc2", f"{lk}.mlp.fc2", w, 4 * w)
            else:  # Meta4D: pooling mixer (no parameters) + conv MLP with BN
                t.conv(f"{o}.mlp.fc1", f"{lk}.mlp.fc1", 4 * w, w, 1)
                t.conv(f"{o}.mlp.fc2", f"{lk}.mlp.fc2", w, 4 * w, 1)
                t.bn(f"{o}.mlp.norm1", f"{lk}.mlp.norm1", 4 * w)
                t.bn(f"{o}.mlp.norm2", f"{lk}.mlp.norm2", w)
            t.add(f"{o}.layer_scale_1", (w,), f"{lk}.ls1.gamma")
            t.add(f"{o}.layer_scale_2", (w,), f"{lk}.ls2.gamma")
            index += 1
    t.add("norm.weight", (widths[-1],), "head.norm.weight")
    t.add("norm.bias", (widths[-1],), "head.norm.bias")
    t.linear("head", "head.fc", num_classes, widths[-1])
    t.linear("dist_head", "head.fc_dist", num_classes, widths[-1])
    return t


# -- EfficientFormerV2, from snap-research/EfficientFormer models/efficientformer_v2.py ------------------------
V2_OFFICIAL = {  # EfficientFormer_width, EfficientFormer_depth, vit_num, expansion_ratios_*
    "efficientformerv2_s0": ([32, 48, 96, 176], [2, 2, 6, 4], 2, [[4, 4], [4, 4], [4, 3, 3, 3, 4, 4], [4, 3, 3, 4]]),
    "efficientformerv2_s1": (
        [32, 48, 120, 224],
        [3, 3, 9, 6],
        2,
        [[4, 4, 4], [4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4, 4], [4, 4, 3, 3, 4, 4]],
    ),
    "efficientformerv2_s2": (
        [32, 64, 144, 288],
        [4, 4, 12, 8],
        4,
        [[4] * 4, [4] * 4, [4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 3, 3, 3, 3, 4, 4]],
    ),
    "efficientformerv2_l": (
        [40, 80, 192, 384],
        [5, 5, 15, 10],
        6,
        [[4] * 5, [4] * 5, [4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4], [4, 4, 4, 3, 3, 3, 3, 4, 4, 4]],
    ),
}


def v2_official(name: str, num_classes: int = 1000, img: int = 224) -> Official:
    widths, depths, vit_num, ratios = V2_OFFICIAL[name]
    heads, key_dim, d = 8, 32, 128  # Attention4D defaults (attn_ratio 4); the downsampler uses key_dim 16
    t = Official()
    t.conv("patch_embed.0", "stem.0.conv", widths[0] // 2, 3, 3)
    t.bn("patch_embed.1", "stem.0.bn", widths[0] // 2)
    t.conv("patch_embed.3", "stem.1.conv", widths[0], widths[0] // 2, 3)
    t.bn("patch_embed.4", "stem.1.bn", widths[0])
    for i, (w, depth) in enumerate(zip(widths, depths)):
        res = -(-img // 2 ** (i + 2))
        offset = 0
        if i > 0:  # Embedding between stages: network.{2i-1}; latvit's block 0 of stage i
            o, lk, w_in, offset = f"network.{2 * i - 1}", f"stages.{i}.blocks.0", widths[i - 1], 1
            if i < 3:
                t.conv(f"{o}.proj", f"{lk}.conv", w, w_in, 3)
                t.bn(f"{o}.norm", f"{lk}.bn", w)
            else:  # asub: Attention4DDownsample + Conv-BN, resolution of the previous stage
                r_in = -(-img // 2 ** (i + 1))
                r_out = -(-r_in // 2)
                a, la = f"{o}.attn", f"{lk}.attn"
                t.conv(f"{a}.q.local.0", f"{la}.q.local", w_in, 1, 3)
                t.conv(f"{a}.q.proj.0", f"{la}.q.proj.conv", heads * 16, w_in, 1)
                t.bn(f"{a}.q.proj.1", f"{la}.q.proj.bn", heads * 16)
                t.conv(f"{a}.k.0", f"{la}.k.conv", heads * 16, w_in, 1)
                t.bn(f"{a}.k.1", f"{la}.k.bn", heads * 16)
                t.conv(f"{a}.v.0", f"{la}.v.conv", heads * 64, w_in, 1)
                t.bn(f"{a}.v.1", f"{la}.v.bn", heads * 64)
                t.conv(f"{a}.v_local.0", f"{la}.v_local.conv", heads * 64, 1, 3)
                t.bn(f"{a}.v_local.1", f"{la}.v_local.bn", heads * 64)
                t.conv(f"{a}.proj.1", f"{la}.proj.conv", w, heads * 64, 1)
                t.bn(f"{a}.proj.2", f"{la}.proj.bn", w)
                t.add(f"{a}.attention_biases", (heads, r_in * r_in), f"{la}.attention_biases")
                t.add(f"{a}.attention_bias_idxs", (r_out * r_out, r_in * r_in), None)
                t.conv(f"{o}.conv", f"{lk}.conv.conv", w, w_in, 3)
                t.bn(f"{o}.bn", f"{lk}.conv.bn", w)
        for j in range(depth):
            o, lk = f"network.{2 * i}.{j}", f"stages.{i}.blocks.{j + offset}"
            if i >= 2 and j > depth - 1 - vit_num:  # AttnFFN
                stride = 2 if i == 2 else 1
                r = -(-res // stride)
                m, lm = f"{o}.token_mixer", f"{lk}.token_mixer"
                if stride == 2:
                    t.conv(f"{m}.stride_conv.0", f"{lm}.stride_conv.conv", w, 1, 3)
                    t.bn(f"{m}.stride_conv.1", f"{lm}.stride_conv.bn", w)
                for qkv, c in (("q", heads * key_dim), ("k", heads * key_dim), ("v", heads * d)):
                    t.conv(f"{m}.{qkv}.0", f"{lm}.{qkv}.conv", c, w, 1)
                    t.bn(f"{m}.{qkv}.1", f"{lm}.{qkv}.bn", c)
                t.conv(f"{m}.v_local.0", f"{lm}.v_local.conv", heads * d, 1, 3)
                t.bn(f"{m}.v_local.1", f"{lm}.v_local.bn", heads * d)
                t.conv(f"{m}.talking_head1", f"{lm}.talking_head1", heads, heads, 1)
                t.conv(f"{m}.talking_head2", f"{lm}.talking_head2", heads, heads, 1)
                t.conv(f"{m}.proj.1", f"{lm}.proj.conv", w, heads * d, 1)
                t.bn(f"{m}.proj.2", f"{lm}.proj.bn", w)
                t.add(f"{m}.attention_biases", (heads, r * r), f"{lm}.attention_biases")
                t.add(f"{m}.attention_bias_idxs", (r * r, r * r), None)
                t.add(f"{o}.layer_scale_1", (w, 1, 1), f"{lk}.ls1.gamma")
            hidden = int(w * ratios[i][j])
            t.conv(f"{o}.mlp.fc1", f"{lk}.mlp.fc1.conv", hidden, w, 1)
            t.conv(f"{o}.mlp.fc2", f"{lk}.mlp.fc2.conv", w, hidden, 1)
            t.conv(f"{o}.mlp.mid", f"{lk}.mlp.mid.conv", hidden, 1, 3)
            t.bn(f"{o}.mlp.mid_norm", f"{lk}.mlp.mid.bn", hidden)
            t.bn(f"{o}.mlp.norm1", f"{lk}.mlp.fc1.bn", hidden)
            t.bn(f"{o}.mlp.norm2", f"{lk}.mlp.fc2.bn", w)
            t.add(f"{o}.layer_scale_2", (w, 1, 1), f"{lk}.ls2.gamma")
    t.bn("norm", "head.norm", widths[-1])
    t.linear("head", "head.fc", num_classes, widths[-1])
    t.linear("dist_head", "head.fc_dist", num_classes, widths[-1])
    return t


# -- MobileViT, from apple/ml-cvnets cvnets/models/classification/{mobilevit,config/mobilevit}.py --------------
MOBILEVIT_OFFICIAL = {  # mode: mv2_exp_mult, layer1-2 (out, num_blocks), layer3-5 (out, transformer dim, ffn, blocks)
    "mobilevit_xxs": (2, [(16, 1), (24, 3)], [(48, 64, 128, 2), (64, 80, 160, 4), (80, 96, 192, 3)]),
    "mobilevit_xs": (4, [(32, 1), (48, 3)], [(64, 96, 192, 2), (80, 120, 240, 4), (96, 144, 288, 3)]),
    "mobilevit_s": (4, [(32, 1), (64, 3)], [(96, 144, 288, 2), (128, 192, 384, 4), (160, 240, 480, 3)]),
}


def mobilevit_official(name: str, num_classes: int = 1000) -> Official:
    exp, mv2_layers, vit_layers = MOBILEVIT_OFFICIAL[name]
    t = Official()

    def conv_layer(o, lk, c_out, c_in_per_group, k, norm=True):  # ConvLayer: block.conv (no bias), block.norm
        t.conv(f"{o}.block.conv", f"{lk}.conv" if norm else lk, c_out, c_in_per_group, k, bias=False)
        if norm:
            t.bn(f"{o}.block.norm", f"{lk}.bn", c_out)

    def inverted_residual(o, lk, c_in, c_out):
        hidden = c_in * exp  # make_divisible(c_in * exp, 8) is exact for every MobileViT width
        conv_layer(f"{o}.block.exp_1x1", f"{lk}.conv1_1x1", hidden, c_in, 1)
        conv_layer(f"{o}.block.conv_3x3", f"{lk}.conv2_kxk", hidden, 1, 3)
        conv_layer(f"{o}.block.red_1x1", f"{lk}.conv3_1x1", c_out, hidden, 1)

    conv_layer("conv_1", "stem.0", 16, 3, 3)
    c_in = 16
    for i, (c_out, n) in enumerate(mv2_layers):
        for j in range(n):
            inverted_residual(f"layer_{i + 1}.{j}", f"stages.{i}.blocks.{j}", c_in, c_out)
            c_in = c_out
    for i, (c_out, dim, ffn, depth) in enumerate(vit_layers, start=2):
        inverted_residual(f"layer_{i + 1}.0", f"stages.{i}.blocks.0", c_in, c_out)
        o, lk = f"layer_{i + 1}.1", f"stages.{i}.blocks.1"
        conv_layer(f"{o}.local_rep.conv_3x3", f"{lk}.conv_kxk", c_out, c_out, 3)
        conv_layer(f"{o}.local_rep.conv_1x1", f"{lk}.conv_1x1", dim, c_out, 1, norm=False)
        for b in range(depth):
            g, lg = f"{o}.global_rep.{b}", f"{lk}.transformer.{b}"
            t.add(f"{g}.pre_norm_mha.0.weight", (dim,), f"{lg}.norm1.weight")
            t.add(f"{g}.pre_norm_mha.0.bias", (dim,), f"{lg}.norm1.bias")
            t.linear(f"{g}.pre_norm_mha.1.qkv_proj", f"{lg}.attn.qkv", 3 * dim, dim)
            t.linear(f"{g}.pre_norm_mha.1.out_proj", f"{lg}.attn.proj", dim, dim)
            t.add(f"{g}.pre_norm_ffn.0.weight", (dim,), f"{lg}.norm2.weight")
            t.add(f"{g}.pre_norm_ffn.0.bias", (dim,), f"{lg}.norm2.bias")
            t.linear(f"{g}.pre_norm_ffn.1", f"{lg}.mlp.fc1", ffn, dim)
            t.linear(f"{g}.pre_norm_ffn.4", f"{lg}.mlp.fc2", dim, ffn)
        t.add(f"{o}.global_rep.{depth}.weight", (dim,), f"{lk}.norm.weight")
        t.add(f"{o}.global_rep.{depth}.bias", (dim,), f"{lk}.norm.bias")
        conv_layer(f"{o}.conv_proj", f"{lk}.conv_proj", c_out, dim, 1)
        conv_layer(f"{o}.fusion", f"{lk}.conv_fusion", c_out, 2 * c_out, 3)
        c_in = c_out
    exp_channels = min(4 * c_in, 960)  # last_layer_exp_factor
    conv_layer("conv_1x1_exp", "head.conv", exp_channels, c_in, 1)
    t.linear("classifier.fc", "head.fc", num_classes, exp_channels)
    return t


def mobilevit_hf(name: str, num_classes: int = 1000) -> Official:
    """Hugging Face transformers' MobileViTForImageClassification (hub: apple/mobilevit-*), same weights."""
    exp, mv2_layers, vit_layers = MOBILEVIT_OFFICIAL[name]
    t = Official()

    def conv_layer(o, lk, c_out, c_in_per_group, k, norm=True):  # MobileViTConvLayer: convolution, normalization
        t.conv(f"{o}.convolution", f"{lk}.conv" if norm else lk, c_out, c_in_per_group, k, bias=False)
        if norm:
            t.bn(f"{o}.normalization", f"{lk}.bn", c_out)

    def inverted_residual(o, lk, c_in, c_out):
        hidden = c_in * exp
        conv_layer(f"{o}.expand_1x1", f"{lk}.conv1_1x1", hidden, c_in, 1)
        conv_layer(f"{o}.conv_3x3", f"{lk}.conv2_kxk", hidden, 1, 3)
        conv_layer(f"{o}.reduce_1x1", f"{lk}.conv3_1x1", c_out, hidden, 1)

    conv_layer("mobilevit.conv_stem", "stem.0", 16, 3, 3)
    c_in = 16
    for i, (c_out, n) in enumerate(mv2_layers):
        for j in range(n):
            inverted_residual(f"mobilevit.encoder.layer.{i}.layer.{j}", f"stages.{i}.blocks.{j}", c_in, c_out)
            c_in = c_out
    for i, (c_out, dim, ffn, depth) in enumerate(vit_layers, start=2):
        o, lk = f"mobilevit.encoder.layer.{i}", f"stages.{i}.blocks.1"
        inverted_residual(f"{o}.downsampling_layer", f"stages.{i}.blocks.0", c_in, c_out)
        conv_layer(f"{o}.conv_kxk", f"{lk}.conv_kxk", c_out, c_out, 3)
        conv_layer(f"{o}.conv_1x1", f"{lk}.conv_1x1", dim, c_out, 1, norm=False)
        for b in range(depth):
            g, lg = f"{o}.transformer.layer.{b}", f"{lk}.transformer.{b}"
            for n, proj in enumerate(("query", "key", "value")):
                part = slice(n * dim, (n + 1) * dim)
                t.add(f"{g}.attention.attention.{proj}.weight", (dim, dim), f"{lg}.attn.qkv.weight", part)
                t.add(f"{g}.attention.attention.{proj}.bias", (dim,), f"{lg}.attn.qkv.bias", part)
            t.linear(f"{g}.attention.output.dense", f"{lg}.attn.proj", dim, dim)
            t.linear(f"{g}.intermediate.dense", f"{lg}.mlp.fc1", ffn, dim)
            t.linear(f"{g}.output.dense", f"{lg}.mlp.fc2", dim, ffn)
            for hf_norm, norm in (("layernorm_before", "norm1"), ("layernorm_after", "norm2")):
                t.add(f"{g}.{hf_norm}.weight", (dim,), f"{lg}.{norm}.weight")
                t.add(f"{g}.{hf_norm}.bias", (dim,), f"{lg}.{norm}.bias")
        t.add(f"{o}.layernorm.weight", (dim,), f"{lk}.norm.weight")
        t.add(f"{o}.layernorm.bias", (dim,), f"{lk}.norm.bias")
        conv_layer(f"{o}.conv_projection", f"{lk}.conv_proj", c_out, dim, 1)
        conv_layer(f"{o}.fusion", f"{lk}.conv_fusion", c_out, 2 * c_out, 3)
        c_in = c_out
    exp_channels = min(4 * c_in, 960)
    conv_layer("mobilevit.conv_1x1_exp", "head.conv", exp_channels, c_in, 1)
    t.linear("classifier", "head.fc", num_classes, exp_channels)
    return t


REFERENCES = {
    **{n: v1_official for n in V1_OFFICIAL},
    **{n: v2_official for n in V2_OFFICIAL},
    **{n: mobilevit_official for n in MOBILEVIT_OFFICIAL},
}


def official_checkpoint(name: str, randomize, num_classes: int = 1000, layout=None):
    """(randomised latvit model, the same weights as the official repository would store them)."""
    model = randomize(latvit.create_model(name, num_classes=num_classes)).eval()
    reference = (layout or REFERENCES[name])(name, num_classes)
    own = model.state_dict()
    mapped = [lk for _, _, lk, part in reference.rows if lk is not None and part == slice(None)]
    split = {lk: own[lk].shape[0] for _, _, lk, part in reference.rows if part != slice(None)}
    assert sorted(mapped + list(split)) == sorted(own), "reference does not cover every latvit tensor exactly once"
    for lk, n in split.items():  # the three parts of a split qkv cover it, in order
        parts = [(p.start, p.stop) for _, _, k, p in reference.rows if k == lk]
        assert parts == [(0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n)], lk
    return model, reference.state_dict(own)


@pytest.mark.parametrize("name", [n for n in REFERENCES if n != "efficientformer_l3"])  # l3: nothing l1/l7 lack
def test_official_checkpoint_loads_every_tensor_in_place(name, randomize):
    model, official = official_checkpoint(name, randomize)
    loaded = latvit.create_model(name, checkpoint=official).state_dict()
    wrong = [k for k, v in model.state_dict().items() if not torch.equal(loaded[k], v)]
    assert not wrong, f"tensors loaded into the wrong place: {wrong[:5]}"


@pytest.mark.parametrize("name", ["efficientformerv2_s0", "mobilevit_xxs"])
def test_official_checkpoint_file_gives_identical_logits(name, tmp_path, randomize):
    model, official = official_checkpoint(name, randomize)
    # EfficientFormer releases wrap the weights under "model"; ml-cvnets saves the bare state dict
    path = tmp_path / ("official.pth" if name in V2_OFFICIAL else "official.pt")
    torch.save({"model": official, "epoch": 300} if name in V2_OFFICIAL else official, path)
    loaded = latvit.create_model(name, checkpoint=path).eval()
    x = torch.rand(1, 3, model.img_size, model.img_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_hugging_face_mobilevit_checkpoint(tmp_path, randomize):
    from safetensors.torch import save_file

    model, hf = official_checkpoint("mobilevit_xxs", randomize, layout=mobilevit_hf)
    assert mobilevit.is_official(hf)
    save_file(hf, str(tmp_path / "model.safetensors"))  # as the hub ships it
    loaded = latvit.create_model("mobilevit_xxs", checkpoint=tmp_path / "model.safetensors").eval()
    wrong = [k for k, v in model.state_dict().items() if not torch.equal(loaded.state_dict()[k], v)]
    assert not wrong, f"tensors loaded into the wrong place: {wrong[:5]}"
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", ["efficientformerv2_s0", "mobilevit_xxs"])
def test_layouts_are_told_apart(name, randomize):
    family = efficientformer_v2 if name in V2_OFFICIAL else mobilevit
    model, official = official_checkpoint(name, randomize)
    assert family.is_official(official)
    converted = family.official_to_timm(official)
    assert not family.is_official(converted)
    assert not family.is_official(model.state_dict())
    # the converted keys are timm's: a timm model of the same variant accepts them strictly
    reference = timm.create_model(name)
    reference.load_state_dict({k: v for k, v in converted.items() if not k.endswith("attention_bias_idxs")})


def test_official_checkpoint_at_another_input_size(randomize):
    _, official = official_checkpoint("efficientformerv2_s0", randomize)
    model = latvit.create_model("efficientformerv2_s0", img_size=256, checkpoint=official).eval()
    assert model.stages[3].blocks[0].attn.attention_biases.shape == (8, 16 * 16)  # resized from 14 x 14
    assert torch.isfinite(model(torch.randn(1, 3, 256, 256))).all()


def test_official_checkpoint_with_other_classes(randomize):
    _, official = official_checkpoint("mobilevit_xxs", randomize, num_classes=10)
    assert latvit.create_model("mobilevit_xxs", num_classes=10, checkpoint=official).num_classes == 10
    with pytest.raises(CheckpointError, match=r"head.fc.weight: checkpoint \(10, 320\) vs model \(1000, 320\)"):
        latvit.create_model("mobilevit_xxs", checkpoint=official)


def test_official_checkpoint_errors_name_latvit_keys(randomize):
    _, official = official_checkpoint("efficientformerv2_s0", randomize)
    official["network.0.0.extra.weight"] = torch.zeros(1)
    del official["network.0.0.mlp.fc1.weight"]
    with pytest.raises(
        CheckpointError,
        match=r"1 missing key\(s\): stages.0.blocks.0.mlp.fc1.conv.weight; "
        r"1 unexpected key\(s\): stages.0.blocks.0.extra.weight",
    ):
        latvit.create_model("efficientformerv2_s0", checkpoint=official)
    # the checkpoint of another variant: every mismatch is listed
    _, s1 = official_checkpoint("efficientformerv2_s1", randomize)
    with pytest.raises(CheckpointError, match=r"does not match efficientformerv2_s0: .*missing.*unexpected"):
        latvit.create_model("efficientformerv2_s0", checkpoint=s1)


def test_cli_convert_official_checkpoint(tmp_path, randomize, capsys):
    from latvit.cli import main

    model, official = official_checkpoint("mobilevit_xxs", randomize)
    torch.save(official, tmp_path / "mobilevit_xxs.pt")
    assert main(["convert", "mobilevit_xxs", str(tmp_path / "mobilevit_xxs.pt"), str(tmp_path / "xxs")]) == 0
    assert "wrote" in capsys.readouterr().out
    reloaded = latvit.create_model(tmp_path / "xxs").state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in model.state_dict().items())
    # the wrong variant: one line naming the problem, exit 2
    assert main(["convert", "mobilevit_xs", str(tmp_path / "mobilevit_xxs.pt"), str(tmp_path / "xs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latvit: error: ") and "does not match mobilevit_xs" in err and err.count("\n") == 1
    assert not (tmp_path / "xs").exists()
