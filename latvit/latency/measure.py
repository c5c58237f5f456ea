"""How a latency table's items and networks are measured: each alone, batch 1, on the table's runtime and
target, through the one artifact step and target seam (`latvit.latency.module_timing.measure_module`) and,
with `reference`, timed in alternating rounds with the target's reference workload
(`latvit.targets.reference`) so every measurement carries the device's speed at that moment (`ref_ms`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from latvit.deploy import deploy as fold
from latvit.latency.lut import Item, PlannedHead
from latvit.latency.module_timing import measure_module
from latvit.layers.common import ClassifierHead
from latvit.models import resolve_spec
from latvit.runtimes.base import Runtime
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.builder import build_model
from latvit.space.spec import NetSpec
from latvit.targets import DEFAULT_TARGET, Protocol, Target
from latvit.targets.protocol import NETWORK_SESSIONS, Timing, set_threads

__all__ = [
    "BLOCK_PROTOCOL",
    "NETWORK_PROTOCOL",
    "Protocol",
    "REFERENCE_FIELDS",
    "measure_item",
    "measure_network",
    "measure_spec_now",
    "time_module",
    "timing_record",
]

# Blocks take 0.05-5 ms here: 20 calls and 0.2 s at least, then on until the median is known to +-2%,
# at most 1 s (the EfficientFormer space has ~80 items, each ~1.5 s of ONNX export on top).
BLOCK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=0.2, max_seconds=1.0)
# Whole networks are few, so they get more time: the calibration and the validation rest on them; and
# several loads each (NETWORK_SESSIONS), so one load's offset does not move a calibration point.
NETWORK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=1.0, max_seconds=10.0, sessions=NETWORK_SESSIONS)
# what a table row keeps of the reference measured with it
REFERENCE_FIELDS = ("ref_ms", "ref_min_ms", "ref_gemm_ms")


def timing_record(t: Timing, reference: dict | None = None) -> dict:
    """A Timing (and the reference fields measured with it) as a table row: floats to 1 ns."""
    fields = t.as_dict() | (reference or {})
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()}


def inference_copy(module: nn.Module, deploy: bool) -> nn.Module:
    """The module as it is measured: eval mode, deploy-folded when `deploy` (as the bench measures)."""
    return fold(module) if deploy else module.eval()


def time_module(
    module: nn.Module,
    example: torch.Tensor,
    runtime: str | Runtime,
    threads: int,
    protocol: Protocol,
    reference: bool = False,
    target: str | Target = DEFAULT_TARGET,
) -> tuple[Timing, dict]:
    """Export `module` for `runtime` and time it on `target` with `protocol`, interleaved with the target's
    reference workload when `reference`. Returns the Timing and the reference fields (REFERENCE_FIELDS:
    the reference network's median and minimum, the GEMM's median; empty without a reference; and
    `settle_tries` when a transient slowdown had it timed again)."""
    with tempfile.TemporaryDirectory(prefix="latvit-lut-") as tmp:
        record = measure_module(
            module,
            example,
            runtime,
            threads=threads,
            workdir=Path(tmp),
            protocol=protocol,
            target=target,
            reference=reference,
        )
    reference = {k: record[k] for k in REFERENCE_FIELDS if record.get(k) is not None}
    settle = (record.get("conditions") or {}).get("settle")
    if settle and settle["tries"] > 1:  # timed again after a transient slowdown (`latvit.targets.base.Settle`)
        reference["settle_tries"] = settle["tries"]
    return Timing.from_dict(record), reference


def measure_item(
    item: Item,
    runtime: str | Runtime,
    threads: int,
    deploy: bool,
    protocol: Protocol = BLOCK_PROTOCOL,
    reference: bool = False,
    target: str | Target = DEFAULT_TARGET,
) -> tuple[Timing, dict]:
    """One item in isolation on `runtime`: (Timing, reference fields) as `time_module`."""
    torch.manual_seed(0)
    module, example = isolated_module(item)
    return time_module(inference_copy(module, deploy), example, runtime, threads, protocol, reference, target)


def measure_network(
    spec: NetSpec,
    runtime: str | Runtime,
    threads: int,
    deploy: bool,
    protocol: Protocol = NETWORK_PROTOCOL,
    reference: bool = False,
    target: str | Target = DEFAULT_TARGET,
) -> tuple[Timing, dict]:
    """A whole network end to end on `runtime` (batch 1, the spec's input size): as `time_module`."""
    torch.manual_seed(0)
    model = build_model(spec)
    example = torch.randn(1, spec.in_chans, spec.img_size, spec.img_size)
    return time_module(inference_copy(model, deploy), example, runtime, threads, protocol, reference, target)


def measure_spec_now(
    spec: str, runtime: str, threads: int, deploy: bool = True, target: str = DEFAULT_TARGET
) -> dict[str, Any]:
    """A spec (JSON path, model name or saved model) measured end to end on `runtime` and `target` now,
    interleaved with the reference: the flat record of `measure_module` (Timing fields, ref_ms, ref_gemm_ms,
    device state in `conditions`). JSON-ready, for `run_isolated` (`latvit search`'s final check)."""
    set_threads(threads)
    net = resolve_spec(spec)[0]
    torch.manual_seed(0)
    model = inference_copy(build_model(net), deploy)
    example = torch.randn(1, net.in_chans, net.img_size, net.img_size)
    with tempfile.TemporaryDirectory(prefix="latvit-now-") as tmp:
        return measure_module(
            model,
            example,
            runtime,
            threads=threads,
            workdir=Path(tmp),
            protocol=NETWORK_PROTOCOL,
            target=target,
            reference=True,
        )


def isolated_module(item: Item) -> tuple[nn.Module, torch.Tensor]:
    """The item built alone with a batch-1 input of the shape it sees inside the network."""
    if isinstance(item, PlannedHead):
        hd = item.head
        head = ClassifierHead(
            item.c_in,
            item.num_classes,
            conv_width=hd.conv_width,
            act=hd.act,
            norm=hd.norm,
            distill=hd.distill,
            dropout=hd.dropout,
            tokens=item.tokens,
        )
        module: nn.Module = _HeadOnly(head)
        tokens = item.tokens
    else:
        kind = BLOCK_KINDS[item.spec.kind]
        module = kind.module.from_spec(item.spec, item.c_in, item.h, item.w, 0.0)
        tokens = kind.tokens
        stream = getattr(kind, "stream", "")
        if stream:  # Mobile-Former blocks take and/or return a (map, global tokens) pair
            module = _PairAdapter(module, item.spec.tokens, item.spec.dim, takes_pair=stream != "open")
    # token blocks see (B, N, C): the network flattens once before them (that reshape is not an item)
    example = torch.randn(1, item.h * item.w, item.c_in) if tokens else torch.randn(1, item.c_in, item.h, item.w)
    return module, example


class _PairAdapter(nn.Module):
    """A block on the (map, tokens) pair as a one-tensor module (runtimes take and return one array): the
    tokens come from a fixed buffer, and a returned pair is flattened into one (B, C*H*W + T*D) output so
    that an exporter cannot drop the token branch as dead code."""

    def __init__(self, block: nn.Module, tokens: int, dim: int, takes_pair: bool):
        super().__init__()
        self.block, self.takes_pair = block, takes_pair
        self.register_buffer("z", torch.randn(1, tokens, dim))  # (1, T, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block((x, self.z) if self.takes_pair else x)
        if isinstance(out, tuple):
            return torch.cat([out[0].flatten(1), out[1].flatten(1)], dim=1)
        return out


class _HeadOnly(nn.Module):
    """What `LatvitNet` runs after its last stage: head.forward_norm, then head.forward."""

    def __init__(self, head: ClassifierHead):
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head.forward_norm(x))  # (B, C, H, W) or (B, N, C) -> (B, num_classes)
