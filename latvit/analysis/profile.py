"""Per-operator latency profiles: where a model's latency goes, op by op, block by block.

Each runtime is profiled with its own profiler, on the artifact it really runs:

- `eager`:    torch.profiler, with a profiler range around every module call (forward hooks): an op is a
              leaf-module call (Conv2d, GELU, LayerNorm: its aten ops and the Python around them), a
              top-level aten op issued between them (matmul, softmax, reshape, residual add), or a
              module's remaining own Python time (op type `python`, in eager a real part of the cost);
- `ort`:      ONNX Runtime's own profiler (`SessionOptions.enable_profiling`): one JSON event per node
              run; node names are mapped back through the ONNX export's `pkg.torch.onnx.name_scopes`
              metadata (ORT renames the nodes it rewrites, e.g. `getitem_3_nchwc`: the suffixes are
              stripped, and its inserted layout nodes take the place of their neighbour);
- `openvino`: OpenVINO's per-layer performance counters (`PERF_COUNT`) of the model as the openvino
              runtime converts it (torch frontend, fp32); a fused layer is mapped to its module through
              the `originalLayersNames` (`__module.stem.0.bn/aten::...`) of the compiled graph.

- `executorch`: ExecuTorch's own event tracer (ETDump, `load_program(enable_etdump=True)`) read with
              `executorch.devtools.Inspector`: portable-kernel ops are `OPERATOR_CALL` events located
              through their debug handle; an XNNPACK partition is one `DELEGATE_CALL` event holding
              XNNPACK's per-operator events ("Convolution (NHWC, F32) IGEMM #2"), which carry no
              debug handle: they are matched in order to the partition's XNNPACK nodes, whose
              serialized debug handles lead to the torch modules.

Every op gets a latvit location (block `stages[2][3]`, its kind, its module path) and a category:

    stem, downsampling, token_mixer, mlp, norm, activation, reshape, other, runtime

Layout ops (reshape, transpose, copies, the runtimes' own layout reorders) are `reshape` wherever they
sit; normalisation and activation ops (also decomposed ones: LayerNorm as ReduceMean/Sub/Pow..., GELU as
Erf/Mul...) are `norm` / `activation`; everything else takes the role of where it sits: the stem, a
downsampling block, a block's token mixer or its MLP. `other` is only the classifier head and residual
additions (and, in eager, the Python of the network, stage and block forwards), each with its reason.
`runtime` is time the runtime's profiler measures inside an inference but outside every op, attributed to
the op it serves: ORT's executor between two node events (given to the node that follows), an XNNPACK
delegate call's time before its first and after its last operator. Every op also carries the rule that
chose its category (`reason`).

The end-to-end latency of the same run (profiler on) is measured with `latvit.targets.protocol`; the
per-op times must account for at least 90% of it (`coverage`), the rest is reported as overhead.
`kernel_coverage` is the same share without the `runtime` category.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError
from latvit.targets.protocol import Timing, default_threads, machine_info, measure_latency, set_threads
from latvit.space.blocks import block_stride
from latvit.space.plan import NetPlan, PlannedBlock, plan_network

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
}

# -- op kinds, by lower-case op type with any "aten::" prefix removed --------------------------------------
LAYOUT_OPS = {
    # ONNX / ORT
    "reshape", "transpose", "flatten", "squeeze", "unsqueeze", "concat", "slice", "split", "expand", "identity",
    "cast", "shape", "tile", "reorderinput", "reorderoutput", "depthtospace", "spacetodepth", "memcpy",
    # XNNPACK operators (names as ExecuTorch's ETDump gives them, spaces removed)
    "staticreshape", "copy", "concatenate", "constantpad", "staticslice", "statictranspose",
    # OpenVINO
    "reorder", "concatenation", "stridedslice", "convert", "broadcast", "shapeof", "variadicsplit",
    # aten
    "view", "_unsafe_view", "permute", "contiguous", "clone", "copy_", "cat", "split_with_sizes", "chunk",
    "unbind", "select", "narrow", "unflatten", "as_strided", "t", "expand_as", "to", "_to_copy", "empty_like",
}
NORM_OPS = {
    "batchnormalization", "layernormalization", "skiplayernormalization", "simplifiedlayernormalization",
    "mvn", "normalizel2", "batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training",
    "layer_norm", "native_layer_norm", "group_norm", "instance_norm",
}
ACT_OPS = {
    "relu", "gelu", "fastgelu", "biasgelu", "erf", "hardswish", "hardsigmoid", "sigmoid", "silu", "swish", "tanh",
    "clip", "clamp", "hardtanh", "elu", "quickgelu", "relu_", "gelu_", "silu_", "hardswish_", "hardtanh_",
}
NORM_MODULES = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
ACT_MODULES = (nn.ReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)

# -- a block's parts, by the first path component below the block (and its role there) -------------------
MIXER_PARTS = ("token_mixer", "attn", "ls1", "norm1", "transformer", "conv_kxk", "conv_1x1", "conv_proj",
               "conv_fusion", "norm")
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
            "schema": "latvit.profile", "schema_version": SCHEMA_VERSION,
            "model": self.model, "runtime": self.runtime, "runtime_version": self.runtime_version,
            "img_size": self.img_size, "threads": self.threads, "source": self.source,
            "e2e": self.e2e.as_dict(), "latency": self.latency.as_dict() if self.latency else None,
            "op_ms": self.op_ms, "overhead_ms": self.overhead_ms, "coverage": self.coverage,
            "kernel_coverage": self.kernel_coverage, "runtime_events": self.runtime_events,
            "categories": self.by_category(), "category_labels": CATEGORIES,
            "blocks": self.by_block(), "plan": self.blocks, "op_types": self.by_op_type(),
            "ops": [asdict(op) for op in self.ops], "machine": self.machine,
        }

    def to_json(self, path: Path) -> None:
        from latvit.utils import atomic_write_text

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
        return [self.modules[".".join(parts[:i])] for i in range(len(parts), -1, -1) if ".".join(parts[:i]) in self.modules]

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
        rel = path[len(b.module_path):].lstrip(".")
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
            return "other", "residual add" if t in ("add", "sum", "eltwise", "subgraph") else f"{b.spec.kind} block glue"
        if b.spec.kind in KIND_ROLE:
            return KIND_ROLE[b.spec.kind]
        return "other", f"unclassified part {rel} of {b.spec.kind}"

    def op(self, name: str, op_type: str, path: str, us_total: float, count: int, runs: int) -> OpTime:
        block, kind = self.locate(path)
        category, reason = self.classify(op_type, path)
        return OpTime(name, op_type, path, block, kind, category, reason, us_total / runs / 1e3, count / runs)


def _plan_rows(plan: NetPlan) -> list[dict[str, Any]]:
    return [{"where": b.where, "module": b.module_path, "kind": b.spec.kind, "in": [b.c_in, b.h, b.w],
             "out": [b.c_out, b.h_out, b.w_out], "gflops": b.cost.flops / 1e9, "params": b.cost.params}
            for b in plan.blocks]


# ---------------------------------------------------------------------------------------------------
# Profilers: one per runtime, each (model, x, threads, protocol) -> (raw ops, e2e Timing, plain Timing)
# ---------------------------------------------------------------------------------------------------
@dataclass
class _Raw:
    """What a runtime profiler returns: per-op totals over `runs` profiled inferences."""

    ops: list[tuple[str, str, str, float, int]]  # (name, op_type, module path, total us, count)
    runs: int
    e2e: Timing
    latency: Timing | None
    source: str
    version: str
    runtime_events: dict[str, float] = field(default_factory=dict)  # mean ms per run of whole-run events


def _profile_eager(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> _Raw:
    """torch.profiler with a range per module call; the top-level aten ops are the ops."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    set_threads(threads)
    model = model.eval()

    @torch.inference_mode()
    def run():
        model(x)

    latency = measure_latency(run, **proto)
    ranges: list = []
    prefix = "latvit.module::"

    def enter(mod, _inp):
        rf = record_function(prefix + mod._latvit_path)
        rf.__enter__()
        ranges.append(rf)

    def leave(mod, _inp, _out):
        ranges.pop().__exit__(None, None, None)

    handles = []
    for path, mod in model.named_modules():
        mod._latvit_path = path
        handles += [mod.register_forward_pre_hook(enter), mod.register_forward_hook(leave)]
    try:
        for _ in range(2):  # the hooks' first calls
            run()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            e2e = measure_latency(run, **{**proto, "warmup": 0})
    finally:
        for h in handles:
            h.remove()
        for mod in model.modules():
            del mod._latvit_path
    # ops partition the root module's range: a leaf-module call is one op (its aten ops and the Python
    # around them); in a non-leaf module each top-level aten op is one op and what remains of the
    # module's own time (its Python between children, and the hooks of its children) is a "python" op
    leaves = {path: type(m).__name__ for path, m in model.named_modules() if not any(True for _ in m.children())}
    totals: dict[tuple[str, str], list] = {}
    inner_us: dict[int, float] = {}  # id(module range event) -> time of its direct children ops/ranges
    module_ranges = []

    def owner(ev):
        parent = ev.cpu_parent
        while parent is not None and not parent.name.startswith(prefix):
            if parent.name.startswith("aten::"):
                return None, True  # nested inside another aten op
            parent = parent.cpu_parent
        return parent, False

    def add(key, us):
        acc = totals.setdefault(key, [0.0, 0])
        acc[0] += us
        acc[1] += 1

    for ev in prof.events():
        is_range = ev.name.startswith(prefix)
        if not is_range and not ev.name.startswith("aten::"):
            continue
        parent, nested = owner(ev)
        if nested or (parent is not None and parent.name[len(prefix):] in leaves):
            continue  # inside a top-level aten op or inside a leaf module: counted there
        us = ev.time_range.elapsed_us()
        if parent is not None:
            inner_us[id(parent)] = inner_us.get(id(parent), 0.0) + us
        if is_range:
            path = ev.name[len(prefix):]
            if path in leaves:
                add((path, leaves[path]), us)
            else:
                module_ranges.append((ev, path, us))
        else:
            add((parent.name[len(prefix):] if parent is not None else "", ev.name), us)
    for ev, path, us in module_ranges:
        add((path, "python"), max(0.0, us - inner_us.get(id(ev), 0.0)))
    ops = [(f"{p}:{t}", t, p, us, n) for (p, t), (us, n) in totals.items()]
    return _Raw(ops, e2e.iters, e2e, latency, "torch.profiler: leaf-module calls (forward-hook ranges), the aten ops between them, each module's own Python",
                f"torch {torch.__version__}")


