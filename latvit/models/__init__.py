"""The model zoo: named specs of the seed families, `create_model`, `list_models`, `save`.

The registry is one explicit table built from the family modules' spec tables; nothing registers
itself on import.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import ModuleType

import torch.nn as nn

from latvit.checkpoint import load_state_dict, read_state_dict, to_latvit_keys, unwrap_state_dict
from latvit.errors import SpecError, UnknownModelError
from latvit.models import efficientformer, efficientformer_v2, mixformer, mobileformer, mobilevit, trtvit
from latvit.models.published import PUBLISHED_TOP1
from latvit.space.builder import LatvitNet, build_model
from latvit.space.mes import DEFAULT_TERMS, mes
from latvit.space.plan import spec_cost
from latvit.space.spec import NetSpec, spec_from_json
from latvit.utils import atomic_write_bytes

FAMILIES: dict[str, ModuleType] = {
    "efficientformer": efficientformer,
    "efficientformerv2": efficientformer_v2,
    "mobilevit": mobilevit,
    "trtvit": trtvit,
    "mobileformer": mobileformer,
    "mixformer": mixformer,
}
MODELS: dict[str, NetSpec] = {name: spec for family in FAMILIES.values() for name, spec in family.SPECS.items()}

SPEC_FILE, WEIGHTS_FILE = "spec.json", "model.safetensors"


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Registered model names, optionally filtered by a substring or glob pattern and by family."""
    import fnmatch

    names = sorted(n for n, s in MODELS.items() if family is None or s.family == family)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern) or pattern in n]
    return names


