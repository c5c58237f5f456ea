"""The profile data model shared by every runtime profiler: categories, `OpTime`, `Profile`, the `Locator`
that places an op in its block and gives it a category, and `RawProfile`, what each profiler returns."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from latvit.pipeline.prepare import build_artifact
from latvit.space.blocks import block_stride
from latvit.space.plan import NetPlan, PlannedBlock
from latvit.targets.protocol import Timing, measure_latency
from latvit.utils import atomic_write_text

SCHEMA_VERSION = 1
COVERAGE_MIN = 0.90  # the per-op times must explain this share of the end-to-end latency

CATEGORIES: dict[str, str] = {
    "stem": "stem / patch embedding",
    "downsampling": "downsampling",
    "token_mixer": "token mixer / attention",
    "mlp": "MLP / FFN",
    "norm": "normalisation",
    "activation": "activation",
    "reshape": "reshape / transpose / copy",
    "other": "other (head, residual adds, glue)",
    "runtime": "runtime between ops (executor, delegate)",
}
# op types the profilers give to runtime time between ops, and the reason each is `runtime`
RUNTIME_OPS = {
    "ORT executor": "ONNX Runtime's executor between the previous node event and this node's (dispatch, profiler "
    "bookkeeping, any preemption there)",
    "XNNPACK delegate setup": "XNNPACK delegate call before its first operator (inputs, runtime setup)",
    "XNNPACK delegate return": "XNNPACK delegate call after its last operator (outputs, and the whole-microsecond "
    "rounding of XNNPACK's operator timer)",
    "LiteRT invoke": "LiteRT's Invoke outside its operators' events (the interpreter's and XNNPACK's dispatch)",
    "LiteRT run": "LiteRT's buffer registration and sync around Invoke",
}

# -- op kinds, by lower-case op type with any "aten::" prefix removed --------------------------------------
LAYOUT_OPS = {
    # ONNX / ORT
    "reshape",
    "transpose",
    "flatten",
    "squeeze",
    "unsqueeze",
    "concat",
    "slice",
    "split",
    "expand",
    "identity",
    "cast",
    "shape",
    "tile",
    "reorderinput",
    "reorderoutput",
    "depthtospace",
    "spacetodepth",
    "memcpy",
    # XNNPACK operators (names as ExecuTorch's ETDump gives them, spaces removed)
    "staticreshape",
    "copy",
    "concatenate",
    "constantpad",
    "staticslice",
    "statictranspose",
    # OpenVINO
    "reorder",
    "concatenation",
    "stridedslice",
    "convert",
    "broadcast",
    "shapeof",
    "variadicsplit",
    # aten
    "view",
    "_unsafe_view",
    "permute",
    "contiguous",
    "clone",
    "copy_",
    "cat",
    "split_with_sizes",
    "chunk",
    "unbind",
    "select",
    "narrow",
    "unflatten",
    "as_strided",
    "t",
    "expand_as",
    "to",
    "_to_copy",
    "empty_like",
}
NORM_OPS = {
    "batchnormalization",
    "layernormalization",
    "skiplayernormalization",
    "simplifiedlayernormalization",
    "mvn",
    "normalizel2",
    "batch_norm",
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "layer_norm",
    "native_layer_norm",
    "group_norm",
    "instance_norm",
}
ACT_OPS = {
    "relu",
    "gelu",
    "fastgelu",
    "biasgelu",
    "erf",
    "hardswish",
    "hardsigmoid",
    "sigmoid",
    "silu",
    "swish",
    "tanh",
    "clip",
    "clamp",
    "hardtanh",
    "elu",
    "quickgelu",
    "relu_",
    "gelu_",
    "silu_",
    "hardswish_",
    "hardtanh_",
}
NORM_MODULES = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
ACT_MODULES = (nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)

# -- a block's parts, by the first path component below the block (and its role there) -------------------
MIXER_PARTS = (
    "token_mixer",
    "attn",
    "ls1",
    "norm1",
    "transformer",
    "conv_kxk",
    "conv_1x1",
    "conv_proj",
    "conv_fusion",
    "norm",
)
MLP_PARTS = ("mlp", "ls2", "norm2", "ffn", "conv1_1x1", "conv2_kxk", "conv3_1x1")
KIND_ROLE = {  # where a block's part names say nothing: its whole kind plays one role
    "mv2": ("mlp", "inverted residual (1x1 expand, depthwise, 1x1 project) is a local FFN"),
    "ffn_local": ("mlp", "EfficientFormerV2 local FFN"),
    "meta4d": ("token_mixer", "MB4D pooling mixer"),
    "bottleneck": ("token_mixer", "BottleNeck: its KxK conv mixes space"),
    "mobilevit": ("token_mixer", "MobileViT unfold / resize / fold around its transformer"),
    "transformer_sr": ("token_mixer", "SR Transformer patch projection"),
    "mixblock_a": ("token_mixer", "MixBlock projection / BottleNeck branch"),
    "mixblock_b": ("token_mixer", "MixBlock projection / BottleNeck branch"),
    "mixblock_c": ("token_mixer", "MixBlock projection / BottleNeck branch"),
    "conv_bn_act": ("other", "plain Conv-BN-act block inside a stage"),
}


@dataclass(frozen=True)
class OpTime:
    """One runtime op (or one op type within one module, for eager) and its time per inference."""

    name: str  # the runtime's node name (eager: "module.path:aten::op")
    op_type: str  # the runtime's op type as it ran (Conv, FusedMatMul, Reorder, aten::linear, ...)
    module: str  # innermost latvit module path ("stages.2.blocks.3.mlp.fc1"); "" if unknown
    block: str  # "stem[0]", "stages[2][3]", "stages[2]" (stage glue), "head" or "" (network glue)
    kind: str  # the block's kind ("meta4d", ...), "head", or ""
    category: str
    reason: str  # the rule that chose the category
    ms: float  # mean milliseconds per inference
    calls: float  # calls per inference


@dataclass
class Profile:
    """A model's per-op profile on one runtime, with the end-to-end latency of the same run."""

    model: str
    runtime: str
    runtime_version: str
    img_size: int
    threads: int
    source: str  # which profiler produced the op times
    ops: list[OpTime]
    e2e: Timing  # end-to-end latency of the profiled calls (profiler on)
    latency: Timing | None  # end-to-end latency of the same runner without the profiler
    blocks: list[dict[str, Any]]  # the network plan: where, kind, shapes, analytic GFLOPs per block
    machine: dict[str, Any] = field(default_factory=dict)
    runtime_events: dict[str, float] = field(default_factory=dict)  # the runtime's own whole-run events, mean ms

    @property
    def op_ms(self) -> float:
        return sum(op.ms for op in self.ops)

    @property
    def kernel_coverage(self) -> float:
        """`coverage` without the `runtime` category: the share the op events themselves explain."""
        kernels = sum(op.ms for op in self.ops if op.category != "runtime")
        return kernels / self.e2e.mean_ms if self.e2e.mean_ms > 0 else 0.0

    @property
    def overhead_ms(self) -> float:
        """End-to-end time the runtime's profiler does not attribute to any op (dispatch, copies, Python)."""
        return max(0.0, self.e2e.mean_ms - self.op_ms)

    @property
    def coverage(self) -> float:
        """Share of the end-to-end mean latency accounted for by per-op times."""
        return self.op_ms / self.e2e.mean_ms if self.e2e.mean_ms > 0 else 0.0

    def by_category(self) -> dict[str, float]:
        """Milliseconds per category, every category present, plus `overhead`."""
        out = {c: 0.0 for c in CATEGORIES}
        for op in self.ops:
            out[op.category] += op.ms
        out["overhead"] = self.overhead_ms
        return out

    def by_block(self) -> list[dict[str, Any]]:
        """Per block in network order: kind, total ms, ms per category."""
        order = {b["where"]: i for i, b in enumerate(self.blocks)}
        rows: dict[str, dict[str, Any]] = {}
        for op in self.ops:
            key = op.block or "network"
            row = rows.setdefault(key, {"block": key, "kind": op.kind, "ms": 0.0, "categories": {}})
            row["ms"] += op.ms
            row["categories"][op.category] = row["categories"].get(op.category, 0.0) + op.ms

        def sort_key(row):
            b = row["block"]
            if b in order:
                return (1, order[b], 0)
            m = re.fullmatch(r"stages\[(\d+)\]", b)
            if m:  # stage glue (the flatten before token blocks) sits before the stage's token blocks
                first = min((i for w, i in order.items() if w.startswith(b)), default=len(order))
                return (1, first, -1)
            return (0, 0, 0) if b == "network" else (2, 0, 0)

        return sorted(rows.values(), key=sort_key)

    def by_op_type(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for op in self.ops:
            out[op.op_type] = out.get(op.op_type, 0.0) + op.ms
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "latvit.profile",
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "img_size": self.img_size,
            "threads": self.threads,
            "source": self.source,
            "e2e": self.e2e.as_dict(),
            "latency": self.latency.as_dict() if self.latency else None,
            "op_ms": self.op_ms,
            "overhead_ms": self.overhead_ms,
            "coverage": self.coverage,
            "kernel_coverage": self.kernel_coverage,
            "runtime_events": self.runtime_events,
            "categories": self.by_category(),
            "category_labels": CATEGORIES,
            "blocks": self.by_block(),
            "plan": self.blocks,
            "op_types": self.by_op_type(),
            "ops": [asdict(op) for op in self.ops],
            "machine": self.machine,
        }

    def to_json(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))


