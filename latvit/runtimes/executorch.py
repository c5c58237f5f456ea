"""ExecuTorch with the XNNPACK delegate (the mobile CPU path; it runs on x86 Linux too).

Export: `torch.export` -> `to_edge_transform_and_lower` with the XNNPACK partitioner -> a `.pte` program.
Operators XNNPACK does not take stay on ExecuTorch's portable kernels; `delegation(model, example)`
says how much of the graph went to XNNPACK.

Threads: XNNPACK runs on ExecuTorch's process-wide threadpool. Python can resize it only through the
experimental pybinding `_unsafe_reset_threadpool(n)` (it defaults to the number of cores); `load` calls it,
so the setting applies to every ExecuTorch program in the process (bench rows run one per process).

Profiling: `export_for_profiling` lowers like `export` and also keeps what maps ExecuTorch's ETDump back
to torch modules (the edge nodes' debug handles and module stacks, the instruction -> debug handle map,
and each XNNPACK partition's nodes in the order XNNPACK defines them); `load_profiled` loads the program
with the ETDump event tracer on. `latvit.analysis.profile` reads the ETDump with
`executorch.devtools.Inspector`.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.runtimes.base import Runner, Runtime


def set_threads(threads: int) -> int:
    """Resize ExecuTorch's threadpool (used by XNNPACK) to `threads`; return the size now in effect."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental API": it is, and it is the only thread control
        from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    return portable_lib._threadpool_get_thread_count()


def partitioner():
    """XNNPACK's partitioner, except that a softmax applied directly to a 4-D convolution output stays on
    the portable kernels.

    Why: XNNPACK keeps convolution outputs channels-last (NHWC) internally, and in executorch 1.5 a
    following softmax over the last *logical* dim (W) is computed over the physical last dim (C) instead.
    EfficientFormerV2's talking-head attention (1x1 conv over heads, then softmax) hits exactly this:
    its logits were off by ~1% of their scale; in an int8 program, where the softmax reads the convolution
    through a dequantize node, by 60%. `to_xnnpack` rewrites those softmaxes so that they are delegated
    correctly; this check is the safety net for any it does not rewrite. Other softmaxes stay delegated.
    """
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import SoftmaxConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class SafeSoftmaxConfig(SoftmaxConfig):
        def check_constraints(self, node, ep) -> bool:
            if _conv_source(node.all_input_nodes[0]):
                return False
            return super().check_constraints(node, ep)

    configs = [SafeSoftmaxConfig if c is SoftmaxConfig else c for c in ALL_PARTITIONER_CONFIGS]
    return XnnpackPartitioner(configs=configs)


def _conv_source(node) -> bool:
    """Whether `node` is a 4-D convolution output, looking through the quantizer's quantize/dequantize."""
    while "quantize_per" in str(node.target):
        node = node.all_input_nodes[0]
    return "convolution" in str(node.target) and node.meta["val"].dim() == 4


