"""One reference resolver: every command that takes a model goes through `resolve_model`.

A model reference is one of
- a registered latvit name (`efficientformer_l1`), a spec JSON file, inline spec JSON or a `latvit.save`
  directory (its weights load);
- `timm:NAME`, a timm model (random weights: latency does not depend on them);
- an `nn.Module` you built (give `img_size` unless it is a latvit model);
optionally with a checkpoint (`.pth`/`.pt`/`.safetensors`, latvit, timm or official layout) loaded into a
latvit model. `check_model_ref` does the cheap part (names, sizes) so commands refuse bad input before any
slow work starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torch.nn as nn

from latvit.errors import LatvitError, first_line
from latvit.models import create_model, resolve_spec
from latvit.space.builder import LatvitNet
from latvit.space.plan import plan_network

TIMM_PREFIX = "timm:"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class ResolvedModel:
    """A built model in eval mode and what the pipeline needs to know about it.

    source: "latvit" (built by latvit's builder: deploy folds it) or "timm" / "module".
    label: the short name rows and files show (the registered name, or a spec's name for files).
    mean, std: the input normalisation the model expects (not baked into exported artifacts).
    """

    model: nn.Module
    img_size: int
    source: str
    label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def is_latvit(self) -> bool:
        return self.source == "latvit"


def resolve_model(
    ref: str | Path | nn.Module,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    *,
    num_classes: int | None = None,
    distill: bool = False,
) -> ResolvedModel:
    """Build the model `ref` names (see the module docstring) at `img_size` (default: the model's own).

    num_classes: the classifier's outputs (default: a saved model's own, else 1000; timm's default).
    distill: build a latvit model with a distillation head, as a run trained with a teacher saved it.
    """
    if img_size is not None and img_size < 1:
        raise LatvitError(f"image size must be a positive integer, got {img_size}")
    if isinstance(ref, nn.Module):
        return _resolve_module(ref, img_size)
    ref = str(ref)
    if ref.startswith(TIMM_PREFIX):
        if checkpoint is not None:
            raise LatvitError(
                f"{ref}: a checkpoint loads into latvit models; convert it first with "
                f"`latvit convert MODEL {checkpoint} DIR`"
            )
        return _resolve_timm(ref[len(TIMM_PREFIX) :], img_size, num_classes)
    spec, saved_weights = resolve_spec(ref)
    size = img_size or spec.img_size
    plan_network(spec.with_img_size(size))  # a SpecError naming the size problem, before building
    label, source = model_label(ref), ref
    if distill:  # build from the spec with the extra head; a saved model's weights (with that head) still load
        source = spec.with_distill_head()
        checkpoint = checkpoint if checkpoint is not None else saved_weights
    net = create_model(source, num_classes=num_classes, img_size=size, checkpoint=checkpoint).eval()
    return ResolvedModel(net, size, "latvit", label, tuple(spec.mean), tuple(spec.std))


def check_model_ref(ref: str, img_size: int | None = None) -> None:
    """Cheap validation of a reference and input size: no weights are built for latvit models."""
    if img_size is not None and img_size < 1:
        raise LatvitError(f"image size must be a positive integer, got {img_size}")
    if ref.startswith(TIMM_PREFIX):
        name = ref[len(TIMM_PREFIX) :]
        _check_timm_name(name)
        if img_size and img_size % 32:
            raise LatvitError(f"image size {img_size} does not suit {ref}: use a multiple of 32")
        return
    spec, _ = resolve_spec(ref)
    plan_network(spec.with_img_size(img_size or spec.img_size))


def model_label(ref: str | nn.Module) -> str:
    """Short row label: the registered or timm name, or the spec's name for spec files and directories."""
    if isinstance(ref, nn.Module):
        spec = getattr(ref, "spec", None)
        return getattr(spec, "name", None) or type(ref).__name__
    ref = str(ref)
    if ref.startswith(TIMM_PREFIX) or ("/" not in ref and not ref.endswith(".json") and not ref.startswith("{")):
        return ref
    return resolve_spec(ref)[0].name or ref


def _resolve_module(model: nn.Module, img_size: int | None) -> ResolvedModel:
    spec = getattr(model, "spec", None)
    if isinstance(model, LatvitNet):
        if img_size is not None and img_size != model.img_size:
            raise LatvitError(f"the model was built for {model.img_size} px; build it with img_size={img_size}")
        return ResolvedModel(
            model.eval(), model.img_size, "latvit", model_label(model), tuple(spec.mean), tuple(spec.std)
        )
    if img_size is None:
        raise LatvitError("give img_size= for a module that latvit did not build")
    mean, std = _timm_normalization(model)
    return ResolvedModel(model.eval(), int(img_size), "module", model_label(model), mean, std)


def _check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise LatvitError(f"unknown timm model '{name}'{hint}")


def _resolve_timm(name: str, img_size: int | None, num_classes: int | None = None) -> ResolvedModel:
    _check_timm_name(name)
    if img_size and img_size % 32:
        raise LatvitError(f"image size {img_size} does not suit timm:{name}: use a multiple of 32")
    classes = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=False, **classes)
    default = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    if img_size and img_size != default:  # ViTs and LeViT fix their size at construction: build at this one
        try:
            model = timm.create_model(name, pretrained=False, img_size=img_size, **classes)
        except TypeError:  # a CNN without the argument takes any size as it is
            pass
        try:
            with torch.inference_mode():
                model.eval()(torch.zeros(1, 3, img_size, img_size))
        except Exception as e:  # one line now, rather than a failed row per runtime later
            raise LatvitError(
                f"timm:{name} does not take {img_size}px input ({first_line(e)}); use --img-size {default}"
            ) from None
    mean, std = _timm_normalization(model)
    return ResolvedModel(model.eval(), img_size or default, "timm", TIMM_PREFIX + name, mean, std)


def _timm_normalization(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