_ORT_SUFFIXES = re.compile(r"(_token_\d+|_nchwc|_bn|_fused|_Fused\w*)$")


def _onnx_scopes(onnx_path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Node name -> torch module scopes (outermost first), and output name -> node name."""
    import onnx

    scopes, producer = {}, {}
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        raw = meta.get("pkg.torch.onnx.name_scopes")
        try:
            scopes[node.name] = [s for s in json.loads(raw.replace("'", '"'))] if raw else []
        except ValueError:
            scopes[node.name] = []
        for out in node.output:
            producer[out] = node.name
    return scopes, producer


def _resolve_onnx_name(name: str, scopes: dict, producer: dict) -> str | None:
    """The ONNX node behind a runtime's (possibly rewritten) node name, or None."""
    candidates = [name, name.split("/")[0]]
    for base in list(candidates):
        stripped = base
        while True:
            new = _ORT_SUFFIXES.sub("", stripped)
            if new == stripped:
                break
            stripped = new
            candidates.append(stripped)
    for c in candidates:
        if c in scopes:
            return c
        if c in producer:
            return producer[c]
    return None


def _paths_with_neighbours(names: list[str], paths: list[str | None], op_types: list[str]) -> list[str]:
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


def _profile_ort(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> _Raw:
    """ONNX Runtime's profiler JSON: node `_kernel_time` events inside the timed `model_run`s."""
    from latvit.runtimes import runnable_runtime

    rt = runnable_runtime("ort")
    path = rt.export(model, x, workdir / "model.onnx")
    xn = x.numpy()
    plain = rt.load(path, x, threads)
    latency = measure_latency(lambda: plain(xn), **proto)
    sess = rt.session(path, threads, profile_prefix=str(workdir / "ort_profile"))
    name = sess.get_inputs()[0].name
    e2e = measure_latency(lambda: sess.run(None, {name: xn}), **proto)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[-e2e.iters:]
    nodes = sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                   key=lambda e: e["ts"])
    scopes, producer = _onnx_scopes(path)
    locator_paths: dict[str, str | None] = {}
    totals: dict[str, list] = {}
    r, seq, prev_end, gaps = 0, [], None, {}
    for ev in nodes:
        while r < len(runs) and ev["ts"] > runs[r]["ts"] + runs[r]["dur"]:
            r, prev_end = r + 1, None
        if r >= len(runs) or ev["ts"] < runs[r]["ts"]:
            continue
        node = ev["name"][: -len("_kernel_time")]
        acc = totals.setdefault(node, [ev["args"].get("op_name", "?"), 0.0, 0])
        acc[1] += ev["dur"]
        acc[2] += 1
        if prev_end is not None:  # the executor's time between the previous node event and this one
            gaps[node] = gaps.get(node, 0.0) + max(0.0, ev["ts"] - prev_end)
        prev_end = ev["ts"] + ev["dur"]
        if r == len(runs) - 1:
            seq.append(node)  # execution order of one run, for the neighbour rule
    for node in seq or totals:
        onnx_name = _resolve_onnx_name(node, scopes, producer)
        locator_paths[node] = None if onnx_name is None else "\x00".join(scopes.get(onnx_name, []))
    order = list(locator_paths)
    filled = _paths_with_neighbours(order, [locator_paths[n] for n in order], [totals[n][0] for n in order])
    scope_of = dict(zip(order, filled))
    ops = [(n, t, scope_of.get(n, ""), us, c) for n, (t, us, c) in totals.items()]
    ops += [(f"{n} (executor)", "ORT executor", scope_of.get(n, ""), us, totals[n][2]) for n, us in gaps.items()]
    executor = sorted((e for e in events if e.get("name") == "SequentialExecutor::Execute"), key=lambda e: e["ts"])
    mean_ms = lambda evs: sum(e["dur"] for e in evs) / len(evs) / 1e3 if evs else 0.0  # noqa: E731
    import onnxruntime

    return _Raw(ops, len(runs), e2e, latency, "onnxruntime profiler (enable_profiling JSON, node kernel times; the "
                "executor's time between node events as `runtime`)", f"onnxruntime {onnxruntime.__version__}",
                {"model_run": mean_ms(runs), "SequentialExecutor::Execute": mean_ms(executor[-len(runs):])})


def _ov_module_path(names: list[str]) -> str | None:
    """The torch module path in OpenVINO's torch-frontend layer names ("__module.stem.0.bn/aten::...")."""
    for n in names:
        m = re.search(r"__module\.([^/]+)/", n)
        if m:
            return m.group(1)
    return None


def _profile_openvino(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> _Raw:
    """OpenVINO per-layer performance counters of the model the openvino runtime compiles (direct torch
    frontend, fp32), with PERF_COUNT on; a fused layer maps through its `originalLayersNames`."""
    from latvit.runtimes import runnable_runtime

    rt = runnable_runtime("openvino")
    import openvino as ov

    from latvit.runtimes.openvino import compile_config

    compiled = ov.Core().compile_model(rt.convert(model, x), "CPU", {**compile_config(threads), "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    xn = x.numpy()
    plain = rt.load(rt.export(model, x, workdir / "model.xml"), x, threads)
    latency = measure_latency(lambda: plain(xn), **proto)
    originals: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        names = str(info["originalLayersNames"].astype(str)) if "originalLayersNames" in info else ""
        originals[op.get_friendly_name()] = [n for n in names.split(",") if n]
    for _ in range(proto.get("warmup", 0)):
        request.infer({0: xn})
    # the counters describe the last inference only, and reading them costs more than some models' whole
    # inference: time the calls with counting on, then repeat as many calls reading the counters after each
    e2e = measure_latency(lambda: request.infer({0: xn}), **{**proto, "warmup": 0})
    totals: dict[str, list] = {}
    for _ in range(e2e.iters):
        request.infer({0: xn})
        for p in request.get_profiling_info():
            us = p.real_time.total_seconds() * 1e6
            if us <= 0:
                continue  # fused into another layer (status NOT_RUN) or a constant
            acc = totals.setdefault(p.node_name, [p.node_type, 0.0, 0])
            acc[1] += us
            acc[2] += 1
    order = list(totals)
    paths = [_ov_module_path(originals.get(n, []) + [n]) for n in order]
    filled = _paths_with_neighbours(order, paths, [totals[n][0] for n in order])
    ops = [(n, totals[n][0], p, totals[n][1], totals[n][2]) for n, p in zip(order, filled)]
    return _Raw(ops, e2e.iters, e2e, latency, "openvino PERF_COUNT per-layer counters (real_time), read after each "
                "of as many calls as were timed", rt.version())


_XNN_ALIASES = {  # XNNPACK node type (serialized, "XNN" removed) -> operator names it may run as
    "conv2d": ("convolution", "fullyconnected"),  # a 1x1 convolution runs as a GEMM
    "depthwiseconv2d": ("convolution",),
    "convtranspose2d": ("deconvolution",),
    "statictranspose": ("transpose",),
    "staticslice": ("slice",),
    "staticreshape": ("staticreshape", "reshape", "copy"),
    "globalavgpooling2d": ("globalaveragepooling", "mean", "staticmean"),
    "avgpooling2d": ("averagepooling",),
    "maxpooling2d": ("maxpooling",),
    "div": ("divide",),
    "staticresizebilinear2d": ("resizebilinear",),
    "staticconstantpad": ("constantpad",),
}


def _xnn_key(name: str) -> str:
    """"Convolution (NHWC, F32) IGEMM #3" -> "convolution"; "XNNConcatenate3" -> "concatenate"."""
    key = re.sub(r"[^a-z0-9]", "", re.sub(r"\s*\(.*$|\s*#\d+$", "", name).removeprefix("XNN").lower())
    return "concatenate" if key.startswith("concatenate") else key


def align_xnnpack(op_names: list[str], xnodes: list[tuple[str, int | None]]) -> list[int | None]:
    """The debug handle behind each XNNPACK operator of one partition (names in execution order) from the
    partition's serialized nodes (type, handle) in definition order. XNNPACK runs the nodes in that order,
    one operator per node, except nodes its subgraph passes fuse away (a clamp into its convolution):
    so each operator takes the next node of a compatible type, looking at most `lookahead` nodes ahead
    (a misnamed operator must not swallow the rest); None where no node fits."""
    out: list[int | None] = []
    j, lookahead = 0, 4
    for name in op_names:
        key = _xnn_key(name)
        for k in range(j, min(j + lookahead, len(xnodes))):
            xkey = _xnn_key(xnodes[k][0])
            if key in _XNN_ALIASES.get(xkey, (xkey,)) or key.startswith(xkey) or xkey.startswith(key):
                out.append(xnodes[k][1])
                j = k + 1
                break
        else:
            out.append(None)
    return out


def _profile_executorch(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> _Raw:
    """ExecuTorch's ETDump (event tracer of the Python runtime), read with `executorch.devtools.Inspector`."""
    from latvit.runtimes import runnable_runtime

    rt = runnable_runtime("executorch")
    from executorch.devtools import Inspector

    from latvit.runtimes.executorch import export_for_profiling, load_profiled

    pte = workdir / "model.pte"
    info = export_for_profiling(model, x, pte)
    xn = x.numpy()
    plain = rt.load(pte, x, threads)
    latency = measure_latency(lambda: plain(xn), **proto)
    program, run = load_profiled(pte, threads)
    if not program._program.has_etdump():
        raise LatvitError("the installed executorch pybindings were built without the ETDump event tracer "
                          "(EXECUTORCH_ENABLE_EVENT_TRACER); install the executorch wheel from PyPI")
    e2e = measure_latency(lambda: run(xn), **proto)
    program.write_etdump_result_to_file(str(workdir / "etdump.etdp"), str(workdir / "debug.bin"))
    block = next((b for b in Inspector(etdump_path=str(workdir / "etdump.etdp")).event_blocks
                  if b.name == "Execute"), None)
    if block is None:
        raise LatvitError("executorch wrote an ETDump without Execute events; its event tracer is not working "
                          "in this install (profile on ort, openvino or eager instead)")
    n = e2e.iters  # the ETDump holds every call since loading: keep the timed ones, the last n

    def us(ev) -> np.ndarray:
        return np.asarray(ev.perf_data.raw[-n:], dtype=float) * 1e3  # Inspector gives ms

    def scopes(handle) -> str:
        return "\x00".join(info.scopes.get(handle, [])) if handle is not None else ""

    partition_of = {tuple(p.handles): p for p in info.partitions}
    xnn: dict[int, list] = {}
    for ev in block.events:
        if ev.is_delegated_op:
            xnn.setdefault(ev._instruction_id, []).append(ev)
    rows: list[tuple[float, str, str, str | None, float]] = []  # (start, name, op type, scopes | None, total us)
    events = {}
    for ev in block.events:
        iid = ev._instruction_id
        if ev.name == "Method::execute":
            events["Method::execute"] = float(us(ev).mean()) / 1e3
        elif ev.name == "OPERATOR_CALL":  # a portable kernel with its argument handling (native_call_* inside)
            handle = info.instructions.get(iid)
            target = info.targets.get(handle, "portable op").replace("aten.", "aten::")
            rows.append((ev._start_time[-1], f"{target}#{iid}", target, scopes(handle) or None, us(ev).sum()))
        elif ev.name == "DELEGATE_CALL":
            handles = info.instructions.get(iid)
            part = partition_of.get(tuple(handles) if isinstance(handles, list) else (handles,))
            ops = sorted(xnn.get(iid, []), key=lambda e: e._start_time[-1])
            if not ops:  # no per-operator events: the partition is one op, at its first node
                first = handles[0] if isinstance(handles, list) and handles else handles
                rows.append((ev._start_time[-1], f"xnnpack#{iid}", "XNNPACK partition", scopes(first) or None,
                             us(ev).sum()))
                continue
            names = [re.sub(r"\s*#\d+$", "", o.name) for o in ops]
            aligned = align_xnnpack([o.name for o in ops], part.xnodes if part else [])
            inside = np.zeros(n)
            for o, name, handle in zip(ops, names, aligned):
                t = us(o)
                inside += t
                rows.append((o._start_time[-1], f"{o.name}@{iid}", name, scopes(handle) or None, t.sum()))
            call = us(ev)
            # the call's time outside its operators, split where it happens: before the first operator
            # (ns timestamps of the last run give the proportion) and after the last
            head_ns = ops[0]._start_time[-1] - ev._start_time[-1]
            end_ns = lambda e: e._start_time[-1] + e.perf_data.raw[-1] * 1e6  # noqa: E731 - raw is in ms
            tail_ns = end_ns(ev) - end_ns(ops[-1])
            rest = np.maximum(call - inside, 0.0).sum()
            share = head_ns / (head_ns + tail_ns) if head_ns + tail_ns > 0 else 0.5
            rows.append((ops[0]._start_time[-1] - 0.5, f"xnnpack#{iid} setup", "XNNPACK delegate setup", None,
                         rest * share))
            rows.append((ops[-1]._start_time[-1] + 0.5, f"xnnpack#{iid} return", "XNNPACK delegate return", None,
                         rest * (1 - share)))
    rows.sort(key=lambda r: r[0])
    # delegate setup takes the place of the partition's first operator, return that of its last one;
    # layout transposes XNNPACK inserts (no debug handle) take their producer's place
    paths = [r[3] for r in rows]
    types = ["input" if r[2] == "XNNPACK delegate setup" else r[2] for r in rows]
    filled = _paths_with_neighbours([r[1] for r in rows], paths, types)
    ops = [(r[1], r[2], path, r[4], n) for r, path in zip(rows, filled)]
    return _Raw(ops, n, e2e, latency, "executorch ETDump (event tracer) via executorch.devtools.Inspector: portable "
                "OPERATOR_CALLs, XNNPACK per-operator events, delegate time outside them as `runtime`",
                rt.version(), events)


PROFILERS: dict[str, Callable[..., _Raw]] = {
    "eager": _profile_eager,
    "ort": _profile_ort,
    "openvino": _profile_openvino,
    "executorch": _profile_executorch,
}


def profile_model(model: str | Path | nn.Module, runtime: str = "ort", *, img_size: int | None = None,
                  threads: int | None = None, warmup: int = 5, iters: int = 20, min_seconds: float = 0.5,
                  deploy: bool = True, workdir: Path | None = None) -> Profile:
    """Profile one image (1, 3, S, S) through `model` (a name, spec, spec file, saved directory or a built
    `LatvitNet`) on `runtime` ("eager", "ort", "openvino", "executorch"). With `deploy` (the default, as in
    `latvit bench`) the deployed model is profiled, BatchNorm folded and attention biases precomputed;
    `deploy=False` profiles the model as built. Returns a `Profile`; see the module docstring."""
    from latvit.models import create_model
    from latvit.runtimes import RUNTIME_NAMES
    from latvit.space.builder import LatvitNet

    if runtime not in PROFILERS:
        known = ", ".join(PROFILERS)
        if runtime in RUNTIME_NAMES:
            raise LatvitError(f"runtime '{runtime}' has no per-op profiler in latvit; choose from {known}")
        from latvit.runtimes import get_runtime

        get_runtime(runtime)  # an unknown name raises with a suggestion; a third-party runtime loads, but:
        raise LatvitError(f"runtime '{runtime}' has no per-op profiler in latvit; choose from {known}")
    threads = threads or default_threads()
    if isinstance(model, LatvitNet):
        if img_size is not None and img_size != model.img_size:
            raise LatvitError(f"the model was built for {model.img_size}; build it with img_size={img_size}")
        net = model
    else:
        net = create_model(model, img_size=img_size)
    net = net.eval()
    if deploy:
        from latvit.deploy import deploy as deploy_model

        net = deploy_model(net).eval()
    size = img_size or net.img_size
    plan = plan_network(net.spec, size, num_classes=net.num_classes)
    x = torch.randn(1, net.in_chans, size, size)
    net.check_input(x)
    proto = dict(warmup=warmup, iters=iters, min_seconds=min_seconds)
    with tempfile.TemporaryDirectory(prefix="latvit-profile-") as tmp:
        wd = Path(workdir) if workdir else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        raw = PROFILERS[runtime](net, x, threads, proto, wd)
    locator = Locator(net, plan)
    ops = []
    for name, op_type, scope, us, count in raw.ops:
        path = locator.innermost(scope.split("\x00"))  # eager gives one path, ONNX runtimes the scope list
        ops.append(locator.op(name, op_type, path, us, count, raw.runs))
    ops.sort(key=lambda o: -o.ms)
    return Profile(net.spec.name, runtime, raw.version, size, threads, raw.source, ops, raw.e2e, raw.latency,
                   _plan_rows(plan), machine_info(threads), raw.runtime_events)


# ---------------------------------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------------------------------
CATEGORY_COLORS = {
    "stem": "#8c564b", "downsampling": "#9467bd", "token_mixer": "#d62728", "mlp": "#1f77b4", "norm": "#2ca02c",
    "activation": "#ff7f0e", "reshape": "#e377c2", "other": "#7f7f7f", "runtime": "#bcbd22", "overhead": "#c7c7c7",
}


def profile_table(prof: Profile, top: int = 10):
    """A rich renderable: per-category summary, per-block breakdown and the `top` slowest ops."""
    from rich.console import Group
    from rich.table import Table

    head = (f"{prof.model} @ {prof.img_size} on {prof.runtime_version}, {prof.threads} threads: "
            f"{prof.e2e.mean_ms:.3f} ms/img profiled (unprofiled median "
            f"{prof.latency.median_ms:.3f} ms), ops explain {100 * prof.coverage:.1f}% "
            f"({100 * prof.kernel_coverage:.1f}% without runtime)")
    cats = Table(title=head)
    cats.add_column("category")
    cats.add_column("ms", justify="right")
    cats.add_column("%", justify="right")
    total = prof.e2e.mean_ms
    for c, ms in prof.by_category().items():
        cats.add_row(CATEGORIES.get(c, c), f"{ms:.3f}", f"{100 * ms / total:.1f}")
    blocks = Table(title="per block (ms)")
    blocks.add_column("block")
    blocks.add_column("kind")
    blocks.add_column("ms", justify="right")
    for c in CATEGORIES:
        blocks.add_column(c[:8], justify="right")
    for row in prof.by_block():
        blocks.add_row(row["block"], row["kind"], f"{row['ms']:.3f}",
                       *[f"{row['categories'].get(c, 0.0):.3f}" if row["categories"].get(c) else "" for c in CATEGORIES])
    ops = Table(title=f"top {top} ops")
    for col in ("op", "type", "block", "category", "ms", "calls"):
        ops.add_column(col, justify="right" if col in ("ms", "calls") else "left")
    for op in prof.ops[:top]:
        ops.add_row(op.name[:48], op.op_type, op.block, op.category, f"{op.ms:.3f}", f"{op.calls:g}")
    return Group(cats, blocks, ops)


def plot_profile(prof: Profile, path: Path) -> None:
    """Stacked bars: one bar per block (ms by category), plus the end-to-end bar with overhead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latvit.utils import save_png

    rows = prof.by_block()
    labels = [r["block"] for r in rows] + ["total"]
    fig, ax = plt.subplots(figsize=(max(8, 0.32 * len(labels)), 4.5))
    bottom = np.zeros(len(labels))
    totals = prof.by_category()
    for c in list(CATEGORIES) + ["overhead"]:
        vals = np.array([r["categories"].get(c, 0.0) for r in rows] + [totals[c]])
        if vals.sum() <= 0:
            continue
        ax.bar(range(len(labels)), vals, bottom=bottom, color=CATEGORY_COLORS[c], label=CATEGORIES.get(c, c))
        bottom += vals
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_ylabel("ms per image")
    ax.set_title(f"{prof.model} @ {prof.img_size}, {prof.runtime_version}, {prof.threads} threads "
                 f"(ops explain {100 * prof.coverage:.0f}%)", fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


__all__ = ["CATEGORIES", "COVERAGE_MIN", "OpTime", "PROFILERS", "Profile", "plot_profile", "profile_model",
           "profile_table"]
