"""LiteRT (formerly TensorFlow Lite) on the CPU: the Android runtime, run here with its XNNPACK delegate.

Export: Google's `litert-torch` converter (`torch.export` -> StableHLO -> the LiteRT converter) writes one
`.tflite` flatbuffer at the example's static shape, NCHW in and logits out as in PyTorch (the converter
inserts the layout transposes itself). That file is what a phone runs: the same artifact can be pushed
and timed with LiteRT's `benchmark_model` on a device.

Run: the `ai-edge-litert` interpreter with its default delegate, XNNPACK, on `threads` threads (the
interpreter's own `num_threads`, which sizes XNNPACK's threadpool per interpreter, not per process).

A converter failure becomes one LatvitError line naming the operator and the reason (`conversion_error`),
never a converter traceback.

Also here, because they are LiteRT's own tooling: int8 with Google's ai-edge-quantizer and latvit's
accuracy control around it (`quantize_int8`, called by `latvit.deploy.quantize`), and LiteRT's op profiler
through its C API (`ProfiledModel`, read by `latvit.analysis.profile.litert`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError, first_line, missing_extra
from latvit.runtimes.base import Runner, Runtime

EXTRA = "litert"


# litert-torch's own switch for the progress tree it draws on stdout; latvit reports its own progress
_QUIET_ENV = {"LITERT_TORCH_SHOW_PROGRESS": "n"}


@contextlib.contextmanager
def _quiet_converter():
    """Progress displays off while the LiteRT tools run (litert-torch's by `_QUIET_ENV`, the tqdm bars of
    ai-edge-quantizer, which has no switch for some of them, by holding back what Python writes to stderr),
    and warnings and torch's complaints about litert-torch's pytree registrations; all restored afterwards."""
    previous = {key: os.environ.get(key) for key in _QUIET_ENV}
    os.environ.update(_QUIET_ENV)
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        pytree_log.setLevel(level)
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _litert_torch():
    """The `litert_torch` module (importing it takes seconds: it brings JAX and the converter)."""
    try:
        with _quiet_converter():
            import litert_torch
    except ImportError:
        raise missing_extra("litert_torch", EXTRA) from None
    return litert_torch


# How the converter names the failing operator: the FX node it was lowering ("While executing %median :
# ... target=torch.ops.aten.median.dim"), else any aten overload or StableHLO / TFLite op in the message.
_NODE_TARGET = re.compile(r"target=torch\.ops\.(aten\.\w+(?:\.\w+)?)")
_OPERATOR = re.compile(r"\b(aten(?:\.|::)\w+(?:\.\w+)?|(?:stablehlo|chlo|tfl|mhlo)\.\w+)")
# the user's source line FX keeps for that node ("Original traceback: File ".../x.py", line 12, in forward")
_SOURCE = re.compile(r'File "([^"]+)", line (\d+), in \w+')


def conversion_error(error: BaseException, what: str = "the model") -> LatvitError:
    """A converter exception as one line naming the operator, the reason and, where the converter says, the
    source line, e.g. "litert cannot convert the model: operator aten.median.dim has no LiteRT lowering (at
    .../layers/x.py:12); replace that layer or export another format".

    When the message names no operator (e.g. a `torch.export` failure on data-dependent control flow) the
    line carries the converter's first line alone."""
    text = str(error)
    operator = _NODE_TARGET.search(text) or _OPERATOR.search(" ".join(text.split()))
    sources = _SOURCE.findall(text.split("Original traceback:", 1)[1]) if "Original traceback:" in text else []
    where = f" (at {Path(sources[-1][0]).name}:{sources[-1][1]})" if sources else ""
    if operator is None:
        return LatvitError(f"litert cannot convert {what}: {first_line(error)}")
    reason = "has no LiteRT lowering" if "Lowering not found" in text else f"failed to lower ({first_line(error, 120)})"
    return LatvitError(
        f"litert cannot convert {what}: operator {operator.group(1)} {reason}{where}; replace that "
        f"layer or export another format"
    )


def convert(model: nn.Module, example: torch.Tensor):
    """`model` at `example`'s static shape as a litert-torch model (`.export(path)` writes the `.tflite`).
    Raises a one-line LatvitError (`conversion_error`) when the converter cannot take the model."""
    litert_torch = _litert_torch()
    with _quiet_converter():
        try:
            return litert_torch.convert(model.eval(), (example,))
        except Exception as e:  # noqa: BLE001 - any converter failure is reported as one line
            raise conversion_error(e) from None


