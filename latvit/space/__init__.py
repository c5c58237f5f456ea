"""The design space: specs (`spec`), the block registry (`blocks`), shape/cost planning (`plan`) and the
builder (`builder`). Data flows one way: NetSpec -> plan -> LatvitNet."""

from latvit.space.blocks import BLOCK_KINDS, BlockKind
from latvit.space.builder import LatvitNet, build_model
from latvit.space.plan import NetPlan, PlannedBlock, plan_network, spec_cost
from latvit.space.spec import BlockSpec, HeadSpec, NetSpec, StageSpec, spec_from_dict, spec_from_json, spec_to_dict

__all__ = [
    "BLOCK_KINDS",
    "BlockKind",
    "BlockSpec",
    "HeadSpec",
    "LatvitNet",
    "NetPlan",
    "NetSpec",
    "PlannedBlock",
    "StageSpec",
    "build_model",
    "plan_network",
    "spec_cost",
    "spec_from_dict",
    "spec_from_json",
    "spec_to_dict",
]
