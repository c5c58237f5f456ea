"""`latvit export`: write a model as a deployable artifact and check it against PyTorch.

    from latvit.pipeline.export import export_model
    info = export_model("mobilevit_xxs", "openvino", "xxs.xml", img_size=256)
    info["max_abs_diff"]   # the artifact's logits vs the PyTorch model it was made from

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

import torch
import torch.nn as nn

from latvit.deploy.compress import check_compression
from latvit.errors import LatvitError
from latvit.pipeline.prepare import build_artifact, prepare_model
from latvit.runtimes import get_runtime
from latvit.utils import check_writable

# format -> runtime that writes (and, where it can run here, checks) the artifact
FORMATS: dict[str, str] = {
    "onnx": "ort",
    "openvino": "openvino",
    "executorch": "executorch",
    "litert": "litert",
    "coreml": "coreml",
    "tensorrt": "tensorrt",
}


def export_model(
    model: str | nn.Module,
    fmt: str,
    path: str | Path,
    img_size: int | None = None,
    batch: int = 1,
    check: bool = True,
    deploy: bool = True,
    seed: int = 0,
    tome: str | int = 0,
    sparsity: str | float | None = None,
    checkpoint: str | Path | None = None,
) -> dict[str, Any]:
    """Export `model` as `fmt` to `path` and return what was written and how well it matches PyTorch.

    model: anything `latvit.pipeline.resolve.resolve_model` takes. fmt: one of FORMATS. batch, img_size:
        the static input shape. checkpoint: weights to load into a latvit model first.
    check: run the artifact on one random input and compare with the PyTorch model it was made from (where
        the runtime runs here; otherwise "checked" is False and "note" says why).
    deploy: fold latvit models with `latvit.deploy` first (BN, LayerScale, attention biases).
    tome, sparsity: export the model with token merging and/or pruned weights (`latvit.deploy.compress`,
        after folding). The two errors stay apart: "max_abs_diff" is the artifact against the model it holds
        (the runtime's fidelity), "compression_abs_diff" the merged/pruned model against the model as built.
    Returns {"path", "format", "runtime", "runtime_version", "img_size", "batch", "bytes", "seconds",
    "deployed", "tome", "sparsity", "checked", "max_abs_diff", "max_rel_diff", "compression_abs_diff", "note"}.
    """
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
    check_writable(path)
    start = time.perf_counter()
    prepared = prepare_model(
        model,
        img_size=img_size,
        batch=batch,
        deploy_model=deploy,
        tome=tome,
        sparsity=sparsity,
        checkpoint=checkpoint,
        seed=seed,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))  # same filesystem: rename is atomic
    try:
        built = build_artifact(
            prepared.model,
            prepared.example,
            rt,
            staging,
            threads=torch.get_num_threads(),
            expected=prepared.logits if check else None,
            filename=path.stem,
        )
        bytes_written = _move_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    checked = built.export_abs_diff is not None
    return {
        "path": str(path),
        "format": fmt,
        "runtime": rt.name,
        "runtime_version": rt.version(),
        "img_size": prepared.img_size,
        "batch": batch,
        "bytes": bytes_written,
        "seconds": time.perf_counter() - start,
        "deployed": prepared.deployed,
        "tome": str(tome).strip(),
        "sparsity": prepared.sparsity,
        "checked": checked,
        "max_abs_diff": built.export_abs_diff,
        "max_rel_diff": built.export_rel_diff,
        "compression_abs_diff": prepared.compression_abs_diff,
        "note": None if checked or not check else built.note,
    }


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