def interpreter(path: Path, threads: int):
    """A LiteRT interpreter over the `.tflite` at `path` with its tensors allocated: XNNPACK (the default
    delegate) on `threads` threads."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:  # not a flatbuffer, or an op this interpreter lacks
        raise LatvitError(f"LiteRT cannot load {path}: {first_line(e)}") from None
    return it


class LiteRtRuntime(Runtime):
    name, extra, suffix = "litert", EXTRA, ".tflite"
    requires = ("litert_torch", "ai_edge_litert")

    def missing(self) -> str | None:
        """Like `Runtime.missing`, by looking the modules up instead of importing them (`litert_torch` takes
        seconds to import; bench asks every runtime whether it is there)."""
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package that fails to import, or a stub module
                found = False
            if not found:
                return str(missing_extra(module, self.extra))
        return None

    def version(self) -> str:
        from importlib.metadata import version

        return f"ai-edge-litert {version('ai-edge-litert')} (xnnpack; litert-torch {version('litert-torch')})"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        edge = convert(model, example)
        with _quiet_converter():
            edge.export(str(path))
        return path

    def load(self, path: Path, example: torch.Tensor, threads: int) -> Runner:
        return runner(interpreter(Path(path), threads))


def runner(it) -> Runner:
    """A runner over an allocated interpreter: float32 (B, 3, H, W) in, the logits out (a copy)."""
    (source,), (result,) = it.get_input_details(), it.get_output_details()
    if source["dtype"] != np.float32:
        raise LatvitError(
            f"this .tflite takes {np.dtype(source['dtype']).name} input; latvit runs float32-input "
            f"models (int8 inside, float at the edges, as `latvit quantize` writes them)"
        )

    def run(x: np.ndarray) -> np.ndarray:
        it.set_tensor(source["index"], x)
        it.invoke()
        return it.get_tensor(result["index"])

    return run


RUNTIME = LiteRtRuntime()


# -- profiling: LiteRT's own profiler, through its C API -------------------------------------------------
# The Python interpreter has no profiler hook; LiteRT's CompiledModel has one (the TFLite profiler that
# `benchmark_model --enable_op_profiling` prints), reachable only through libLiteRt.so's C API, which ships
# in the ai-edge-litert wheel. ctypes declarations below follow litert/c/*.h of the LiteRT 2.x sources.
_EVENT_TYPES = {1: "default", 2: "operator", 4: "delegate_operator", 8: "delegate_profiled_operator"}


@dataclass
class ProfiledEvent:
    """One LiteRT profiler event: `tag` ("Invoke", "CONV_2D", "Convolution (NHWC, F32) IGEMM"), its kind
    (`_EVENT_TYPES`), start and elapsed microseconds, and `index`: the node index (TFLite operators) or
    the operator index inside its XNNPACK delegate (delegate operators)."""

    tag: str
    kind: str
    start_us: int
    elapsed_us: int
    index: int


def _libc_api():
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.strdup.restype, libc.strdup.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    return libc


def _litert_c_api():
    """libLiteRt.so with the functions the profiler calls declared (every one returns a LiteRtStatus)."""
    import ctypes

    import ai_edge_litert

    lib = ctypes.CDLL(str(Path(ai_edge_litert.__file__).parent / "libLiteRt.so"))
    ptr, ref, size = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t
    signatures = {
        "LiteRtCreateEnvironment": [ctypes.c_int, ptr, ref],
        "LiteRtCreateModelFromFile": [ptr, ctypes.c_char_p, ref],
        "LiteRtCreateOptions": [ref],
        "LiteRtSetOptionsHardwareAccelerators": [ptr, ctypes.c_int],
        "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, ptr, ptr, ref],
        "LiteRtAddOpaqueOptions": [ptr, ptr],
        "LiteRtCreateCompiledModel": [ptr, ptr, ptr, ref],
        "LiteRtGetModelSignature": [ptr, size, ref],
        "LiteRtGetSignatureInputTensorByIndex": [ptr, size, ref],
        "LiteRtGetSignatureOutputTensorByIndex": [ptr, size, ref],
        "LiteRtGetRankedTensorType": [ptr, ptr],
        "LiteRtGetCompiledModelInputBufferRequirements": [ptr, size, size, ref],
        "LiteRtGetCompiledModelOutputBufferRequirements": [ptr, size, size, ref],
        "LiteRtCreateManagedTensorBufferFromRequirements": [ptr, ptr, ptr, ref],
        "LiteRtCompiledModelGetProfiler": [ptr, ref],
        "LiteRtStartProfiler": [ptr],
        "LiteRtStopProfiler": [ptr],
        "LiteRtResetProfiler": [ptr],
        "LiteRtGetNumProfilerEvents": [ptr, ctypes.POINTER(ctypes.c_int)],
        "LiteRtGetProfilerEvents": [ptr, ctypes.c_int, ptr],
        "LiteRtRunCompiledModel": [ptr, size, size, ref, size, ref],
    }
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
    for name in (
        "LiteRtDestroyCompiledModel",
        "LiteRtDestroyModel",
        "LiteRtDestroyOptions",
        "LiteRtDestroyEnvironment",
        "LiteRtDestroyTensorBuffer",
    ):
        function = getattr(lib, name)
        function.argtypes, function.restype = [ptr], None
    return lib


def _event_struct():
    """ProfiledEventData of litert/c/litert_profiler_event.h."""
    import ctypes

    class Memory(ctypes.Structure):
        _fields_ = [("total", ctypes.c_size_t), ("in_use", ctypes.c_size_t), ("private", ctypes.c_size_t)]

    class Event(ctypes.Structure):
        _fields_ = [
            ("tag", ctypes.c_char_p),
            ("event_type", ctypes.c_int),
            ("start_us", ctypes.c_uint64),
            ("elapsed_us", ctypes.c_uint64),
            ("begin_memory", Memory),
            ("end_memory", Memory),
            ("metadata1", ctypes.c_uint64),
            ("metadata2", ctypes.c_uint64),
            ("source", ctypes.c_int),
        ]

    return Event


class ProfiledModel:
    """A `.tflite` compiled by LiteRT's CompiledModel API on the CPU (XNNPACK, `threads` threads) with its
    profiler on: `run()` runs one inference on its own (zero-filled) buffers, `events()` returns what the
    profiler recorded since the last `reset()`. Meant for `latvit.analysis.profile`; `load` is the runner
    for measuring."""

    def __init__(self, path: Path, threads: int):
        import ctypes

        self._ctypes, self._lib, libc = ctypes, _litert_c_api(), _libc_api()
        ptr = ctypes.c_void_p
        self._env, self._model, self._options, self._compiled, self._profiler = ptr(), ptr(), ptr(), ptr(), ptr()
        self._call("LiteRtCreateEnvironment", 0, None, ctypes.byref(self._env))
        self._call("LiteRtCreateModelFromFile", self._env, str(path).encode(), ctypes.byref(self._model))
        self._call("LiteRtCreateOptions", ctypes.byref(self._options))
        self._call("LiteRtSetOptionsHardwareAccelerators", self._options, 1)  # kLiteRtHwAcceleratorCpu
        # opaque options are TOML payloads under an identifier (litert/c/options/litert_*_options.cc);
        # LiteRT takes ownership of the strdup'ed payload and frees it with libc's free
        for identifier, toml in (
            (b"runtime_options_string", b"enable_profiling = true\n"),
            (b"xnnpack", f"num_threads = {threads}\n".encode()),
        ):
            opaque = ptr()
            self._call(
                "LiteRtCreateOpaqueOptions",
                identifier,
                libc.strdup(toml),
                ctypes.cast(libc.free, ptr),
                ctypes.byref(opaque),
            )
            self._call("LiteRtAddOpaqueOptions", self._options, opaque)
        self._call("LiteRtCreateCompiledModel", self._env, self._model, self._options, ctypes.byref(self._compiled))
        signature = ptr()
        self._call("LiteRtGetModelSignature", self._model, 0, ctypes.byref(signature))
        self._buffers = []
        for side in ("Input", "Output"):
            tensor, requirements, buffer = ptr(), ptr(), ptr()
            tensor_type = ctypes.create_string_buffer(512)  # LiteRtRankedTensorType, passed through unread
            self._call(f"LiteRtGetSignature{side}TensorByIndex", signature, 0, ctypes.byref(tensor))
            self._call("LiteRtGetRankedTensorType", tensor, tensor_type)
            self._call(
                f"LiteRtGetCompiledModel{side}BufferRequirements", self._compiled, 0, 0, ctypes.byref(requirements)
            )
            self._call(
                "LiteRtCreateManagedTensorBufferFromRequirements",
                self._env,
                tensor_type,
                requirements,
                ctypes.byref(buffer),
            )
            self._buffers.append(buffer)
        self._inputs, self._outputs = (ptr * 1)(self._buffers[0]), (ptr * 1)(self._buffers[1])
        self._call("LiteRtCompiledModelGetProfiler", self._compiled, ctypes.byref(self._profiler))
        self._call("LiteRtStartProfiler", self._profiler)

    def _call(self, name: str, *args) -> None:
        status = getattr(self._lib, name)(*args)
        if status != 0:
            raise LatvitError(f"LiteRT's C API failed in {name} (status {status}); profile on another runtime")

    def run(self) -> None:
        self._call("LiteRtRunCompiledModel", self._compiled, 0, 1, self._inputs, 1, self._outputs)

    def reset(self) -> None:
        """Forget the events so far (resetting also stops LiteRT's profiler: it is started again)."""
        self._call("LiteRtResetProfiler", self._profiler)
        self._call("LiteRtStartProfiler", self._profiler)

    def events(self) -> list[ProfiledEvent]:
        """The events since the last `reset` (the profiler is stopped to read them, then started again)."""
        count = self._ctypes.c_int()
        self._call("LiteRtStopProfiler", self._profiler)
        self._call("LiteRtGetNumProfilerEvents", self._profiler, self._ctypes.byref(count))
        raw = (_event_struct() * count.value)()
        if count.value:
            self._call("LiteRtGetProfilerEvents", self._profiler, count.value, raw)
        self._call("LiteRtStartProfiler", self._profiler)
        return [
            ProfiledEvent(
                e.tag.decode(errors="replace") if e.tag else "",
                _EVENT_TYPES.get(e.event_type, "other"),
                int(e.start_us),
                int(e.elapsed_us),
                int(e.metadata1),
            )
            for e in raw
        ]

    def close(self) -> None:
        lib = self._lib
        for buffer in self._buffers:
            lib.LiteRtDestroyTensorBuffer(buffer)
        lib.LiteRtDestroyCompiledModel(self._compiled)
        lib.LiteRtDestroyModel(self._model)
        lib.LiteRtDestroyOptions(self._options)
        lib.LiteRtDestroyEnvironment(self._env)
        self._buffers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def operators(path: Path) -> list[tuple[int, str, str]]:
    """The `.tflite`'s operators in node order: (node index, TFLite op name, its first output tensor's name,
    which litert-torch writes as the torch module hierarchy, e.g. "...LatvitNet/...Stage_0/...Conv2d_conv;1")."""
    it = interpreter(Path(path), 1)
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    return [
        (op["index"], op["op_name"], names.get(op["outputs"][0], "") if len(op["outputs"]) else "")
        for op in it._get_ops_details()
        if op["op_name"] != "DELEGATE"
    ]  # the documented API has no op list


# -- int8: Google's ai-edge-quantizer on the fp32 .tflite ----------------------------------------------------
# Why ai-edge-quantizer and not litert-torch's PT2E path: it calibrates the .tflite that ships (the graph
# XNNPACK runs, after the converter's fusions), keeps float input and output, and it calibrates once and
# re-quantizes in under a second, which is what makes accuracy control (op groups back to float, one try
# after another) affordable; PT2E re-runs the converter for every try. Measurements: docs/quantize.md.
SIGNATURE = "serving_default"
INT8_RECIPES = ("vit", "all")


def _op(name: str):
    from ai_edge_quantizer import qtyping

    return qtyping.TFLOperationName[name]


# Ops the `vit` recipe makes int8: the matrix products with weights and the cheap ops XNNPACK runs in int8
# between them. Float: GELU, softmax and the decomposed LayerNorm (its SQUARED_DIFFERENCE and RSQRT, and
# every op in a LayerNorm scope): quantizing them costs accuracy for no kernel; and ADD, AVERAGE_POOL_2D
# and BATCH_MATMUL: XNNPACK rejected their int8 versions in EfficientFormer-L1 (residual adds whose input
# and output scales differ too much), so they ran on TFLite's own int8 kernels, 4-9x slower than XNNPACK's
# float ones (LiteRT's profiler, docs/quantize.md).
VIT_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MUL",
    "SUB",
    "MEAN",
    "TRANSPOSE",
    "RESHAPE",
    "PAD",
    "SLICE",
    "STRIDED_SLICE",
    "CONCATENATION",
)
VIT_FLOAT_SCOPES = ("LayerNorm", "GroupNorm")


