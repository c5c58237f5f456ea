"""Published ImageNet-1k top-1 accuracy (%) of the models latvit builds, each with its source.

Used by `latvit models` and by `latvit bench --plot` (accuracy against latency measured here). These are
the papers' or timm's numbers for their trained weights, not accuracies measured by latvit.
"""

TIMM_RESULTS = "timm results-imagenet.csv"

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
}