# ---------------------------------------------------------------------------------------------------
# Where an op sits, and its category
# ---------------------------------------------------------------------------------------------------
class Locator:
    """Maps module paths of one network to its planned blocks, and ops to categories."""

    def __init__(self, model: nn.Module, plan: NetPlan):
        self.modules = dict(model.named_modules())
        self.blocks = sorted(plan.blocks, key=lambda b: -len(b.module_path))  # longest prefix first

    def innermost(self, scopes: list[str]) -> str:
        """The deepest of `scopes` (module paths, outermost first) that is a module of this network."""
        for s in reversed(scopes):
            if s in self.modules:
                return s
        return ""

    def block_of(self, path: str) -> PlannedBlock | None:
        for b in self.blocks:
            if path == b.module_path or path.startswith(b.module_path + "."):
                return b
        return None

    def locate(self, path: str) -> tuple[str, str]:
        """(block label, kind) of a module path."""
        b = self.block_of(path)
        if b is not None:
            return b.where, b.spec.kind
        if path == "head" or path.startswith("head."):
            return "head", "head"
        m = re.fullmatch(r"stages\.(\d+)", path)
        if m:
            return f"stages[{m.group(1)}]", ""
        return "", ""

    def _module_chain(self, path: str) -> list[nn.Module]:
        parts = path.split(".") if path else []
        return [
            self.modules[".".join(parts[:i])] for i in range(len(parts), -1, -1) if ".".join(parts[:i]) in self.modules
        ]

    def classify(self, op_type: str, path: str) -> tuple[str, str]:
        """(category, reason) of an op of type `op_type` issued inside module `path`."""
        if op_type in RUNTIME_OPS:
            return "runtime", RUNTIME_OPS[op_type]
        t = op_type.lower().removeprefix("aten::").split("::")[-1]
        # XNNPACK's "Static Reshape (NC)" -> "staticreshape"; ExecuTorch's edge ops "squeeze_copy" -> "squeeze"
        t = re.sub(r"\s*\(.*$", "", t).replace(" ", "")
        if t not in LAYOUT_OPS and t.endswith("_copy"):
            t = t[: -len("_copy")]
        inner = self.modules.get(path)
        if t in LAYOUT_OPS:
            return "reshape", f"layout op {op_type}"
        if t in NORM_OPS:
            return "norm", f"normalisation op {op_type}"
        if t in ACT_OPS:
            return "activation", f"activation op {op_type}"
        compute = any(k in t for k in ("conv", "matmul", "gemm", "linear", "addmm", "fullyconnected", "mm"))
        if not compute and isinstance(inner, ACT_MODULES):
            return "activation", f"{op_type} inside {type(inner).__name__}"
        if not compute and isinstance(inner, NORM_MODULES):
            return "norm", f"{op_type} inside {type(inner).__name__}"
        if path == "head" or path.startswith("head."):
            return "other", "classifier head"
        b = self.block_of(path)
        glue = t == "python"  # eager: a module's own Python between its children
        if b is None:
            if glue:
                return "other", "eager Python glue"
            if re.fullmatch(r"stages\.\d+", path):
                return "other", "stage glue"
            return "other", "network input/output glue"
        if b.module_path.startswith("stem."):
            return "stem", f"stem block {b.where}"
        if block_stride(b.spec) > 1 or b.spec.kind == "attn_downsample":
            return "downsampling", f"stride-{block_stride(b.spec)} {b.spec.kind} block"
        rel = path[len(b.module_path) :].lstrip(".")
        part = rel.split(".")[0] if rel else ""
        if part == "transformer" and ".mlp" in f".{rel}.":
            return "mlp", f"{rel} (transformer MLP)"
        if part in MIXER_PARTS:
            return "token_mixer", f"{b.spec.kind}.{part}"
        if part in MLP_PARTS:
            return "mlp", f"{b.spec.kind}.{part}"
        for m in self._module_chain(path):  # TRT-ViT and other kinds: name the role by class
            name = type(m).__name__.lower()
            if any(k in name for k in ("attention", "attn", "mixer", "transformer")):
                return "token_mixer", f"inside {type(m).__name__}"
            if any(k in name for k in ("mlp", "ffn")):
                return "mlp", f"inside {type(m).__name__}"
            if m is self.modules.get(b.module_path):
                break
        if not part and glue:
            return "other", "eager Python glue"
        if not part:
            if b.spec.kind in KIND_ROLE and b.spec.kind != "conv_bn_act":
                role, why = KIND_ROLE[b.spec.kind]
                if t in ("add", "sum") and b.spec.kind in ("mv2", "ffn_local", "meta4d"):
                    return "other", "residual add"
                return role, why
            return "other", "residual add" if t in (
                "add",
                "sum",
                "eltwise",
                "subgraph",
            ) else f"{b.spec.kind} block glue"
        if b.spec.kind in KIND_ROLE:
            return KIND_ROLE[b.spec.kind]
        return "other", f"unclassified part {rel} of {b.spec.kind}"

    def op(self, name: str, op_type: str, path: str, us_total: float, count: int, runs: int) -> OpTime:
        block, kind = self.locate(path)
        category, reason = self.classify(op_type, path)
        return OpTime(name, op_type, path, block, kind, category, reason, us_total / runs / 1e3, count / runs)