def _quantizer(fp32: Path, recipe: str, float_scopes: tuple[str, ...] = ()):
    """An ai-edge-quantizer `Quantizer` over the fp32 `.tflite`: static int8 (per-channel symmetric weights,
    per-tensor activations, min/max calibration) on the recipe's ops, float input and output, and every op
    whose scope (output tensor name, e.g. "LatvitNet/Stage_2/Meta4D_3/...") matches `float_scopes` in float."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer import recipe as recipes
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.recipe_manager import RecipeManager

    q = quantizer.Quantizer(str(fp32))
    manager: RecipeManager = q._recipe_manager  # the documented add_static_config takes no op config for INPUT
    config = qtyping.OpQuantizationConfig.from_dict(recipes.static_wi8_ai8()[0]["op_config"])
    int8 = AlgorithmName.MIN_MAX_UNIFORM_QUANT
    for op in VIT_OPS if recipe == "vit" else ("ALL_SUPPORTED",):
        manager.add_quantization_config(".*", _op(op), config, int8)
    for op in ("INPUT", "OUTPUT"):  # float at the edges: the runner and a phone's caller feed float32
        manager.add_quantization_config(".*", _op(op), None, AlgorithmName.NO_QUANTIZE)
    for scope in (VIT_FLOAT_SCOPES if recipe == "vit" else ()) + tuple(float_scopes):
        manager.add_quantization_config(scope, _op("ALL_SUPPORTED"), None, AlgorithmName.NO_QUANTIZE)
    return q


def int8_flatbuffer(fp32: Path, recipe: str, qsv: dict, float_scopes: tuple[str, ...] = ()) -> bytes:
    """The int8 flatbuffer of `fp32` under `recipe` with `float_scopes` in float, from calibration `qsv`."""
    with _quiet_converter():
        result = _quantizer(fp32, recipe, float_scopes).quantize(
            qsv, enable_progress_bar=False, enable_progress_report=False
        )
    return bytes(result.quantized_model)


def calibrate_ranges(fp32: Path, calibration: list[np.ndarray], threads: int) -> dict:
    """Per-tensor ranges of the fp32 model on the calibration batches (every op's, so that any recipe and
    any set of float scopes can be quantized from the one calibration).

    Ranges are the extremes over all batches (`min_max_update`), not ai-edge-quantizer's default moving
    average of per-batch extremes: on EfficientFormer-L1 the average clipped the logits (the largest error
    16% of their scale against 3%, top-1 agreement with fp32 0.79 against 0.92; docs/quantize.md)."""
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    it = interpreter(fp32, 1)
    name = it.get_signature_list()[SIGNATURE]["inputs"][0]
    with _quiet_converter():  # also "experimental_preserve_all_tensors is for debugging": it is calibration
        calib = calibrator.Calibrator(fp32.read_bytes(), num_threads=threads, qsv_update_func=qsv_utils.min_max_update)
        calib.calibrate({SIGNATURE: [{name: x} for x in calibration]}, _quantizer(fp32, "all")._recipe_manager)
    return calib.get_model_qsvs()


def op_groups(fp32: Path) -> dict[str, str]:
    """What accuracy control returns to float, one unit at a time, in graph order: {label: scope regex}.

    An op whose output tensor name carries a module path belongs to its block, the first three levels of
    that path ("...LatvitNet/...Stage_2/...Meta4D_3"; each stem conv and the head are units too): litert-torch
    names tensors after the torch module stack. An op without one (the output layer, named after the
    signature) is a unit of its own. The regexes match op scopes as ai-edge-quantizer reads them (output
    tensor names), and not a sibling that extends the name (Meta4D_1 against Meta4D_10)."""
    groups: dict[str, str] = {}
    for _, _, tensor in operators(fp32):
        scope = tensor.split(";")[0]
        if "/" in scope:
            label = "/".join(scope.split("/")[:3])
            groups.setdefault(label, re.escape(label) + r"(?=[/;]|$)")
        elif tensor:
            groups.setdefault(tensor, "^" + re.escape(tensor) + r"(?=;|$)")
    return groups


def short_scope(label: str) -> str:
    """An `op_groups` label as a reader names the block: module classes without their packages
    ("LatvitNet/Stage_3/Meta4D_2")."""
    return "/".join(part.rsplit(".", 1)[-1] for part in label.split("/"))


def logits(model: bytes, batches: list[np.ndarray], threads: int) -> np.ndarray:
    """The logits of a .tflite flatbuffer on `batches`, concatenated: (N, classes)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model, num_threads=threads)
    it.allocate_tensors()
    run = runner(it)
    return np.concatenate([run(x) for x in batches])


