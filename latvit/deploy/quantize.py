"""Post-training int8 quantization through each runtime's own tooling, with calibration data.

- `ort`: ONNX Runtime static quantization in QDQ format (`onnxruntime.quantization.quantize_static`),
  per-channel symmetric int8 weights, uint8 activations, MinMax calibration.
- `openvino`: NNCF post-training quantization of the OpenVINO model (`nncf.quantize`, symmetric activations,
  full bias correction).
- `executorch`: PT2E with the XNNPACK quantizer (torchao `prepare_pt2e`/`convert_pt2e`), lowered to XNNPACK
  with the same partitioner as fp32 (`latvit.runtimes.executorch.partitioner`); both recipes are XNNPACK's
  own annotation, which is measured best there (see `_quantize_executorch`).
- `litert`: Google's ai-edge-quantizer on the fp32 `.tflite` (static int8: per-channel symmetric weights,
  per-tensor activations calibrated to their extremes, float input and output;
  `latvit.runtimes.litert.quantize_int8`). Chosen over litert-torch's PT2E path by measurement (docs/quantize.md).

Recipes say which operators become int8; each runtime's was chosen by measurement (docs/compression.md):
- `vit` (default), the fastest recipe measured per runtime with top-1 within 0.5 points:
  - ort: only the dense matrix products with a weight (Conv, MatMul, Gemm); depthwise convs and the
    attention's activation x activation MatMuls stay float (`float_nodes`), as do softmax, norms and
    activations: on ORT a quantize/dequantize pair around a cheap op costs more than the op itself.
  - openvino: NNCF's defaults (symmetric activations; both recipes): the CPU plugin fuses each quantize
    into the op that produces its input, so int8 flows through norms, adds and transposes; softmax stays float.
  - executorch: XNNPACK's own annotation (softmax and norms stay float, XNNPACK has no int8 kernels for them).
  - litert: matrix products and the cheap ops between them (`latvit.runtimes.litert.VIT_OPS`); GELU,
    softmax and LayerNorm stay float.
- `all`: every operator the tool can quantize, with its default settings (kept to measure the difference).
- `transformer` (OpenVINO only): NNCF's transformer model type, which keeps LayerNorm inputs, residual adds
  and multiplies in float. Slower than `vit` on the hybrids and more accurate: EfficientFormer-L1 trained
  at 224 px lost 2.45 points (2000 test images) with `vit` at 3.09x over fp32 and 1.05 with it at 2.67x;
  accuracy control (below) is what kept it within 0.5 (docs/compression.md).

Accuracy control (OpenVINO): `max_drop` (top-1 points) with labelled `validation` batches runs NNCF's
`quantize_with_accuracy_control`, which returns quantized operations to float, the most harmful first,
until top-1 on the validation images is within `max_drop` of fp32's. EfficientFormer-L1 at 224 px: 5 of
102 operations returned, +0.75 points on 2000 test images at 2.93x over fp32 (the plain recipe: -2.45 at
3.09x; docs/compression.md).
Accuracy control (LiteRT): the same contract by latvit's own loop over ai-edge-quantizer, which has none:
blocks return to float, the most harmful first (each measured alone), until top-1 is within `max_drop`
(`latvit.runtimes.litert.float_fallback`).

Inputs: a model (eval mode), a list of calibration batches (numpy float32, (B, 3, H, W), normalised as
the model expects); output: the quantized artifact written atomically (no partial file on failure).
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from latvit.data import check_crop_pct, eval_transform, open_dataset
from latvit.errors import LatvitError, missing_extra
from latvit.runtimes import get_runtime
from latvit.runtimes.base import export_onnx
from latvit.runtimes.executorch import to_xnnpack  # the fp32 path's lowering, with its fixes
from latvit.runtimes.litert import quantize_int8  # the runtime's own tooling: ai-edge-quantizer
from latvit.runtimes.openvino import RUNTIME
from latvit.utils import repair_signal_stack

QUANT_RUNTIMES = ("ort", "openvino", "executorch", "litert")
ACCURACY_CONTROL = ("openvino", "litert")  # runtimes that take max_drop
ARTIFACT_RUNTIME = {".onnx": "ort", ".xml": "openvino", ".pte": "executorch", ".tflite": "litert"}
INT8_PACKAGES = {
    "ort": ("onnxruntime", "onnx"),
    "openvino": ("openvino", "nncf"),
    "executorch": ("executorch", "torchao"),
    "litert": ("litert_torch", "ai_edge_quantizer"),
}
# int8 speed-up over fp32 on the same runtime, measured per class of CPU (2 threads, batch 1, interleaved;
# docs/benchmarks.md): EfficientFormer-L1, then the hybrids. Runtimes fastest first; the first installed wins.
INT8_MEASURED: dict[str, dict[str, str]] = {
    "amx": {
        "openvino": "3.3x on EfficientFormer-L1, 1.7x on EfficientFormerV2-S1 and MobileViT-S",
        "executorch": "2.7x on L1, 1.7x on V2-S1, 1.4x on MobileViT-S",
        "ort": "1.3x on L1, slower than fp32 on the hybrids (0.9x)",
    }
}
INT8_CPU_LABEL = {"amx": "Intel Xeon with AMX and AVX512-VNNI"}
RECIPES = ("vit", "all", "transformer")
MATRIX_OPS = ["Conv", "MatMul", "Gemm"]


def cpu_int8_class(cpuinfo: str | None = None) -> str:
    """The CPU's int8 instruction class, from /proc/cpuinfo's flags (or `cpuinfo`): "amx" (AMX-int8),
    "vnni" (AVX512-VNNI or AVX-VNNI without AMX), "avx2", or "other" (no flags to read, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "other"
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    if "amx_int8" in flags:
        return "amx"
    if flags & {"avx512_vnni", "avx_vnni"}:
        return "vnni"
    return "avx2" if "avx2" in flags else "other"


def default_int8_runtime(output: str | Path | None = None, cpu: str | None = None) -> tuple[str, str]:
    """The runtime `latvit quantize` uses when none is given, and why, as (runtime, reason).

    An `output` whose suffix names a runtime's artifact (.onnx, .xml, .pte, .tflite) chooses that runtime. Otherwise
    the runtime with the largest int8 speed-up measured on this CPU's class (`INT8_MEASURED`; the AMX
    measurements where this class has none) among those installed.
    """
    suffix = Path(output).suffix if output else ""
    if suffix in ARTIFACT_RUNTIME:
        return ARTIFACT_RUNTIME[suffix], f"the output's suffix {suffix} is its artifact"
    import importlib.util

    cpu = cpu or cpu_int8_class()
    measured_on = cpu if cpu in INT8_MEASURED else "amx"
    ranking = INT8_MEASURED[measured_on]
    installed = [rt for rt in ranking if all(importlib.util.find_spec(p) for p in INT8_PACKAGES[rt])]
    if not installed:
        raise LatvitError("no int8 runtime is installed: pip install 'latvit[openvino]' (the fastest int8 measured)")
    best = installed[0]
    where = INT8_CPU_LABEL.get(measured_on, measured_on)
    basis = f"measured on {where}" if measured_on == cpu else f"not measured on this CPU ({cpu}); on {where}"
    skipped = list(ranking)[: list(ranking).index(best)]
    note = f"; {', '.join(skipped)} not installed" if skipped else ""
    return best, f"the fastest int8 installed: {ranking[best]}, {basis}{note}"


def calibration_batches(
    calib: str, img_size: int, mean, std, count: int = 128, batch: int = 1, crop_pct: float = 0.875
) -> list[np.ndarray]:
    """`count` images from `calib` ('fashion-mnist', 'synthetic' or an ImageFolder root, train split),
    transformed as for evaluation with `crop_pct`, grouped into float32 batches (batch, 3, img_size, img_size);
    the remainder of count / batch is left out (an artifact takes one batch size).
    crop_pct: 0.875 even for models evaluated uncropped. Measured on the Fashion-MNIST runs, which are
    trained and tested at crop 1.0 (OpenVINO int8, 128 images, 2000 test images at 1.0, session 12):
    calibrating at 0.875 kept 0.7-1.7 points more top-1 than at 1.0 (EfficientFormer-L1 -0.40 against -2.10,
    V2-S1 +0.75 / +0.05, MobileViT-S +0.55 / -1.00), plausibly because the zoomed-in garments widen the
    ranges NNCF estimates (it averages per-image extremes)."""
    images, _ = _spread_sample(calib, img_size, mean, std, count, batch, "calibration", False, crop_pct)
    return [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]


def validation_batches(
    data: str, img_size: int, mean, std, count: int = 500, batch: int = 1, *, crop_pct: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` labelled images of `data`'s train split for accuracy control: (images (batch, 3, S, S),
    labels (batch,)) pairs, spread over the set half a stride after the images `calibration_batches` takes
    (so never the same images when the set has at least twice `count`); `crop_pct`: how the model is
    evaluated (`latvit.train.evaluate.eval_crop_pct`), no default: calibration's 0.875 is not it."""
    images, labels = _spread_sample(data, img_size, mean, std, count, batch, "validation", True, crop_pct)
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)]


def _spread_sample(
    data: str, img_size: int, mean, std, count: int, batch: int, purpose: str, half_stride: bool, crop_pct: float
):
    """`count` images of `data`'s train split evenly spaced over it (the first images are often one class),
    shifted by half the spacing when `half_stride`; transformed for evaluation: ((N, 3, S, S), (N,))."""
    if count < batch or batch < 1:
        raise LatvitError(f"{purpose} needs at least one batch: {count} images, batch {batch}")
    check_crop_pct(crop_pct)  # before the dataset is read
    dataset = open_dataset(data, "train")
    transform = eval_transform(img_size, mean, std, crop_pct=crop_pct)
    step = max(1, len(dataset) // count)
    shift = step // 2 if half_stride else 0
    picks = [dataset[min(i * step + shift, len(dataset) - 1)] for i in range(min(count, len(dataset)))]
    return (torch.stack([transform(img) for img, _ in picks]).numpy(), np.array([int(label) for _, label in picks]))


def check_quantize_settings(runtime: str, recipe: str = "vit", max_drop: float | None = None) -> None:
    """Raise the one-line error a bad runtime, recipe or max_drop gets, or a missing runtime package; the
    CLI calls it before the model is built and the calibration images are read."""
    if runtime not in QUANT_RUNTIMES:
        raise LatvitError(f"int8 quantization is implemented for {', '.join(QUANT_RUNTIMES)}, not '{runtime}'")
    if recipe not in RECIPES:
        raise LatvitError(f"unknown quantization recipe '{recipe}': choose {', '.join(RECIPES)}")
    if max_drop is not None:
        if runtime not in ACCURACY_CONTROL:
            raise LatvitError(
                f"--max-drop is NNCF's accuracy control (runtime openvino) or latvit's float fallback "
                f"(runtime litert), not available on {runtime}"
            )
        if max_drop < 0:
            raise LatvitError(
                f"accuracy control needs max_drop >= 0 (top-1 points), got {max_drop:g}; e.g. --max-drop 0.5"
            )
    if recipe == "transformer" and runtime != "openvino":
        raise LatvitError(f"recipe 'transformer' is NNCF's (runtime openvino); on {runtime} use vit or all")

    reason = get_runtime(runtime).missing()
    if reason:
        raise LatvitError(reason)


def quantize(
    model: nn.Module,
    runtime: str,
    calibration: list[np.ndarray],
    path: str | Path,
    recipe: str = "vit",
    max_drop: float | None = None,
    validation: list[tuple[np.ndarray, np.ndarray]] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Quantize `model` for `runtime` with `calibration` batches; write the int8 artifact to `path`.

    The artifact takes the calibration batches' shape (B, 3, S, S) as its static input shape.
    Returns the path (a .onnx file for ort, .xml(+.bin) for openvino, .pte for executorch); load it with
    `latvit.runtimes.get_runtime(runtime).load(path, example, threads)`.
    `max_drop` (top-1 points, openvino and litert) with `validation` (`validation_batches`): accuracy control;
    on litert `log` (e.g. print) is told what it did (NNCF reports to its own logger).
    """
    check_quantize_settings(runtime, recipe, max_drop)
    if max_drop is not None:
        if not validation:
            raise LatvitError("accuracy control needs max_drop >= 0 (top-1 points) and labelled validation batches")
        if calibration and any(x.shape != calibration[0].shape for x, _ in validation):
            raise LatvitError(
                f"validation batches must have the calibration batches' shape {calibration[0].shape} "
                f"(the artifact's static input); give both the same batch size"
            )
    if not calibration:
        raise LatvitError("no calibration batches given")
    if len({c.shape for c in calibration}) > 1:  # the artifact takes one static input shape: the batches'
        raise LatvitError(
            f"calibration batches differ in shape ({sorted({c.shape for c in calibration})}); give batches of one size"
        )
    path = Path(path)
    model = copy.deepcopy(model).eval()  # the caller's model keeps its mode and its weights
    example = torch.from_numpy(calibration[0])
    with tempfile.TemporaryDirectory(prefix="latvit-quant-") as tmp:
        tmp = Path(tmp)
        if runtime == "openvino":
            produced = _quantize_openvino(model, example, calibration, tmp, recipe, max_drop, validation)
        elif runtime == "litert":
            produced = quantize_int8(
                model,
                example,
                calibration,
                tmp / "int8.tflite",
                recipe,
                max_drop,
                validation,
                threads=torch.get_num_threads(),
                log=log,
            )
        else:
            produced = {"ort": _quantize_ort, "executorch": _quantize_executorch}[runtime](
                model, example, calibration, tmp, recipe
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        # every file (.xml comes with its .bin) is staged next to the target before any replaces its old
        # version, so a failed copy leaves the old artifact whole and no .tmp behind
        staged = {
            path.with_suffix(src.suffix).with_name(f".{path.stem}{src.suffix}.tmp"): src
            for src in sorted(produced.parent.glob(produced.stem + ".*"))
        }
        try:
            for target, src in staged.items():
                shutil.copyfile(src, target)
            for target in staged:
                target.replace(path.with_suffix(target.suffixes[-2]))
        finally:
            for target in staged:
                target.unlink(missing_ok=True)
    return path.with_suffix(produced.suffix)


def _quantize_ort(model, example, calibration, tmp: Path, recipe: str) -> Path:
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quant_pre_process,
            quantize_static,
        )
    except ImportError:
        raise missing_extra("onnxruntime", "onnx") from None

    fp32 = export_onnx(model, example, tmp / "fp32.onnx")
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x}

    out = tmp / "int8.onnx"
    exclude = float_nodes(prepared) if recipe == "vit" else []
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
        op_types_to_quantize=MATRIX_OPS if recipe == "vit" else None,
        nodes_to_exclude=exclude,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )
    return out


def float_nodes(path: Path) -> list[str]:
    """Nodes the `vit` recipe keeps in float, found by measurement (MobileViT-XXS on ORT ran 0.6x of fp32
    until both were excluded):
    - activation x activation MatMuls (q @ k^T, softmax @ v): quantizing them puts the softmax between a
      dequantize and a quantize, which ORT fuses into QLinearSoftmax, ~9x slower than float Softmax;
    - grouped (depthwise) Convs: 9 MACs per output gain nothing from int8, the Q/DQ pairs around them cost.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    weights |= {n.output[0] for n in graph.node if n.op_type in ("Constant", "DequantizeLinear") and n.output}
    keep = []
    for n in graph.node:
        if n.op_type == "MatMul" and not any(i in weights for i in n.input):
            keep.append(n.name)
        elif n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute):
            keep.append(n.name)
    return keep


def _quantize_openvino(
    model,
    example,
    calibration,
    tmp: Path,
    recipe: str,
    max_drop: float | None = None,
    validation: list[tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise missing_extra(e.name or "nncf", "openvino") from None

    ov_model = RUNTIME.convert(model, example)  # static shapes, as the fp32 path
    # Both recipes are NNCF's own defaults for a model of no particular type: symmetric int8 activations
    # (the PERFORMANCE preset, pinned here) and int8 through norms, adds and transposes. Measured (OpenVINO,
    # 2 threads, quiet machine, docs/compression.md) against the transformer model type with asymmetric
    # activations (the MIXED preset) that the `vit` recipe used until session 6: with asymmetric
    # activations the CPU plugin runs the 1x1 convolutions with zero-point compensation in a slower kernel
    # family (jit_amx_1x1 "I8" against brgconv "i8"): MobileViT-S 1.4x over fp32 against 1.96x,
    # EfficientFormerV2-S1 1.24x against 1.64x; the transformer model type, which keeps LayerNorm, add and
    # multiply inputs in float, adds float islands (1.36x on V2-S1 with symmetric activations). Softmax
    # stays float either way. int8 top-1 against fp32 stayed within 0.25 points on the five Fashion-MNIST
    # checkpoints (docs/benchmarks.md).
    # NNCF's full bias correction, not its fast default: on MobileViT-S fine-tuned at 256 px (session 8, 1000
    # test images, 128 calibration images) the fast one lost 1.5 points (4.15 with 16 images) and the full one
    # none (+0.6); same graph, so the same speed (1.68x vs 1.71x over fp32). Keeping every depthwise conv in
    # float recovered only part of it (-0.3 at 1.54x) and the MatMuls or MVNs in float nothing: the loss was
    # the conv biases' correction.
    # The `transformer` recipe: NNCF's transformer model type (float LayerNorm inputs, adds, multiplies), for
    # models whose top-1 the default loses (EfficientFormer-L1 at 224, session 9: -2.45 points with the default,
    # -1.05 with it on 2000 test images; asymmetric activations: -1.0 on the first 1000, against -2.3 and -0.4).
    model_type = nncf.ModelType.TRANSFORMER if recipe == "transformer" else None
    settings = dict(
        subset_size=len(calibration),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        model_type=model_type,
        fast_bias_correction=False,
    )
    if max_drop is None:
        quantized = nncf.quantize(ov_model, nncf.Dataset(calibration), **settings)
    else:

        def top1(compiled, batches) -> float:  # NNCF compares this on the fp32 and the int8 model
            output = compiled.output(0)
            hits = sum(int((compiled(x)[output].argmax(-1) == y).sum()) for x, y in batches)
            return hits / sum(len(y) for _, y in batches)

        # with NNCF's fast bias correction: the full one corrects each layer's bias for the quantization error
        # upstream of it, which reverting an upstream operation to float then leaves wrong (EfficientFormer-L1
        # at 224: it met 0.4 points on the validation images and lost 5.15 on the test set; fast: +0.75)
        quantized = nncf.quantize_with_accuracy_control(
            ov_model,
            nncf.Dataset(calibration),
            nncf.Dataset(validation),
            top1,
            max_drop=max_drop / 100,
            drop_type=nncf.DropType.ABSOLUTE,
            **{**settings, "fast_bias_correction": True},
        )
    out = tmp / "int8.xml"
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    repair_signal_stack()  # NNCF compiled and freed models on this thread (latvit.utils.repair_signal_stack)
    return out


def _quantize_executorch(model, example, calibration, tmp: Path, recipe: str) -> Path:
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise missing_extra(e.name or "executorch", "executorch") from None
    # Both recipes use XNNPACK's own annotation (conv, linear, add, mul, pooling, ...): it already keeps
    # softmax and norms in float, as XNNPACK has no int8 kernels for them, so it is a `vit` recipe.
    # Restricting it to Conv2d/Linear modules (the other runtimes' `vit` recipe) left the residual adds and
    # pooling in float between int8 convs, each a convert pair, and measured slower on XNNPACK:
    # EfficientFormer-L1 ~1.1x over fp32 against 2.5-2.8x, V2-S1 0.98x against 1.65x (docs/compression.md).
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    captured = torch.export.export(model, (example,), strict=False).module()
    prepared = prepare_pt2e(captured, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(torch.from_numpy(x))  # the whole batch: the export is specialised to its shape
    converted = convert_pt2e(prepared)

    program = to_xnnpack(torch.export.export(converted, (example,), strict=False)).to_executorch()
    out = tmp / "int8.pte"
    out.write_bytes(program.buffer)
    return out
