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
