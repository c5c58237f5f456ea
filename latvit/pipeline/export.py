"""`latvit export`: write a model as a deployable artifact and check it against PyTorch.

    from latvit.pipeline.export import export_model
    info = export_model("mobilevit_xxs", "openvino", "xxs.xml", img_size=256)
    info["max_abs_diff"]   # the artifact's logits vs eager PyTorch on the model as built

A format names the runtime that writes and runs it (FORMATS). The artifact is written under a temporary
name next to `path` and renamed only once it is complete (and, with `check`, verified), so a failing
export never leaves a partial file behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from latvit.errors import LatvitError

# format -> runtime that writes (and, where it can run here, checks) the artifact
FORMATS: dict[str, str] = {
    "onnx": "ort",
    "openvino": "openvino",
    "executorch": "executorch",
    "coreml": "coreml",
    "tensorrt": "tensorrt",
}


def resolve_model(model: str | nn.Module, img_size: int | None = None) -> tuple[nn.Module, int, bool]:
    """(model in eval mode, input size, is_latvit) for a latvit name, spec JSON, saved directory,
    `timm:NAME` or an `nn.Module` (which needs `img_size` unless it has a latvit spec)."""
    if img_size is not None and img_size < 1:
        raise LatvitError(f"image size must be a positive integer, got {img_size}")
    if isinstance(model, nn.Module):
        spec = getattr(model, "spec", None)
        size = img_size or getattr(spec, "img_size", None)
        if size is None:
            raise LatvitError("give img_size= for a module without a latvit spec")
        return model.eval(), int(size), spec is not None
    from latvit.latency.bench import load_bench_model

    net, size, source = load_bench_model(str(model), img_size)
    return net, int(size), source == "latvit"


def export_model(model: str | nn.Module, fmt: str, path: str | Path, img_size: int | None = None,
                 batch: int = 1, check: bool = True, deploy: bool = True, seed: int = 0, tome: str | int = 0,
                 sparsity: str | float | None = None) -> dict[str, Any]:
    """Export `model` as `fmt` to `path` and return what was written and how well it matches PyTorch.

    model: anything `resolve_model` takes. fmt: one of FORMATS. batch, img_size: the static input shape.
    check: run the artifact on one random input and compare with eager PyTorch (where the runtime runs
        here; otherwise "checked" is False and "note" says why).
    deploy: fold latvit models with `latvit.deploy` first (BN, LayerScale, attention biases); the check
        still compares with the model as built.
    tome, sparsity: export the model with token merging and/or pruned weights (`latvit.deploy.compress`,
        after folding); the check then compares with that model in PyTorch, so it tests the runtime,
        not what merging or pruning changed (measure that with `latvit validate --tome/--sparsity`).
    Returns {"path", "format", "runtime", "runtime_version", "img_size", "batch", "bytes", "seconds",
    "deployed", "tome", "sparsity", "checked", "max_abs_diff", "max_rel_diff", "note"}.
    """
    from latvit.deploy.compress import check_compression, compress
    from latvit.deploy.sparsity import parse_sparsity
    from latvit.runtimes import get_runtime

    if fmt not in FORMATS:
        raise LatvitError(f"unknown export format '{fmt}'; choose from {', '.join(FORMATS)}")
    if batch < 1:
        raise LatvitError(f"batch must be a positive integer, got {batch}")
    check_compression(tome, sparsity)
    rt = get_runtime(FORMATS[fmt])
    reason = rt.missing() or (rt.cannot_run() if fmt == "tensorrt" else None)  # TensorRT builds on the GPU
    if reason:
        raise LatvitError(reason)
    path = Path(path)
    if path.suffix != rt.suffix:
        raise LatvitError(f"{fmt} artifacts end in {rt.suffix}: use e.g. -o {path.with_suffix(rt.suffix).name}")
    start = time.perf_counter()
    net, size, is_latvit = resolve_model(model, img_size)
    example = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        reference = net(example).numpy()
    deployed = deploy and is_latvit
    if deployed:
        from latvit.deploy import deploy as deploy_model

        net = deploy_model(net)
    compressed = compress(net, tome, sparsity)
    if compressed is not net:  # the artifact holds the merged / pruned model: check against that
        net = compressed
        with torch.inference_mode():
            reference = net(example).numpy()
    info: dict[str, Any] = {"path": str(path), "format": fmt, "runtime": rt.name, "runtime_version": rt.version(),
                            "img_size": size, "batch": batch, "deployed": deployed, "tome": str(tome).strip(),
                            "sparsity": parse_sparsity(sparsity), "checked": False,
                            "max_abs_diff": None, "max_rel_diff": None, "note": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # same filesystem: rename is atomic
    try:
        written = rt.export(net, example, staging / path.name)
        if check and rt.cannot_run() is None:
            out = np.asarray(rt.load(written, example, torch.get_num_threads())(example.numpy()), dtype=np.float32)
            diff = np.abs(out.reshape(reference.shape) - reference)
            info.update(checked=True, max_abs_diff=float(diff.max()),  # relative to the logits' scale
                        max_rel_diff=float(diff.max() / max(float(np.abs(reference).max()), 1e-12)))
        elif check:
            info["note"] = rt.cannot_run()
        info["bytes"] = _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info["seconds"] = time.perf_counter() - start
    return info


def _move_into_place(staging: Path, path: Path) -> int:
    """Rename every file the export wrote in `staging` (the artifact and its companions, e.g. OpenVINO's
    .bin) to `path`'s directory; companions first, so the file a user opens appears last. Returns bytes."""
    total = 0
    entries = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
    for entry in entries:
        target = path.parent / entry.name
        total += _size(entry)
        if target.is_dir() and not target.is_symlink():  # e.g. an older .mlpackage: replace it whole
            shutil.rmtree(target)
        os.replace(entry, target)
    return total


def _size(entry: Path) -> int:
    if entry.is_dir():
        return sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
    return entry.stat().st_size
