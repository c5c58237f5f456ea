"""A training run's configuration: one flat dataclass, read from YAML/JSON, overridden from the CLI,
validated in one place and saved next to the run.

Defaults are the seeds' recipe (MobileViT: AdamW, lr 0.002 warmed up from 0.0002 and cosine-decayed to
0.0002, weight decay 0.01, label smoothing 0.1, random-resized-crop + flip, EMA of the weights for
evaluation; EfficientFormer/LeViT: hard distillation through a second head). Every value can be
overridden; `lr` is the peak learning rate for the *global* batch (batch_size x processes), not rescaled.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from latvit.errors import LatvitError, first_line
from latvit.models import WEIGHTS_FILE


class ConfigError(LatvitError, ValueError):
    """A training configuration has an unknown key or a bad value."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; saved as `config.yaml` in the output directory."""

    model: str = ""  # anything latvit.create_model accepts: name, spec JSON, saved-model directory
    init: str | None = None  # start from these weights (checkpoint file or saved-model dir): the backbone loads
    #                          strictly, a classifier for another class count starts fresh (fine-tuning)
    data: str = ""  # "fashion-mnist", "synthetic", or an ImageFolder root with train/ and val/ (or idx .gz files)
    output: str = ""  # run directory; default runs/<model>-<data>
    # schedule and optimiser
    epochs: int = 300
    batch_size: int = 128  # per process, at img_size (multi-scale batches are scaled by area)
    lr: float = 2e-3
    warmup_lr: float = 2e-4
    min_lr: float = 2e-4
    warmup_epochs: float = 5.0
    optimizer: str = "adamw"  # any timm.optim optimizer name
    fused_optimizer: bool = True  # adam/adamw: torch's fused kernel (one pass over all tensors, CPU and CUDA)
    weight_decay: float = 0.01  # not applied to biases, norms and attention biases (timm's param groups)
    layer_decay: float | None = None  # layer-wise lr decay (timm's, as in BEiT): the classifier gets lr, each
    #                                   block below it lr x layer_decay^depth; e.g. 0.75 to fine-tune; null: off
    clip_grad: float | None = 5.0  # max global grad norm; null disables
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    ema: bool = True
    ema_decay: float = 0.9995  # ml-cvnets' EMA momentum 0.0005
    ema_warmup: bool = True  # timm's warm-up: decay min(ema_decay, 1 - (1 + step)^-2/3), else short runs
    #                          evaluate mostly the initial weights (0.9995^1000 = 0.6 of them after 1000 steps)
    # input and augmentation
    img_size: int | None = None  # default: the model's
    crop_scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    hflip: float = 0.5
    color_jitter: float = 0.0  # timm ColorJitter strength; 0 disables (the seeds use none)
    crop_pct: float = 0.875  # evaluation: resize to img_size / crop_pct, then centre-crop
    randaugment: str | None = None  # timm RandAugment config string, e.g. "rand-m9-mstd0.5-inc1"
    mixup: float = 0.0  # Beta(alpha) of mixup; 0 disables
    cutmix: float = 0.0  # Beta(alpha) of cutmix; 0 disables
    multiscale: bool = False  # MobileViT's multi-scale sampler
    multiscale_sizes: tuple[int, ...] = ()  # default with multiscale: img_size x (0.625, 0.75, 1, 1.125, 1.25)
    # distillation (hard, through the distillation head as in LeViT / EfficientFormer)
    teacher: str | None = None  # latvit model or "timm:NAME"
    teacher_checkpoint: str | None = None
    distill_alpha: float = 0.5  # loss = (1 - a) * CE(cls, y) + a * CE(dist, argmax teacher)
    # data options
    num_workers: int | str = "auto"  # loader processes per training process; auto: from the cores (docs/train.md)
    train_subset: int | None = None  # use only the first N training images (quick runs)
    val_subset: int | None = None
    synthetic_classes: int = 4
    synthetic_train: int = 512
    synthetic_val: int = 128
    # run control
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N optimiser steps; 0 = only at epoch ends
    eval_batch_size: int = 256
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool | str = True  # mixed precision: true = on CUDA (bf16 where supported, else fp16 with loss
    #                         scaling), off on CPU; "bf16" on any device (CPU autocast too); "fp16" (CUDA); false
    channels_last: bool | str = "auto"  # NHWC weights and inputs; auto: on CPU (measured faster, docs/train.md),
    #                                     off on CUDA (not measured yet)
    compile: bool = False  # torch.compile the training model (costs minutes of compilation up front)
    pin_memory: bool = True  # page-locked batches and non-blocking copies to a CUDA device
    threads: int = 0  # torch CPU threads per process; 0 = auto: the process's cores minus its loader workers
    log_every: int = 20  # read the loss back (progress bar, TensorBoard, non-finite check) every N steps
    progress: bool = True  # rich progress bar on rank 0
    tensorboard: bool = True  # write TensorBoard logs when tensorboard is installed

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = get_type_hints(TrainConfig)
DEVICES = ("auto", "cpu", "cuda")


# the words a typed key accepts besides its type
WORDS = {"num_workers": ("auto",), "amp": ("bf16", "fp16"), "channels_last": ("auto",)}


