"""ExecuTorch with the XNNPACK delegate (the mobile CPU path; it runs on x86 Linux too).

Export: `torch.export` -> `to_edge_transform_and_lower` with the XNNPACK partitioner -> a `.pte` program.
Operators XNNPACK does not take stay on ExecuTorch's portable kernels; `delegation(model, example)`
says how much of the graph went to XNNPACK.

Threads: XNNPACK runs on ExecuTorch's process-wide threadpool. Python can resize it only through the
experimental pybinding `_unsafe_reset_threadpool(n)` (it defaults to the number of cores); `load` calls it,
so the setting applies to every ExecuTorch program in the process (bench rows run one per process).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import missing_extra
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
    its logits were off by ~1% of their scale. Other softmaxes (after matmuls) stay delegated.
    """
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import SoftmaxConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class SafeSoftmaxConfig(SoftmaxConfig):
        def check_constraints(self, node, ep) -> bool:
            source = node.all_input_nodes[0]
            if "convolution" in str(source.target) and source.meta["val"].dim() == 4:
                return False
            return super().check_constraints(node, ep)

    configs = [SafeSoftmaxConfig if c is SoftmaxConfig else c for c in ALL_PARTITIONER_CONFIGS]
    return XnnpackPartitioner(configs=configs)


def lower(model: nn.Module, example: torch.Tensor):
    """The edge program manager of `model` at `example`'s shape, lowered to XNNPACK."""
    import warnings

    from executorch.exir import to_edge_transform_and_lower

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        exported = torch.export.export(model.eval(), (example,))
        return to_edge_transform_and_lower(exported, partitioner=[partitioner()])


class ExecuTorchRuntime(Runtime):
    name, extra, suffix = "executorch", "executorch", ".pte"

    def missing(self) -> str | None:
        try:
            import executorch.exir  # noqa: F401
            import executorch.runtime  # noqa: F401
        except ImportError:
            return str(missing_extra("executorch", self.extra))
        return None

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
        method = EtRuntime.get().load_program(Path(path)).load_method("forward")

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


RUNTIME = ExecuTorchRuntime()
