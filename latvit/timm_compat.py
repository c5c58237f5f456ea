"""Expose latvit's models to `timm.create_model` as `latvit_<name>` (names that never clash with timm's).

`register_timm_models()` is called once by `import latvit`; afterwards
`timm.create_model("latvit_efficientformer_l1", num_classes=10)` builds the same model as
`latvit.create_model("efficientformer_l1", num_classes=10)`. latvit ships no weights, so
`pretrained=True` is an error; pass `checkpoint_path=` (timm) or use `latvit.create_model(checkpoint=)`.
"""

from __future__ import annotations

from latvit.errors import LatvitError
from latvit.models import MODELS, create_model

_TIMM_ONLY_KWARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir", "in_chans")


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs):
        if pretrained:
            raise LatvitError(
                f"latvit ships no pretrained weights for {name}: load a file with "
                f"latvit.create_model('{name}', checkpoint=PATH)"
            )
        in_chans = kwargs.get("in_chans", 3)
        if in_chans not in (None, 3):
            raise LatvitError(f"latvit_{name} takes 3 input channels; in_chans={in_chans} is not supported")
        for key in _TIMM_ONLY_KWARGS:
            kwargs.pop(key, None)
        return create_model(name, **kwargs)

    create.__name__ = f"latvit_{name}"
    create.__qualname__ = create.__name__
    create.__module__ = __name__
    create.__doc__ = f"latvit's {name} (see latvit.create_model)."
    return create


def register_timm_models() -> list[str]:
    """Register every latvit model with timm under `latvit_<name>`; returns the registered names."""
    try:
        from timm.models import register_model
    except ImportError:  # timm is a core dependency, but keep `import latvit` robust
        return []
    from timm.models._registry import _model_entrypoints

    names = []
    for name in MODELS:
        if f"latvit_{name}" not in _model_entrypoints:
            register_model(_entrypoint(name))
        names.append(f"latvit_{name}")
    return names
