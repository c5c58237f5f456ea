"""Mobile-Former: "Mobile-Former: Bridging MobileNet and Transformer", Chen et al., CVPR 2022.

A MobileNet (Mobile) and a transformer over 3-6 learned global tokens (Former) run in parallel, joined in
every block by two cross-attention bridges. In latvit a Mobile-Former block is four block kinds in a row
(`mf_m2f`, `mf_former`, `mf_mobile` or `mf_mobile_down`, `mf_f2m`) on the (map, tokens) pair that
`mf_tokens` opens and `mf_merge` closes; see `latvit/layers/mobileformer.py`.

Stages follow the feature-map resolution (a stride-2 Mobile block starts a stage); the classifier stem
`mf_merge` is a stage of its own so `features_only` returns the maps at strides 2/4 .. 32 followed by the
(B, 1920, 1, 1)-style pooled feature. Configurations are the official repository's
(github.com/AAboys/MobileFormer `mobile_former.py`), whose README gives the params / MAdds / top-1 quoted
in docs/models/mobileformer.md.
"""

from __future__ import annotations

from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec

PAPER = "arXiv:2108.05895"
BRIDGE_HEADS, FORMER_HEADS, FORMER_FFN = 2, 4, 2.0  # official defaults (the Former keeps its own 4 heads)
MERGE_EXPANSION = 6  # classifier stem: 1x1 conv to 6x the last width

# name: (stem width, lite block (expansion, width, stride), Mobile blocks, tokens, token dim, merge width,
#        groups). A Mobile block is (down, expansion, width, stride): "down" is the dw-1x1-dw-1x1 downsampling
# block (the official DnaBlock3), otherwise the inverted residual (DnaBlock).
CONFIGS = {
    "mobileformer_508m": (
        24,
        (2, 24, 1),
        (
            (True, 6, 40, 2),
            (False, 3, 40, 1),
            (True, 6, 72, 2),
            (False, 3, 72, 1),
            (True, 6, 128, 2),
            (False, 4, 128, 1),
            (False, 6, 176, 1),
            (False, 6, 176, 1),
            (True, 6, 240, 2),
            (False, 6, 240, 1),
            (False, 6, 240, 1),
        ),
        6,
        192,
        1920,
        1,
    ),
    "mobileformer_294m": (
        16,
        (2, 16, 1),
        (
            (True, 6, 24, 2),
            (False, 4, 24, 1),
            (True, 6, 48, 2),
            (False, 4, 48, 1),
            (True, 6, 96, 2),
            (False, 4, 96, 1),
            (False, 6, 128, 1),
            (False, 6, 128, 1),
            (True, 6, 192, 2),
            (False, 6, 192, 1),
            (False, 6, 192, 1),
        ),
        6,
        192,
        1920,
        1,
    ),
    "mobileformer_214m": (
        12,
        (2, 12, 1),
        (
            (True, 6, 20, 2),
            (False, 3, 20, 1),
            (True, 6, 40, 2),
            (False, 4, 40, 1),
            (True, 6, 80, 2),
            (False, 4, 80, 1),
            (False, 6, 112, 1),
            (False, 6, 112, 1),
            (True, 6, 160, 2),
            (False, 6, 160, 1),
            (False, 6, 160, 1),
        ),
        6,
        192,
        1600,
        1,
    ),
    "mobileformer_151m": (
        12,
        (2, 12, 1),
        (
            (True, 6, 16, 2),
            (False, 3, 16, 1),
            (True, 6, 32, 2),
            (False, 3, 32, 1),
            (True, 6, 64, 2),
            (False, 4, 64, 1),
            (False, 6, 88, 1),
            (False, 6, 88, 1),
            (True, 6, 128, 2),
            (False, 6, 128, 1),
            (False, 6, 128, 1),
        ),
        6,
        192,
        1280,
        1,
    ),
    "mobileformer_96m": (
        12,
        (2, 12, 1),
        (
            (True, 6, 16, 2),
            (True, 6, 32, 2),
            (False, 3, 32, 1),
            (True, 6, 64, 2),
            (False, 4, 64, 1),
            (False, 6, 88, 1),
            (True, 6, 128, 2),
            (False, 6, 128, 1),
        ),
        4,
        128,
        1280,
        1,
    ),
    "mobileformer_52m": (
        8,
        (3, 12, 2),
        (
            (False, 3, 12, 1),
            (True, 6, 24, 2),
            (False, 3, 24, 1),
            (True, 6, 48, 2),
            (False, 4, 48, 1),
            (False, 6, 64, 1),
            (True, 6, 96, 2),
            (False, 6, 96, 1),
        ),
        3,
        128,
        1024,
        1,
    ),
    "mobileformer_26m": (
        8,
        (3, 12, 2),
        (
            (False, 3, 12, 1),
            (True, 6, 24, 2),
            (False, 3, 24, 1),
            (True, 6, 48, 2),
            (False, 4, 48, 1),
            (False, 6, 64, 1),
            (True, 6, 96, 2),
            (False, 6, 96, 1),
        ),
        3,
        128,
        1024,
        4,
    ),
}


def mobileformer_spec(
    name: str, stem: int, lite, blocks, tokens: int, dim: int, merge_width: int, groups: int, img_size: int = 224
) -> NetSpec:
    """Mobile-Former spec: stem conv, lite block, token creation, Mobile-Former blocks, merge stage."""
    tok = dict(tokens=tokens, dim=dim)
    lite_e, lite_w, lite_s = lite
    stages = [
        [
            BlockSpec("mf_lite", lite_w, stride=lite_s, expansion=float(lite_e), groups=groups, act="relu6"),
            BlockSpec("mf_tokens", lite_w, **tok),
        ]
    ]
    width = lite_w
    for down, expansion, out, stride in blocks:
        if stride == 2:
            stages.append([])  # a stride-2 Mobile block starts a new stage (a new resolution)
        stages[-1] += [
            BlockSpec("mf_m2f", width, heads=BRIDGE_HEADS, **tok),
            BlockSpec("mf_former", width, heads=FORMER_HEADS, expansion=FORMER_FFN, **tok),
            BlockSpec(
                "mf_mobile_down" if down else "mf_mobile",
                out,
                stride=stride,
                expansion=float(expansion),
                groups=groups,
                **tok,
            ),
            BlockSpec("mf_f2m", out, heads=BRIDGE_HEADS, **tok),
        ]
        width = out
    stages[-1].append(BlockSpec("mf_m2f", width, heads=BRIDGE_HEADS, **tok))  # the tokens see the last map
    stages.append([BlockSpec("mf_merge", merge_width, expansion=float(MERGE_EXPANSION), groups=groups, **tok)])
    return NetSpec(
        name=name,
        stem=(BlockSpec("conv_bn_act", stem, stride=2, act="relu6", bias=False),),
        stages=tuple(StageSpec(tuple(s)) for s in stages),
        head=HeadSpec(),
        img_size=img_size,
        family="mobileformer",
        paper=PAPER,
    )


SPECS = {name: mobileformer_spec(name, *cfg) for name, cfg in CONFIGS.items()}
