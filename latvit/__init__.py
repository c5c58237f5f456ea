"""latvit: latency-first vision transformers.

Build models from one declarative design space, measure them on real runtimes, and search and compress
them by measured latency. Quick start:

    import latvit
    model = latvit.create_model("efficientformer_l1", num_classes=10)
    latvit.list_models()
"""

from latvit._version import __version__
from latvit.deploy import deploy  # `latvit.deploy` is the function; import helpers with `from latvit.deploy import ...`
from latvit.errors import LatvitError
from latvit.latency.predictor import predict_latency  # numpy/torch only; runtimes load when measuring
from latvit.models import create_model, get_spec, list_models, load_checkpoint, save
from latvit.space import BlockSpec, HeadSpec, NetSpec, StageSpec, build_model, plan_network, spec_cost
from latvit.space.mes import mes
from latvit.timm_compat import register_timm_models

register_timm_models()

__all__ = [
    "__version__",
    "BlockSpec",
    "HeadSpec",
    "LatvitError",
    "NetSpec",
    "StageSpec",
    "build_model",
    "create_model",
    "deploy",
    "get_spec",
    "list_models",
    "load_checkpoint",
    "mes",
    "plan_network",
    "predict_latency",
    "save",
    "spec_cost",
]