def get_spec(name: str) -> NetSpec:
    """The spec of a registered model (also accepts timm-style `latvit_` names)."""
    key = name[len("latvit_") :] if name.startswith("latvit_") else name
    if key in MODELS:
        return MODELS[key]
    close = difflib.get_close_matches(key, MODELS, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `latvit models` for the list"
    raise UnknownModelError(f"unknown model '{name}'{hint}")


def resolve_spec(model: str | Path | NetSpec) -> tuple[NetSpec, Path | None]:
    """Name, spec, spec JSON file or saved-model directory -> (spec, weights file or None)."""
    if isinstance(model, NetSpec):
        return model, None
    if isinstance(model, str) and model.lstrip().startswith("{"):  # inline JSON (too long to be a path)
        return spec_from_json(model), None
    path = Path(model)
    if path.is_dir():
        if not (path / SPEC_FILE).is_file():
            raise SpecError(f"{path} is not a saved latvit model: {SPEC_FILE} is missing (write one with latvit.save)")
        weights = path / WEIGHTS_FILE
        return spec_from_json(path / SPEC_FILE), weights if weights.is_file() else None
    if path.suffix == ".json":
        return spec_from_json(model), None
    return get_spec(str(model)), None


def create_model(
    model: str | Path | NetSpec,
    *,
    num_classes: int | None = None,
    img_size: int | None = None,
    checkpoint: str | Path | dict | None = None,
    drop_path_rate: float = 0.0,
    features_only: bool = False,
) -> LatvitNet:
    """Build a model from a registered name, a `NetSpec`, a spec JSON file or a `latvit.save` directory.

    num_classes: classifier outputs (default 1000, or what a saved model was saved with).
    img_size: build for this input size (default: the spec's); attention biases in a checkpoint
        trained at another size are resized.
    checkpoint: path (.safetensors / .pth / .pt) or state dict, in latvit, timm or official layout.
    features_only: return per-stage feature maps instead of logits.
    """
    spec, saved_weights = resolve_spec(model)
    if saved_weights is not None and num_classes is None:
        from safetensors import safe_open

        with safe_open(str(saved_weights), "pt") as f:
            num_classes = int((f.metadata() or {}).get("num_classes", 1000))
    num_classes = 1000 if num_classes is None else num_classes
    net = build_model(spec, num_classes=num_classes, img_size=img_size, drop_path_rate=drop_path_rate)
    source = checkpoint if checkpoint is not None else saved_weights
    if source is not None:
        load_checkpoint(net, source)
    if features_only:  # built with a head so any checkpoint loads strictly; the head is dropped here
        net.features_only, net.head, net.num_classes = True, None, 0
    return net


def load_checkpoint(model: LatvitNet, checkpoint: str | Path | dict) -> LatvitNet:
    """Strictly load a latvit, timm or official checkpoint into `model` (in place)."""
    where = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    sd = checkpoint if isinstance(checkpoint, dict) else read_state_dict(checkpoint)
    load_state_dict(model, dict(sd), FAMILIES.get(model.spec.family), where)
    return model


# The classifier layers a fine-tuning run may replace: the class head and the distillation head.
CLASSIFIER_LAYERS = ("head.fc", "head.fc_dist")


def load_backbone(model: LatvitNet, checkpoint: str | Path | dict) -> list[str]:
    """Load `checkpoint` into `model` to fine-tune it, possibly on other classes (in place).

    Every tensor outside the classifier loads strictly, as `load_checkpoint` does (any supported layout; a
    backbone that does not match is one error listing the keys). A classifier layer (`CLASSIFIER_LAYERS`)
    loads where the checkpoint has it at the model's shape; otherwise it keeps the model's fresh
    initialisation (another class count, or a distillation head the checkpoint lacks), and a checkpoint
    classifier the model has no place for is dropped.
    Returns one line per re-initialised layer, e.g. ["head.fc (1000 classes in the checkpoint, 3 here)"];
    [] when everything loaded.
    """
    where = "state dict" if isinstance(checkpoint, dict) else str(checkpoint)
    sd = unwrap_state_dict(checkpoint, where) if isinstance(checkpoint, dict) else read_state_dict(checkpoint)
    sd = to_latvit_keys(dict(sd), model, FAMILIES.get(model.spec.family))
    own = model.state_dict()

    def layer_of(key: str) -> str | None:
        return next((layer for layer in CLASSIFIER_LAYERS if key.startswith(layer + ".")), None)

    fresh: dict[str, str] = {}  # layer -> why it is re-initialised
    for key in own:
        layer = layer_of(key)
        if layer is None or layer in fresh:
            continue
        if key not in sd:
            fresh[layer] = f"{layer} (not in the checkpoint)"
        elif sd[key].shape != own[key].shape:
            fresh[layer] = f"{layer} ({sd[key].shape[0]} classes in the checkpoint, {own[key].shape[0]} here)"
    kept = {k: v for k, v in sd.items() if layer_of(k) is None or (k in own and layer_of(k) not in fresh)}
    kept.update({k: v for k, v in own.items() if layer_of(k) in fresh})  # their fresh initialisation
    load_state_dict(model, kept, None, where)  # keys are latvit's already: strict over the backbone
    return list(fresh.values())


def save(model: nn.Module, directory: str | Path) -> Path:
    """Write `spec.json` and `model.safetensors` to `directory`; `create_model(directory)` reloads it."""
    from safetensors.torch import save_file

    if not isinstance(model, LatvitNet):
        raise SpecError("latvit.save takes a model built by latvit (create_model or build_model)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = directory / f".{WEIGHTS_FILE}.tmp"
    save_file(tensors, str(tmp), metadata={"num_classes": str(model.num_classes), "format": "latvit"})
    tmp.replace(directory / WEIGHTS_FILE)
    atomic_write_bytes(directory / SPEC_FILE, (model.spec.to_json() + "\n").encode())
    return directory


def model_card(name: str) -> dict:
    """Row of `latvit models`: family, params (M), GFLOPs at the default size, input size, paper, top-1,
    and the size-only Mobile Efficiency Score (`latvit bench` adds the latency term)."""
    spec = get_spec(name)
    cost = spec_cost(spec)
    top1 = PUBLISHED_TOP1.get(name)
    return {
        "name": name,
        "family": spec.family,
        "params_m": round(cost.params / 1e6, 3),
        "gflops": round(cost.flops / 1e9, 3),
        "img_size": spec.img_size,
        "paper": spec.paper,
        "top1": top1[0] if top1 else None,
        "top1_source": top1[1] if top1 else None,
        "mes_params": round(mes({"params": cost.params}, {"params": DEFAULT_TERMS["params"]}), 2),
    }


__all__ = [
    "CLASSIFIER_LAYERS",
    "FAMILIES",
    "MODELS",
    "create_model",
    "get_spec",
    "list_models",
    "load_backbone",
    "load_checkpoint",
    "model_card",
    "resolve_spec",
    "save",
]