def _coerce(name: str, value: Any) -> Any:
    """Check `value` against the field's type (ints are accepted for floats, lists for tuples)."""
    hint = str(_HINTS[name])
    if name in WORDS and isinstance(value, str):
        if value not in WORDS[name]:
            kind = "a number" if "int" in hint else "true or false"
            raise ConfigError(f"config.{name}: expected {kind} or {' / '.join(WORDS[name])}, got {value!r}")
        return value
    optional = "None" in hint
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config.{name} must not be null")
    if "tuple" in hint:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config.{name}: expected a list, got {value!r}")
        item = float if "float" in hint else int
        out = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (item is int and not float(v).is_integer()):
                raise ConfigError(f"config.{name}: expected a list of {item.__name__}s, got {value!r}")
            out.append(item(v))
        return tuple(out)
    if "bool" in hint:
        if not isinstance(value, bool):
            raise ConfigError(f"config.{name}: expected true or false, got {value!r}")
        return value
    if "int" in hint and "float" not in hint:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config.{name}: expected an integer, got {value!r}")
        return value
    if "float" in hint:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config.{name}: expected a number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"config.{name}: expected a string, got {value!r}")
    return value


def _check_ranges(c: TrainConfig) -> None:
    def bad(name, why):
        raise ConfigError(f"config.{name} = {getattr(c, name)!r}: {why}")

    if not c.model:
        raise ConfigError("no model given: pass MODEL (a name from `latvit models`, a spec JSON or a saved model dir)")
    if not c.data:
        raise ConfigError("no data given: pass --data fashion-mnist, synthetic or an ImageFolder directory")
    for name in (
        "epochs",
        "batch_size",
        "eval_batch_size",
        "synthetic_classes",
        "synthetic_train",
        "synthetic_val",
        "log_every",
    ):
        if getattr(c, name) < 1:
            bad(name, "must be >= 1")
    for name in ("num_workers", "checkpoint_every", "threads", "seed"):
        if not isinstance(getattr(c, name), str) and getattr(c, name) < 0:
            bad(name, "must be >= 0")
    for name in ("train_subset", "val_subset", "img_size"):
        if getattr(c, name) is not None and getattr(c, name) < 1:
            bad(name, "must be >= 1 (or null)")
    if c.lr <= 0:
        bad("lr", "must be > 0")
    for name in ("warmup_lr", "min_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix", "color_jitter"):
        if getattr(c, name) < 0:
            bad(name, "must be >= 0")
    if c.warmup_epochs >= c.epochs and c.warmup_epochs > 0:
        bad("warmup_epochs", f"must be smaller than epochs ({c.epochs})")
    if c.clip_grad is not None and c.clip_grad <= 0:
        bad("clip_grad", "must be > 0 (or null to disable clipping)")
    for name in ("label_smoothing", "drop_path"):
        if not 0.0 <= getattr(c, name) < 1.0:
            bad(name, "must be in [0, 1)")
    if c.layer_decay is not None and not 0.0 < c.layer_decay <= 1.0:
        bad("layer_decay", "must be in (0, 1] (or null for none)")
    for name in ("hflip", "distill_alpha"):
        if not 0.0 <= getattr(c, name) <= 1.0:
            bad(name, "must be in [0, 1]")
    if not 0.0 < c.ema_decay < 1.0:
        bad("ema_decay", "must be in (0, 1)")
    if not 0.0 < c.crop_pct <= 1.0:
        bad("crop_pct", "must be in (0, 1]")
    if len(c.crop_scale) != 2 or not 0.0 < c.crop_scale[0] <= c.crop_scale[1] <= 1.0:
        bad("crop_scale", "must be [min, max] with 0 < min <= max <= 1")
    if any(s < 1 for s in c.multiscale_sizes):
        bad("multiscale_sizes", "sizes must be positive")
    if c.device not in DEVICES and not c.device.startswith("cuda:"):
        bad("device", f"choose one of {', '.join(DEVICES)} or cuda:N")

    if c.init is not None and not (Path(c.init).is_file() or (Path(c.init) / WEIGHTS_FILE).is_file()):
        bad("init", f"neither a checkpoint file nor a saved model directory (one holding {WEIGHTS_FILE})")
    if c.teacher_checkpoint and not c.teacher:
        bad("teacher_checkpoint", "is given without a teacher (pass --teacher MODEL)")
    if c.randaugment is not None and not c.randaugment.startswith("rand"):
        bad("randaugment", "must be a timm RandAugment string such as 'rand-m9-mstd0.5-inc1'")
    try:
        from timm.optim import list_optimizers

        known = list_optimizers()
    except ImportError:  # older timm: accept and let create_optimizer_v2 complain
        known = [c.optimizer]
    if c.optimizer.lower() not in known:
        close = difflib.get_close_matches(c.optimizer.lower(), known, n=3)
        bad("optimizer", f"unknown optimizer{'; did you mean ' + ', '.join(close) + '?' if close else ''}")


def make_config(values: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Validated TrainConfig from a dict of values plus keyword overrides (None overrides are ignored)."""
    merged = dict(values or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(merged) - set(FIELDS))
    if unknown:
        hints = [
            f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, FIELDS, n=1)) else k for k in unknown
        ]
        raise ConfigError(f"unknown config key(s): {', '.join(hints)}; see docs/train.md for the list")
    config = TrainConfig(**{k: _coerce(k, v) for k, v in merged.items()})
    _check_ranges(config)
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or JSON (.json) file holding one mapping of config keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"config file {path} cannot be parsed: {first_line(e)}") from None
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"config file {path} cannot be parsed: {first_line(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars/lists (`0.8`, `true`, `[0.5, 1.0]`)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except Exception:
            raise ConfigError(f"--set {key}: cannot read value '{value}'") from None
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Config file (optional) with keyword overrides on top, validated."""
    return make_config(read_config_file(path) if path else {}, **overrides)


__all__ = ["ConfigError", "TrainConfig", "load_config", "make_config", "parse_set", "read_config_file"]
