"""The one path from a model reference to an artifact a target can time, and its two numeric checks.

    prepared = prepare_model("mobilevit_xxs", img_size=64, tome="keep0.5")   # resolve, deploy, compress
    built = build_artifact(prepared.model, prepared.example, "ort", workdir, threads=2,
                           expected=prepared.logits)                            # export, load, check
    built.export_abs_diff          # the artifact against the PyTorch model it was made from (~1e-6)
    prepared.compression_abs_diff  # the compressed model against the model as built (what merging cost)

Steps, each once: `resolve_model` builds the reference; `latvit.deploy` folds latvit models (BatchNorm,
LayerScale, attention biases) and reparameterizes timm's (their own `reparameterize`/`fuse`: MobileOne,
FastViT, RepViT, ... run in their deployed form); `latvit.deploy.compress` merges tokens and prunes where
asked; the runtime exports the result (`Runtime.export`) and loads it where it can run here. The two errors
stay apart: the export's fidelity says whether the runtime computes what PyTorch computes; the compression's
effect says how far merging or pruning moved the logits (its accuracy cost is measured by `latvit validate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from latvit.deploy import compress, deploy
from latvit.deploy.compress import check_compression
from latvit.deploy.sparsity import parse_sparsity
from latvit.deploy.token_merging import merges_tokens, parse_tome
from latvit.layers.cost import measured_flops
from latvit.pipeline.resolve import ResolvedModel, resolve_model
from latvit.runtimes import get_runtime
from latvit.runtimes.base import Artifact, Runner, Runtime


@dataclass
class PreparedModel:
    """A model ready for export: the reference as built, and the deployed, compressed model that an
    artifact will hold, with the example input both were run on.

    flops: FLOPs of what runs (the merged model when tokens are merged); params: the model as built.
    tome_label / sparsity: the compression settings in record form.
    """

    resolved: ResolvedModel
    model: nn.Module
    example: torch.Tensor
    reference_logits: np.ndarray
    logits: np.ndarray
    deployed: bool
    tome_label: int | str
    sparsity: float | str | None
    flops: float
    params: int

    @property
    def img_size(self) -> int:
        return self.resolved.img_size

    @property
    def compression_abs_diff(self) -> float:
        """Largest |logit| change from the model as built to the model the artifact holds (deploy folding
        contributes fp32 rounding, ~1e-6; token merging and pruning their real effect)."""
        return float(np.abs(self.logits - self.reference_logits).max())


def prepare_model(
    ref: str | Path | nn.Module,
    *,
    img_size: int | None = None,
    batch: int = 1,
    deploy_model: bool = True,
    tome: int | str = 0,
    sparsity: str | float | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
) -> PreparedModel:
    """Resolve `ref` (see `latvit.pipeline.resolve`), deploy it (latvit and timm models), compress it, and run
    both the reference and the result on one seeded random input of shape (batch, 3, S, S)."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    check_compression(tome, sparsity)
    resolved = resolve_model(ref, img_size, checkpoint)
    size = resolved.img_size
    example = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    net = resolved.model
    with torch.inference_mode():
        reference = net(example).numpy()
    flops, params = measured_flops(net, example), sum(p.numel() for p in net.parameters())
    deployed = deploy_model and resolved.source in ("latvit", "timm")  # tests/test_frontier.py: outputs kept
    if deployed:
        net = deploy(net)
    compressed = compress(net, tome, sparsity)
    setting = parse_tome(tome)  # {"r": 13 or [26] * 6 for '26x6', "keep": 0.25 for 'keep0.25' (else 1)}
    if merges_tokens(**setting):
        flops = measured_flops(compressed, example)  # FLOPs count the merged model (what runs)
    with torch.inference_mode():
        logits = compressed(example).numpy() if compressed is not resolved.model else reference
    schedule = setting["r"]
    tome_label = schedule if isinstance(schedule, int) and setting["keep"] == 1 else str(tome).strip()
    return PreparedModel(
        resolved,
        compressed.eval(),
        example,
        reference,
        logits,
        deployed,
        tome_label,
        parse_sparsity(sparsity),
        flops,
        params,
    )


@dataclass
class BuiltArtifact:
    """An artifact written for one runtime and, where the runtime runs here, loaded and checked.

    runner: the loaded runner (None where the runtime cannot run here, e.g. CoreML off macOS).
    export_abs_diff / export_rel_diff: the artifact's logits against the PyTorch model it was made from
        (relative to that model's largest |logit|); None when unchecked, with `note` saying why.
    """

    artifact: Artifact
    runtime: Runtime
    runner: Runner | None
    export_abs_diff: float | None = None
    export_rel_diff: float | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_artifact(
    model: nn.Module,
    example: torch.Tensor,
    runtime: str | Runtime,
    workdir: Path,
    *,
    threads: int,
    expected: np.ndarray | None = None,
    filename: str = "model",
    load: bool = True,
) -> BuiltArtifact:
    """Write `model` at `example`'s shape as `runtime`'s artifact under `workdir` (in-process runtimes write
    nothing) and, with `load`, load it where the runtime runs here (a remote target loads its own). With `expected` (the PyTorch logits on `example`, e.g.
    `PreparedModel.logits`), the artifact's own logits are compared with them: the export's fidelity."""
    rt = get_runtime(runtime) if isinstance(runtime, str) else runtime
    shape = tuple(example.shape)
    reason = rt.cannot_run()
    if rt.suffix is None:  # eager, inductor: the runner is the artifact
        runner = rt.prepare(model, example, threads, Path(workdir))
        artifact = Artifact(rt.name, None, shape)
    else:
        path = rt.export(model, example, Path(workdir) / f"{filename}{rt.suffix}")
        artifact = Artifact(rt.name, Path(path), shape)
        runner = None if reason or not load else rt.load(Path(path), example, threads)
    built = BuiltArtifact(artifact, rt, runner, note=reason)
    if expected is not None and runner is not None:
        out = np.asarray(runner(example.numpy()), dtype=np.float32).reshape(expected.shape)
        diff = float(np.abs(out - expected).max())
        built.export_abs_diff = diff
        built.export_rel_diff = diff / max(float(np.abs(expected).max()), 1e-12)
    return built
