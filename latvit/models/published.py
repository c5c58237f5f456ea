"""Published ImageNet-1k top-1 accuracy (%) of the models latvit builds, each with its source.

Used by `latvit models`, `latvit bench --plot` and `latvit report` (accuracy against latency measured
here). These are the papers' or timm's numbers for their trained weights, not accuracies measured by latvit.
"""

TIMM_RESULTS = "timm results-imagenet.csv"


def _timm(weights: str, img_size: int, paper: str) -> str:
    """The source of a top-1 taken from timm's results table: which weights, at which size, whose paper."""
    return f"{TIMM_RESULTS}: {weights} at {img_size} px ({paper})"


PUBLISHED_TOP1: dict[str, tuple[float, str]] = {
    "efficientformer_l1": (79.2, "EfficientFormer paper, Table 1 (distilled)"),
    "efficientformer_l3": (82.4, "EfficientFormer paper, Table 1 (distilled)"),
    "efficientformer_l7": (83.3, "EfficientFormer paper, Table 1 (distilled)"),
    "efficientformerv2_s0": (75.7, "EfficientFormerV2 paper, Table 2 (distilled)"),
    "efficientformerv2_s1": (79.0, "EfficientFormerV2 paper, Table 2 (distilled)"),
    "efficientformerv2_s2": (81.6, "EfficientFormerV2 paper, Table 2 (distilled)"),
    "efficientformerv2_l": (83.3, "EfficientFormerV2 paper, Table 2 (distilled)"),
    "mobilevit_xxs": (69.0, "MobileViT paper, Table 1"),
    "mobilevit_xs": (74.8, "MobileViT paper, Table 1"),
    "mobilevit_s": (78.4, "MobileViT paper, Table 1"),
    # TRT-ViT models are built from reconstructed widths (docs/models/trtvit.md): these are the paper's
    # numbers for its own widths, not a claim about latvit's reconstruction
    "trtvit_c": (82.7, "TRT-ViT paper, abstract: 82.7% top-1 (variant C; the seed names no variant)"),
    "refined_resnet50": (79.3, "TRT-ViT paper, Sec. 2.1 / Table 2: ResNet50 79.0% + 0.3%"),
    "mobileformer_508m": (79.3, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_294m": (77.9, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_214m": (76.7, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_151m": (75.2, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_96m": (72.8, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_52m": (68.7, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mobileformer_26m": (64.0, "official Mobile-Former README (github.com/AAboys/MobileFormer), ImageNet-1k, 224"),
    "mixformer_b0": (76.5, "PaddleClas MixFormer docs, reference top-1 (paper's ImageNet-1k table), 224"),
    "mixformer_b1": (78.9, "PaddleClas MixFormer docs, reference top-1 (paper's ImageNet-1k table), 224"),
    "mixformer_b2": (80.0, "PaddleClas MixFormer docs, reference top-1 (paper's ImageNet-1k table), 224"),
    "mixformer_b3": (81.7, "PaddleClas MixFormer docs, reference top-1 (paper's ImageNet-1k table), 224"),
    "mixformer_b4": (83.0, "PaddleClas MixFormer docs, reference top-1 (paper's ImageNet-1k table), 224"),
    # timm baselines measured by `latvit bench` as timm:NAME
    "timm:resnet50": (76.1, "torchvision ResNet-50 v1 weights (He et al. 2016 recipe)"),
    "timm:mobilenetv2_100": (72.0, "MobileNetV2 paper, Table 4"),
    "timm:deit_tiny_patch16_224": (72.2, "DeiT paper, Table 5"),
    "timm:levit_128s": (76.6, "LeViT paper, Table 2 (distilled)"),
    "timm:poolformer_s12": (77.2, "PoolFormer paper, Table 2"),
    "timm:edgenext_xx_small": (71.2, "EdgeNeXt paper, Table 2"),
    "timm:nextvit_small": (82.5, "Next-ViT paper, Table 4"),
    "timm:efficientvit_m0": (63.2, "EfficientViT (Liu et al. 2023) paper, Table 1"),
    "timm:efficientvit_b1": (79.4, "EfficientViT (Cai et al. 2023) paper, Table 2"),
    # today's frontier (`latvit bench --models frontier`): top-1 of timm's ImageNet-1k weights at the input
    # size latvit bench measures (each model's default), from timm's results table; the paper beside it
    "timm:fastvit_t8": (77.2, _timm("fastvit_t8.apple_dist_in1k", 256, "FastViT arXiv:2303.14189, distilled")),
    "timm:fastvit_t12": (80.4, _timm("fastvit_t12.apple_dist_in1k", 256, "FastViT arXiv:2303.14189, distilled")),
    "timm:repvit_m0_9": (79.1, _timm("repvit_m0_9.dist_450e_in1k", 224, "RepViT arXiv:2307.09283, distilled")),
    "timm:repvit_m1_0": (80.4, _timm("repvit_m1_0.dist_450e_in1k", 224, "RepViT arXiv:2307.09283, distilled")),
    "timm:efficientvit_b0": (
        71.4,
        _timm("efficientvit_b0.r224_in1k", 224, "EfficientViT (Cai et al.) arXiv:2205.14756"),
    ),
    "timm:efficientvit_m2": (
        70.8,
        _timm("efficientvit_m2.r224_in1k", 224, "EfficientViT (Liu et al.) arXiv:2305.07027"),
    ),
    "timm:efficientvit_m4": (
        74.3,
        _timm("efficientvit_m4.r224_in1k", 224, "EfficientViT (Liu et al.) arXiv:2305.07027"),
    ),
    "timm:mobilenetv4_conv_small": (
        73.8,
        _timm("mobilenetv4_conv_small.e2400_r224_in1k", 224, "MobileNetV4 arXiv:2404.10518"),
    ),
    "timm:mobilenetv4_conv_medium": (
        79.9,
        _timm("mobilenetv4_conv_medium.e500_r256_in1k", 256, "MobileNetV4 arXiv:2404.10518"),
    ),
    "timm:mobilenetv4_hybrid_medium": (
        81.5,
        _timm("mobilenetv4_hybrid_medium.ix_e550_r256_in1k", 256, "MobileNetV4 arXiv:2404.10518, IN-1k only"),
    ),
    "timm:shvit_s1": (72.8, _timm("shvit_s1.in1k", 224, "SHViT arXiv:2401.16456")),
    "timm:shvit_s4": (79.4, _timm("shvit_s4.in1k", 256, "SHViT arXiv:2401.16456")),
    "timm:swiftformer_xs": (75.6, _timm("swiftformer_xs.dist_in1k", 224, "SwiftFormer arXiv:2303.15446, distilled")),
    "timm:swiftformer_s": (78.5, _timm("swiftformer_s.dist_in1k", 224, "SwiftFormer arXiv:2303.15446, distilled")),
    "timm:starnet_s1": (73.5, _timm("starnet_s1.in1k", 224, "StarNet arXiv:2403.19967")),
    "timm:starnet_s4": (78.8, _timm("starnet_s4.in1k", 224, "StarNet arXiv:2403.19967")),
    "timm:mobileone_s0": (71.4, _timm("mobileone_s0.apple_in1k", 224, "MobileOne arXiv:2206.04040")),
    "timm:mobileone_s1": (75.8, _timm("mobileone_s1.apple_in1k", 224, "MobileOne arXiv:2206.04040")),
    "timm:tiny_vit_5m_224.in1k": (
        79.2,
        _timm("tiny_vit_5m_224.in1k", 224, "TinyViT arXiv:2207.10666; ImageNet-1k only"),
    ),
    "timm:edgenext_x_small": (74.9, _timm("edgenext_x_small.in1k", 256, "EdgeNeXt arXiv:2206.10589")),
}