def plan_rows(plan: NetPlan) -> list[dict[str, Any]]:
    return [
        {
            "where": b.where,
            "module": b.module_path,
            "kind": b.spec.kind,
            "in": [b.c_in, b.h, b.w],
            "out": [b.c_out, b.h_out, b.w_out],
            "gflops": b.cost.flops / 1e9,
            "params": b.cost.params,
        }
        for b in plan.blocks
    ]


def paths_with_neighbours(names: list[str], paths: list[str | None], op_types: list[str]) -> list[str]:
    """Fill unknown module paths from the neighbouring ops in execution order: a layout reorder that
    feeds an op takes the op's place (ReorderInput: the next op), anything else its producer's."""
    out = list(paths)
    for i, p in enumerate(out):
        if p is not None:
            continue
        forward = "input" in op_types[i].lower()
        order = range(i + 1, len(out)) if forward else range(i - 1, -1, -1)
        for j in order:
            if paths[j] is not None:
                out[i] = paths[j]
                break
        if out[i] is None:
            for j in range(len(out)):
                if paths[j] is not None:
                    out[i] = paths[j]
                    break
    return [p or "" for p in out]


@dataclass
class RawProfile:
    """What a runtime profiler returns: per-op totals over `runs` profiled inferences."""

    ops: list[tuple[str, str, str, float, int]]  # (name, op_type, module path, total us, count)
    runs: int
    e2e: Timing
    latency: Timing | None
    source: str
    version: str
    runtime_events: dict[str, float] = field(default_factory=dict)  # mean ms per run of whole-run events


def timed_artifact(runtime: str, model: nn.Module, x, threads: int, proto: dict, workdir: Path) -> tuple[Path, Timing]:
    """The runtime's artifact of `model` at `x`'s shape, written by the pipeline as bench writes it
    (`latvit.pipeline.prepare.build_artifact`, into `workdir`), and its latency with no profiler attached:
    the end-to-end time a profile's per-op shares are scaled to."""
    built = build_artifact(model, x, runtime, workdir, threads=threads)
    xn = x.numpy()
    return built.artifact.path, measure_latency(lambda: built.runner(xn), **proto)


def profiled_calls(proto: dict) -> dict:
    """The protocol of the calls a profiler records: a fixed count (`iters` calls and `min_seconds`, no
    +-2% stopping target), because every profiled call keeps its events in memory. With the stopping rule a
    noisy host kept profiling up to its 2-minute cap: an eager profile of EfficientFormer-L1 grew past
    18 GB beside a training job. The unprofiled latency the shares scale to keeps the stopping rule."""
    return {**proto, "target_rel": None}
