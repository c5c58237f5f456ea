"""The EMA of a run's weights: timm's ModelEmaV3, with its per-update walk over two state dicts done once."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.utils import ModelEmaV3


class ModelEma(ModelEmaV3):
    """timm's ModelEmaV3: the same decay (with its warm-up), the same foreach lerp of the same floating
    tensors and copy of the integer ones, so the same EMA weights. ModelEmaV3 builds those tensor lists
    from `state_dict()` of the EMA copy and of the model at every update (two walks over every module, a
    hot-path cost of the size of the lerp itself on small models); here they are built at the first
    update and kept. The model's tensors must stay the same objects (loading a checkpoint copies into
    them, which keeps them); a different model object rebuilds the lists."""

    def __init__(self, model: nn.Module, **kwargs):
        super().__init__(model, **kwargs)
        self._source: nn.Module | None = None
        self._lerp: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._copy: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])

    def _collect(self, model: nn.Module) -> None:
        """ModelEmaV3.apply_update_'s pairing: state-dict entries in order, floating ones lerped, others copied."""
        self._lerp, self._copy = ([], []), ([], [])
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            pairs = self._lerp if ema_v.is_floating_point() else self._copy
            pairs[0].append(ema_v)
            pairs[1].append(model_v)
        self._source = model

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        if not self.foreach:  # timm's per-tensor path (EMA on another device): no lists to keep
            return super().apply_update_(model, decay)
        if model is not self._source:
            self._collect(model)
        for ema_v, model_v in zip(*self._copy):
            ema_v.copy_(model_v)
        self._foreach_lerp_(*self._lerp, weight=1.0 - decay)


__all__ = ["ModelEma"]