def float_fallback(
    fp32: Path,
    recipe: str,
    qsv: dict,
    validation: list[tuple[np.ndarray, np.ndarray]],
    max_drop: float,
    threads: int,
    log: Callable[[str], None] | None = None,
) -> tuple[bytes, list[str], float]:
    """Accuracy control: return blocks to float, the most harmful first, until top-1 on `validation` is within
    `max_drop` points of the fp32 model's. Returns (int8 flatbuffer, blocks kept in float, top-1 drop);
    `log` (e.g. print) gets one line on plain int8's drop and one on the outcome.

    Harm is measured, not guessed: each block alone is returned to float once, and blocks are ranked by the
    top-1 that recovers (ties, common on a few hundred images, by how close the logits come to fp32's), then
    returned to float in that order, one more per try. With every block in float the model is the fp32 one,
    so the loop ends within `max_drop`."""
    images = [x for x, _ in validation]
    labels = np.concatenate([y for _, y in validation])
    reference = logits(fp32.read_bytes(), images, threads)

    def score(model: bytes) -> tuple[float, float]:  # (top-1 drop in points, mean |logit error|)
        out = logits(model, images, threads)
        drop = 100.0 * (float((reference.argmax(-1) == labels).mean()) - float((out.argmax(-1) == labels).mean()))
        return drop, float(np.abs(out - reference).mean())

    log = log or (lambda line: None)
    model = int8_flatbuffer(fp32, recipe, qsv)
    drop = score(model)[0]
    log(
        f"accuracy control: plain int8 top-1 {0.0 - drop:+.2f} points on {len(labels)} validation images "
        f"(allowed -{max_drop:g})"
    )
    if drop <= max_drop:
        return model, [], drop
    groups = op_groups(fp32)
    alone = {label: score(int8_flatbuffer(fp32, recipe, qsv, (regex,))) for label, regex in groups.items()}
    kept: list[str] = []
    for label in sorted(alone, key=alone.get):  # smallest drop, then smallest logit error, first
        kept.append(label)
        model = int8_flatbuffer(fp32, recipe, qsv, tuple(groups[k] for k in kept))
        drop = score(model)[0]
        if drop <= max_drop:
            break
    names = ", ".join(short_scope(label) for label in kept)
    log(f"accuracy control: {len(kept)} of {len(groups)} blocks back to float ({names}): {0.0 - drop:+.2f} points")
    return model, kept, drop