def softmax_after_conv_pass():
    """A pass that computes a last-dim softmax of a 4-D convolution output on a 3-D view of it.

    XNNPACK keeps convolution outputs channels-last and its layout pass treats softmax as layout-free, so it
    would normalise over channels instead of W (`partitioner`). A reshape needs the logical (NCHW) layout,
    so the view makes the layout pass transpose back first and the softmax stays in XNNPACK: on
    EfficientFormerV2-S1 the alternative, the portable softmax, took 0.14 ms per call."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from executorch.exir.pass_base import ExportPass

    softmax, view = exir_ops.edge.aten._softmax.default, exir_ops.edge.aten.view_copy.default

    class SoftmaxAfterConvPass(ExportPass):
        def call_operator(self, op, args, kwargs, meta):
            if op != softmax or args[1] not in (-1, 3) or not _conv_source(args[0].node):
                return super().call_operator(op, args, kwargs, meta)
            B, heads, n, m = args[0].to_tensor().shape  # (B, heads, N, M)
            flat = super().call_operator(view, (args[0], [B * heads, n, m]), {}, meta)  # (B * heads, N, M)
            out = super().call_operator(op, (flat, -1, args[2]), {}, meta)
            return super().call_operator(view, (out, [B, heads, n, m]), {}, meta)

    return SoftmaxAfterConvPass()


def to_xnnpack(exported):
    """An exported program (fp32, or int8 from PT2E) as an edge program manager lowered to XNNPACK.

    Before partitioning: no-op `expand_copy`s go (a 4-D `q @ k` decomposes into expand + view + bmm, and
    expand has no XNNPACK kernel: each left a portable op between two delegate calls, splitting
    EfficientFormerV2-S1 into 17 partitions with layout transposes at every boundary; XNNPACK's own pass
    for it runs only after partitioning), and softmaxes after convolutions get their 3-D view."""
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(
        exported, transform_passes=[RemoveNoopExpandCopyPass(), softmax_after_conv_pass()], partitioner=[partitioner()]
    )


def lower(model: nn.Module, example: torch.Tensor):
    """The edge program manager of `model` at `example`'s shape, lowered to XNNPACK."""
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return to_xnnpack(torch.export.export(model.eval(), (example,)))


class ExecuTorchRuntime(Runtime):
    name, extra, suffix = "executorch", "executorch", ".pte"
    requires = ("executorch.exir", "executorch.runtime")

    def version(self) -> str:
        from importlib.metadata import version

        return f"executorch {version('executorch')} (xnnpack)"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lower(model, example).to_executorch().buffer)
        return path

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        from executorch.runtime import Runtime as EtRuntime

        set_threads(threads)
        return _runner(EtRuntime.get().load_program(Path(path)).load_method("forward"))


def _runner(method) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return run


