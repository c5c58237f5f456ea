"""Hard distillation through a distillation head (DeiT / LeViT / EfficientFormer).

The student's `ClassifierHead` has a second linear layer (`fc_dist`); in training with
`distilled_training` it returns (class logits, distillation logits). The class logits learn the labels,
the distillation logits learn the teacher's argmax; at inference the two are averaged. Students whose
spec has no distillation head get one (`NetSpec.with_distill_head`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from latvit.errors import CheckpointError, LatvitError, first_line
from latvit.models import create_model, resolve_spec


class Teacher(nn.Module):
    """A frozen classifier fed the student's batches: re-normalises from the student's mean/std to the
    teacher's and resizes to the teacher's input size when the teacher only takes one size.
    (B, 3, H, W) student-normalised -> (B, num_classes) teacher logits."""

    def __init__(self, model: nn.Module, student_mean, student_std, mean, std, img_size: int | None):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.img_size = img_size  # None: any size
        scale = torch.tensor(student_std) / torch.tensor(std)
        shift = (torch.tensor(student_mean) - torch.tensor(mean)) / torch.tensor(std)
        # x_teacher = (x_student * s_std + s_mean - t_mean) / t_std = x_student * scale + shift
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always in eval mode: BN statistics and dropout stay frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale + self.shift
        if self.img_size is not None and x.shape[-1] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        out = self.model(x)
        return out[0] if isinstance(out, (tuple, list)) else out


def build_teacher(
    name: str, checkpoint: str | None, *, num_classes: int, img_size: int, student_mean, student_std
) -> Teacher:
    """`name` is a latvit model (name, spec JSON, saved dir) or `timm:NAME`; `checkpoint` its trained weights
    (optional only for a saved latvit directory, which holds its weights)."""
    if name.startswith("timm:"):
        import timm

        if not checkpoint:
            raise LatvitError(f"teacher {name} needs trained weights: pass --teacher-checkpoint PATH")
        try:
            model = timm.create_model(name[len("timm:") :], pretrained=False, num_classes=num_classes)
        except RuntimeError as e:  # timm: unknown model
            raise LatvitError(f"teacher {name}: {first_line(e)}") from None
        try:
            timm.models.load_checkpoint(model, checkpoint, strict=True)
        except (RuntimeError, FileNotFoundError, KeyError) as e:
            raise CheckpointError(f"teacher checkpoint {checkpoint} does not fit {name}: {first_line(e)}") from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        fixed = cfg.get("fixed_input_size", False)
        size = cfg.get("input_size", (3, img_size, img_size))[-1] if fixed else None
        return Teacher(
            model, student_mean, student_std, cfg.get("mean", student_mean), cfg.get("std", student_std), size
        )

    spec, saved = resolve_spec(name)
    if checkpoint is None and saved is None:
        raise LatvitError(f"teacher {name} has no weights: pass --teacher-checkpoint PATH (or a saved model dir)")
    model = create_model(name, num_classes=num_classes, img_size=img_size, checkpoint=checkpoint)
    if model.num_classes != num_classes:
        raise LatvitError(f"teacher {name} predicts {model.num_classes} classes but the data has {num_classes}")
    return Teacher(
        model,
        student_mean,
        student_std,
        model.spec.mean,
        model.spec.std,
        model.img_size if model.fixed_input_size else None,
    )


def distillation_loss(outputs, target: torch.Tensor, teacher_logits: torch.Tensor, base_loss, alpha: float = 0.5):
    """(1 - alpha) * base_loss(class logits, target) + alpha * CE(distillation logits, argmax teacher).

    outputs: (cls, dist) logits of a student in distilled training; target: labels or soft targets."""
    if not isinstance(outputs, (tuple, list)):
        raise LatvitError(
            "distillation needs a student whose head returns (cls, dist) logits in training "
            "(HeadSpec.distill with model.set_distilled_training(True))"
        )
    cls, dist = outputs
    return (1 - alpha) * base_loss(cls, target) + alpha * F.cross_entropy(dist, teacher_logits.argmax(dim=1))


__all__ = ["Teacher", "build_teacher", "distillation_loss"]