def quantize_int8(
    model: nn.Module,
    example: torch.Tensor,
    calibration: list[np.ndarray],
    out: Path,
    recipe: str = "vit",
    max_drop: float | None = None,
    validation: list[tuple[np.ndarray, np.ndarray]] | None = None,
    threads: int = 1,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write an int8 `.tflite` of `model` (at `example`'s static shape) to `out`, a path in a scratch
    directory (the fp32 `.tflite` is written next to it): ai-edge-quantizer static int8 calibrated on
    `calibration`, float input and output; with `max_drop`, `float_fallback` on `validation` (reporting
    to `log`)."""
    if recipe not in INT8_RECIPES:
        raise LatvitError(f"recipe '{recipe}' is not LiteRT's; on litert use {' or '.join(INT8_RECIPES)}")
    if importlib.util.find_spec("ai_edge_quantizer") is None:
        raise missing_extra("ai_edge_quantizer", EXTRA)
    fp32 = RUNTIME.export(model, example, Path(out).with_name("fp32.tflite"))
    qsv = calibrate_ranges(fp32, calibration, threads)
    if max_drop is None:
        data = int8_flatbuffer(fp32, recipe, qsv)
    else:
        data, _kept, _drop = float_fallback(fp32, recipe, qsv, validation, max_drop, threads, log)
    Path(out).write_bytes(data)
    return Path(out)
