"""How a latency table's items and networks are measured: each alone, batch 1, on the table's runtime,
with the shared protocol (`latvit.targets.protocol`) and, when a reference workload is given, timed in
alternating rounds with it (`latvit.targets.reference.measure_with_reference`) so every measurement
carries the device's speed at that moment (`ref_ms`).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from latvit.deploy import deploy as fold
from latvit.latency.lut import Item, PlannedHead
from latvit.layers.common import ClassifierHead
from latvit.models import resolve_spec
from latvit.runtimes import runnable_runtime
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.builder import build_model
from latvit.space.spec import NetSpec
from latvit.targets.protocol import TARGET_REL, Timing, measure_latency, set_threads
from latvit.targets.reference import Reference, measure_with_reference, prepare_reference


@dataclass(frozen=True)
class Protocol:
    """Settings of `measure_latency` for one kind of measurement: minimums (`iters`, `min_seconds`), the
    median's interval target and the time cap."""

    warmup: int
    iters: int
    min_seconds: float
    max_seconds: float = 10.0
    target_rel: float | None = TARGET_REL

    def as_kwargs(self) -> dict:
        return {"warmup": self.warmup, "iters": self.iters, "min_seconds": self.min_seconds,
                "max_seconds": self.max_seconds, "target_rel": self.target_rel}


# Blocks take 0.05-5 ms here: 20 calls and 0.2 s at least, then on until the median is known to +-2%,
# at most 1 s (the EfficientFormer space has ~80 items, each ~1.5 s of ONNX export on top).
BLOCK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=0.2, max_seconds=1.0)
# Whole networks are few, so they get more time: the calibration and the validation rest on them.
NETWORK_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=1.0, max_seconds=10.0)


def timing_record(t: Timing, reference: dict | None = None) -> dict:
    """A Timing (and the reference fields measured with it) as a table row: floats to 1 ns."""
    fields = t.as_dict() | (reference or {})
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in fields.items()}


def inference_copy(module: nn.Module, deploy: bool) -> nn.Module:
    """The module as it is measured: eval mode, deploy-folded when `deploy` (as the bench measures)."""
    return fold(module) if deploy else module.eval()


def time_module(module: nn.Module, example: torch.Tensor, runtime, threads: int, protocol: Protocol,
                reference: Reference | None = None) -> tuple[Timing, dict]:
    """Prepare `module` on `runtime` (export, session) and time it with the shared protocol, interleaved
    with `reference` when given. Returns the Timing and the reference fields (ref_ms and ref_min_ms, the
    reference network's median and minimum, and ref_gemm_ms; empty without a reference)."""
    with tempfile.TemporaryDirectory(prefix="latvit-lut-") as tmp:
        run = runtime.prepare(module, example, threads, Path(tmp))
        x = example.numpy()
        if reference is None:
            return measure_latency(lambda: run(x), **protocol.as_kwargs()), {}
        measured = measure_with_reference(lambda: run(x), reference, **protocol.as_kwargs())
        return measured.timing, {"ref_ms": measured.ref.median_ms, "ref_min_ms": measured.ref.min_ms,
                                 "ref_gemm_ms": measured.gemm.median_ms}


def measure_item(item: Item, runtime, threads: int, deploy: bool, protocol: Protocol = BLOCK_PROTOCOL,
                 reference: Reference | None = None) -> tuple[Timing, dict]:
    """One item in isolation on `runtime`: (Timing, reference fields) as `time_module`."""
    torch.manual_seed(0)
    module, example = isolated_module(item)
    return time_module(inference_copy(module, deploy), example, runtime, threads, protocol, reference)


def measure_spec_now(spec: str, runtime: str, threads: int, deploy: bool = True) -> dict:
    """A spec (JSON path, model name or saved model) measured end to end on `runtime` now, interleaved with
    the reference: the flat record of `ReferencedTiming.as_record` (Timing fields, ref_ms, ref_gemm_ms,
    device state). JSON-ready, for `run_isolated` (`latvit search`'s final check of its candidates)."""
    set_threads(threads)
    rt = runnable_runtime(runtime)
    net = resolve_spec(spec)[0]
    torch.manual_seed(0)
    model = inference_copy(build_model(net), deploy)
    example = torch.randn(1, net.in_chans, net.img_size, net.img_size)
    with tempfile.TemporaryDirectory(prefix="latvit-now-") as tmp:
        reference = prepare_reference(rt, threads, Path(tmp) / "reference")
        run = rt.prepare(model, example, threads, Path(tmp))
        x = example.numpy()
        return measure_with_reference(lambda: run(x), reference, **NETWORK_PROTOCOL.as_kwargs()).as_record()


def measure_network(spec: NetSpec, runtime, threads: int, deploy: bool, protocol: Protocol = NETWORK_PROTOCOL,
                    reference: Reference | None = None) -> tuple[Timing, dict]:
    """A whole network end to end on `runtime` (batch 1, the spec's input size): as `time_module`."""
    torch.manual_seed(0)
    model = build_model(spec)
    example = torch.randn(1, spec.in_chans, spec.img_size, spec.img_size)
    return time_module(inference_copy(model, deploy), example, runtime, threads, protocol, reference)


def isolated_module(item: Item) -> tuple[nn.Module, torch.Tensor]:
    """The item built alone with a batch-1 input of the shape it sees inside the network."""
    if isinstance(item, PlannedHead):
        hd = item.head
        head = ClassifierHead(item.c_in, item.num_classes, conv_width=hd.conv_width, act=hd.act, norm=hd.norm,
                              distill=hd.distill, dropout=hd.dropout, tokens=item.tokens)
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
