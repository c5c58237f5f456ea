"""LiteRT profiler: the CompiledModel's own profiler (TFLite's op profiling, what `benchmark_model
--enable_op_profiling` prints) through libLiteRt.so's C API; XNNPACK's per-operator events matched in order
to the `.tflite`'s operators, whose output tensor names litert-torch writes from the torch module stack."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from latvit.analysis.profile.executorch import align_xnnpack
from latvit.analysis.profile.model import RawProfile, paths_with_neighbours, profiled_calls, timed_artifact
from latvit.runtimes import runnable_runtime
from latvit.runtimes.litert import ProfiledModel, operators
from latvit.targets.protocol import measure_latency

# TFLite operator -> the XNNPACK node type `align_xnnpack` knows it by (an XNNPACK operator is matched to
# the next TFLite operator of a compatible type; PADs and RESHAPEs XNNPACK folds away get none)
_TFLITE_AS_XNN = {
    "CONV_2D": "Conv2d",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2d",
    "TRANSPOSE_CONV": "ConvTranspose2d",
    "FULLY_CONNECTED": "FullyConnected",
    "BATCH_MATMUL": "BatchMatrixMultiply",
    "AVERAGE_POOL_2D": "AvgPooling2d",
    "MAX_POOL_2D": "MaxPooling2d",
    "MEAN": "GlobalAvgPooling2d",
    "ADD": "Add",
    "SUB": "Subtract",
    "MUL": "Multiply",
    "DIV": "Div",
    "SQUARED_DIFFERENCE": "SquaredDifference",
    "RSQRT": "ReciprocalSquareRoot",
    "SQRT": "SquareRoot",
    "MAXIMUM": "Maximum",
    "MINIMUM": "Minimum",
    "GELU": "Gelu",
    "LOGISTIC": "Sigmoid",
    "HARD_SWISH": "HardSwish",
    "TANH": "Tanh",
    "SOFTMAX": "Softmax",
    "TRANSPOSE": "StaticTranspose",
    "RESHAPE": "StaticReshape",
    "PAD": "StaticConstantPad",
    "SLICE": "StaticSlice",
    "STRIDED_SLICE": "StaticSlice",
    "CONCATENATION": "Concatenate",
    "RESIZE_BILINEAR": "StaticResizeBilinear2d",
    "QUANTIZE": "Convert",
    "DEQUANTIZE": "Convert",
}
# LiteRT's own events around the interpreter: their time is `runtime`, given to the first operator
_RUN_EVENTS = {
    "LiteRT::Run[buffer registration]": "LiteRT buffer registration",
    "LiteRT::Run[Buffer sync]": "LiteRT buffer sync",
}


class ModulePaths:
    """Torch module paths from litert-torch's tensor names. A name is the node's module stack, one level per
    module called: "{module.class}_{last path segment}" joined by "/" (root first, ";N" after), e.g.
    "...LatvitNet/...Stage_0/...FusedMeta4D_0/...ConvMlpBN_mlp/...Conv2d_fc1;2". Only the last segment of each
    path is kept ("stages.0.blocks.0" -> "0"), so each level is found again as the nearest submodule of the
    level above with that class and that last segment: "stages.0.blocks.0.mlp.fc1"."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._cache: dict[str, str | None] = {}

    def __call__(self, tensor_name: str) -> str | None:
        scope = tensor_name.split(";")[0]
        if scope not in self._cache:
            self._cache[scope] = self._resolve(scope.split("/"))
        return self._cache[scope]

    def _resolve(self, levels: list[str]) -> str | None:
        if len(levels) < 2:
            return None  # a constant, a graph input or output: placed by its neighbours
        module, path = self.model, ""
        for level in levels[1:]:  # levels[0] is the model itself
            qualified, _, segment = level.rpartition(".")[2].partition("_")
            found = [
                (name, m)
                for name, m in module.named_modules()
                if name and name.rsplit(".", 1)[-1] == segment and type(m).__qualname__ == qualified
            ]
            if not found:
                break
            name, module = min(found, key=lambda item: item[0].count("."))
            path = f"{path}.{name}" if path else name
        return path or None


def _per_run(events: list) -> list[list]:
    """Events split into inferences: each starts at its "Invoke" event (LiteRT's buffer events are keyed by
    name, so it does not matter which inference they fall in)."""
    runs: list[list] = []
    for e in events:
        if e.tag == "Invoke" and e.kind == "default":
            runs.append([])
        if runs:
            runs[-1].append(e)
    return runs


def profile_litert(model: nn.Module, x: torch.Tensor, threads: int, proto: dict, workdir: Path) -> RawProfile:
    """LiteRT's profiler events of the `.tflite` the litert runtime exports, on XNNPACK with `threads`."""
    rt = runnable_runtime("litert")
    path, latency = timed_artifact("litert", model, x, threads, proto, workdir)
    nodes = {index: (op, tensor) for index, op, tensor in operators(path)}
    paths = ModulePaths(model)
    with ProfiledModel(path, threads) as profiled:
        for _ in range(proto.get("warmup", 0)):
            profiled.run()
        profiled.reset()
        e2e = measure_latency(profiled.run, **profiled_calls({**proto, "warmup": 0}))
        runs = _per_run(profiled.events())  # the timed calls' own events: op times and e2e are the same runs
    rows: dict[str, list] = {}  # name -> [op type, module path or None, total us, count], in execution order
    invoke_ms = 0.0
    for events in runs:
        operator_us, invoke_us = 0.0, 0.0
        names = [e.tag for e in events if e.kind.startswith("delegate")]
        on_tflite = {e.index for e in events if e.kind == "operator"}
        delegated = [(_TFLITE_AS_XNN.get(op, op), i) for i, (op, _) in nodes.items() if i not in on_tflite]
        placed = iter(align_xnnpack(names, delegated))
        for e in events:
            if e.kind.startswith("delegate"):
                node = next(placed)
                key, op_type, path = f"{e.tag} #{e.index}", e.tag, None if node is None else paths(nodes[node][1])
            elif e.kind == "operator" and e.index in nodes:  # a TFLite kernel outside XNNPACK
                key, op_type, path = f"{e.tag}@{e.index}", e.tag, paths(nodes[e.index][1])
            elif e.tag in _RUN_EVENTS:
                key, op_type, path = _RUN_EVENTS[e.tag], "LiteRT run", None
            else:
                if e.tag == "Invoke" and e.kind == "default":
                    invoke_us = e.elapsed_us
                    invoke_ms += invoke_us / 1e3
                continue
            row = rows.setdefault(key, [op_type, path, 0.0, 0])
            row[2] += e.elapsed_us
            row[3] += 1
            operator_us += e.elapsed_us if op_type != "LiteRT run" else 0.0
        row = rows.setdefault("Invoke outside operators", ["LiteRT invoke", None, 0.0, 0])
        row[2] += max(0.0, invoke_us - operator_us)
        row[3] += 1
    order = list(rows)
    types = ["input" if rows[n][0] in ("LiteRT run", "LiteRT invoke") else rows[n][0] for n in order]
    filled = paths_with_neighbours(order, [rows[n][1] for n in order], types)
    ops = [(n, rows[n][0], path, rows[n][2], rows[n][3]) for n, path in zip(order, filled)]
    return RawProfile(
        ops,
        len(runs),
        e2e,
        latency,
        "LiteRT CompiledModel profiler (C API): XNNPACK per-operator and "
        "TFLite kernel events; Invoke outside them and LiteRT's buffer handling as `runtime`",
        rt.version(),
        {"Invoke": invoke_ms / max(len(runs), 1)},
    )