def delegation(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """How the lowered graph splits: {"xnnpack_partitions": n, "portable_ops": m} (ops left outside XNNPACK).
    Many partitions or portable ops mean round trips between XNNPACK and the portable kernels."""
    graph = lower(model, example).exported_program().graph
    calls = [n for n in graph.nodes if n.op == "call_function"]
    delegates = sum(1 for n in calls if "executorch_call_delegate" in str(n.target))
    portable = sum(1 for n in calls if not any(k in str(n.target) for k in ("executorch_call_delegate", "getitem")))
    return {"xnnpack_partitions": delegates, "portable_ops": portable}


# -- profiling: the program plus what maps its ETDump events back to torch modules ------------------------
@dataclass
class Partition:
    """One XNNPACK partition (one DELEGATE_CALL instruction of the program)."""

    handles: list[int]  # debug handles of its edge nodes in graph order: what its DELEGATE_CALL event reports
    xnodes: list[tuple[str, int | None]]  # XNNPACK nodes in definition order: (XNN type, debug handle or None)


@dataclass
class ProgramDebugInfo:
    """What `export_for_profiling` keeps: enough to locate every ETDump event of the `forward` method."""

    scopes: dict[int, list[str]] = field(default_factory=dict)  # debug handle -> module paths, outermost first
    targets: dict[int, str] = field(default_factory=dict)  # debug handle -> edge op ("aten.native_layer_norm")
    instructions: dict[int, int | list[int]] = field(default_factory=dict)  # instruction id -> debug handle(s)
    partitions: list[Partition] = field(default_factory=list)  # in program order


def _scopes(node) -> list[str]:
    """A graph node's module paths from `nn_module_stack`, outermost first ("stem.0", "stem.0.conv")."""
    return [path for path, _cls in (node.meta.get("nn_module_stack") or {}).values()]


def xnnpack_nodes(processed: bytes) -> list[tuple[str, int | None]]:
    """The nodes of a serialized XNNPACK partition, in definition order: (type, debug handle).

    XNNPACK names its profiling events by operator type and ordinal ("Convolution (NHWC, F32) IGEMM #2"),
    not by debug handle, but the partition's flatbuffer keeps each node's debug handle; it is decoded with
    the flatc that ships with executorch. Nodes the XNNPACK passes insert (layout transposes) have none."""
    from executorch.backends.xnnpack import serialization
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _get_flatc_path

    header = XNNHeader.from_bytes(processed[: XNNHeader.EXPECTED_LENGTH])
    graph = processed[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size]
    schema = Path(serialization.__path__[0]) / "schema.fbs"
    with tempfile.TemporaryDirectory(prefix="latvit-xnn-") as tmp:
        (Path(tmp) / "graph.bin").write_bytes(graph)
        subprocess.run(
            [
                _get_flatc_path(),
                "--json",
                "--strict-json",
                "--raw-binary",
                "-o",
                tmp,
                str(schema),
                "--",
                str(Path(tmp) / "graph.bin"),
            ],
            check=True,
            capture_output=True,
        )
        text = (Path(tmp) / "graph.json").read_text()
    # flatc writes unbounded clamps (output_min_max) as bare inf / nan, which JSON spells differently
    text = re.sub(r"(?<=[:\[,\s])(-?)inf\b", r"\1Infinity", text)
    nodes = json.loads(re.sub(r"(?<=[:\[,\s])-?nan\b", "NaN", text)).get("xnodes", [])
    unset = 2**16 - 1  # the XNNPACK passes' placeholder handle for nodes they insert
    return [
        (n.get("xnode_union_type", "?"), None if n.get("debug_handle", unset) == unset else n["debug_handle"])
        for n in nodes
    ]


def export_for_profiling(model: nn.Module, example: torch.Tensor, path: Path) -> ProgramDebugInfo:
    """Lower `model` like `export` and write the `.pte` to `path`; return its `ProgramDebugInfo`.

    The debug handles are read before `to_executorch`, whose emitter replaces a node's handle by its
    instruction index (keeping the original in `debug_handle_map`)."""
    edge = lower(model, example)
    info = ProgramDebugInfo()
    gm = edge.exported_program().graph_module
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if "executorch_call_delegate" in str(node.target):
            lowered = getattr(gm, node.args[0].target)
            inner = [n for n in lowered.original_module.graph.nodes if n.op == "call_function"]
            for n in inner:
                if n.meta.get("debug_handle") is not None:
                    info.scopes.setdefault(n.meta["debug_handle"], _scopes(n))
                    info.targets.setdefault(n.meta["debug_handle"], _target_name(n.target))
            try:
                xnodes = xnnpack_nodes(lowered.processed_bytes)
            except Exception as e:  # noqa: BLE001 - no flatc, or a schema this code does not know
                import warnings

                warnings.warn(
                    f"cannot decode XNNPACK partition {node.args[0].target} ({type(e).__name__}: {e}); "
                    "its operators are located by their neighbours only",
                    stacklevel=2,
                )
                xnodes = []
            info.partitions.append(
                Partition([n.meta["debug_handle"] for n in inner if n.meta.get("debug_handle") is not None], xnodes)
            )
        elif node.meta.get("debug_handle") is not None:
            info.scopes.setdefault(node.meta["debug_handle"], _scopes(node))
            info.targets.setdefault(node.meta["debug_handle"], _target_name(node.target))
    program = edge.to_executorch()
    info.instructions = dict(program.debug_handle_map.get("forward", {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(program.buffer)
    return info


def _target_name(target) -> str:
    """ "aten.native_layer_norm" for an edge op overload, the function name otherwise."""
    name = str(getattr(target, "_name", None) or getattr(target, "__name__", target))
    return name.replace("::", ".").split(".default")[0]


def load_profiled(path: Path, threads: int):
    """(program, runner) of `path` with ExecuTorch's ETDump event tracer on; after the calls,
    `program.write_etdump_result_to_file(etdump, debug)` writes what was traced."""
    from executorch.runtime import Runtime as EtRuntime

    set_threads(threads)
    program = EtRuntime.get().load_program(Path(path), enable_etdump=True)
    return program, _runner(program.load_method("forward"))


RUNTIME = ExecuTorchRuntime()
