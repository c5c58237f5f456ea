"""Training and validation: the seeds' recipe (AdamW, warm-up + cosine, label smoothing, EMA, multi-scale
sampling, hard distillation), exact resume, DDP under torchrun. See docs/train.md.

    from latvit.train import make_config, train, validate
    train(make_config(model="efficientformerv2_s0", data="fashion-mnist", img_size=64, epochs=2))
    validate("runs/efficientformerv2_s0-fashion-mnist/best", "fashion-mnist")
"""

from latvit.data import DataError
from latvit.train.config import ConfigError, TrainConfig, load_config, make_config, parse_set, read_config_file
from latvit.train.engine import train
from latvit.train.evaluate import evaluate, validate

__all__ = [
    "ConfigError",
    "DataError",
    "TrainConfig",
    "evaluate",
    "load_config",
    "make_config",
    "parse_set",
    "read_config_file",
    "train",
    "validate",
]
