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
- `litert`:   LiteRT's own profiler (the CompiledModel's, through libLiteRt.so's C API): XNNPACK's
              per-operator events are matched in order to the `.tflite`'s operators, whose output tensor
              names litert-torch writes from the torch module stack (`latvit.analysis.profile.litert`).

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

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch.nn as nn
from rich.console import Group
from rich.table import Table

from latvit.analysis.profile.eager import profile_eager
from latvit.analysis.profile.executorch import align_xnnpack, profile_executorch
from latvit.analysis.profile.litert import profile_litert
from latvit.analysis.profile.model import (
    CATEGORIES,
    COVERAGE_MIN,
    RUNTIME_OPS,
    Locator,
    OpTime,
    Profile,
    RawProfile,
    plan_rows,
)
from latvit.analysis.profile.openvino import profile_openvino
from latvit.analysis.profile.ort import profile_ort, profile_ort_on
from latvit.errors import LatvitError
from latvit.pipeline.prepare import prepare_model
from latvit.runtimes import RUNTIME_NAMES, get_runtime
from latvit.space.builder import LatvitNet
from latvit.space.plan import plan_network
from latvit.targets import DEFAULT_TARGET, get_target
from latvit.targets.protocol import default_threads, machine_info
from latvit.utils import save_png

PROFILERS: dict[str, Callable[..., RawProfile]] = {
    "eager": profile_eager,
    "ort": profile_ort,
    "openvino": profile_openvino,
    "executorch": profile_executorch,
    "litert": profile_litert,
}


def profile_model(
    model: str | Path | nn.Module,
    runtime: str = "ort",
    *,
    img_size: int | None = None,
    threads: int | None = None,
    warmup: int = 5,
    iters: int = 20,
    min_seconds: float = 0.5,
    deploy: bool = True,
    workdir: Path | None = None,
    target: str = DEFAULT_TARGET,
) -> Profile:
    """Profile one image (1, 3, S, S) through `model` (a name, spec, spec file, saved directory or a built
    `LatvitNet`) on `runtime` ("eager", "ort", "openvino", "executorch"). With `deploy` (the default, as in
    `latvit bench`) the deployed model is profiled, BatchNorm folded and attention biases precomputed;
    `deploy=False` profiles the model as built. `target`: where to profile; "local" (this machine) profiles
    every runtime above in this process, a device profiles the runtimes its agent returns per-op events for
    (`Target.profiles`: ONNX Runtime over SSH), attributed here alike. Returns a `Profile`; see the module
    docstring."""
    device = get_target(target)
    remote = device.kind != "local"
    if remote and runtime not in device.profiles:
        offered = (
            f"per-op profiles there are taken with {', '.join(device.profiles)}"
            if device.profiles
            else ("it takes no per-op profiles")
        )
        raise LatvitError(
            f"target '{target}' cannot profile {runtime}: {offered}; for {runtime}'s latency there use "
            f"`latvit bench --target {target} --runtimes {runtime}`, or `latvit density --target {target}`"
        )
    if runtime not in PROFILERS:
        known = ", ".join(PROFILERS)
        if runtime not in RUNTIME_NAMES:
            get_runtime(runtime)  # an unknown name raises with a suggestion; a third-party runtime loads, but:
        raise LatvitError(f"runtime '{runtime}' has no per-op profiler in latvit; choose from {known}")
    threads = threads or default_threads()
    prepared = prepare_model(model, img_size=img_size, deploy_model=deploy)
    net = prepared.model
    if not isinstance(prepared.resolved.model, LatvitNet):
        raise LatvitError(
            "per-op profiles place ops in a latvit model's blocks: give a latvit model "
            "(name, spec file or saved directory), not a timm one"
        )
    size = img_size or net.img_size
    plan = plan_network(net.spec, size, num_classes=net.num_classes)
    x = prepared.example
    proto = dict(warmup=warmup, iters=iters, min_seconds=min_seconds)
    with tempfile.TemporaryDirectory(prefix="latvit-profile-") as tmp:
        wd = Path(workdir) if workdir else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        if remote:
            raw = profile_ort_on(device, net, x, threads, proto, wd)
        else:
            raw = PROFILERS[runtime](net, x, threads, proto, wd)
    locator = Locator(net, plan)
    ops = []
    for name, op_type, scope, us, count in raw.ops:
        path = locator.innermost(scope.split("\x00"))  # eager gives one path, ONNX runtimes the scope list
        ops.append(locator.op(name, op_type, path, us, count, raw.runs))
    ops.sort(key=lambda o: -o.ms)
    return Profile(
        net.spec.name,
        runtime,
        raw.version,
        size,
        threads,
        raw.source,
        ops,
        raw.e2e,
        raw.latency,
        plan_rows(plan),
        {"target": device.name, **device.fingerprint()} if remote else machine_info(threads),
        raw.runtime_events,
    )


# ---------------------------------------------------------------------------------------------------
# Presentation
# ---------------------------------------------------------------------------------------------------
CATEGORY_COLORS = {
    "stem": "#8c564b",
    "downsampling": "#9467bd",
    "token_mixer": "#d62728",
    "mlp": "#1f77b4",
    "norm": "#2ca02c",
    "activation": "#ff7f0e",
    "reshape": "#e377c2",
    "other": "#7f7f7f",
    "runtime": "#bcbd22",
    "overhead": "#c7c7c7",
}


def profile_table(prof: Profile, top: int = 10):
    """A rich renderable: per-category summary, per-block breakdown and the `top` slowest ops."""
    head = (
        f"{prof.model} @ {prof.img_size} on {prof.runtime_version}, {prof.threads} threads: "
        f"{prof.e2e.mean_ms:.3f} ms/img profiled (unprofiled median "
        f"{prof.latency.median_ms:.3f} ms), ops explain {100 * prof.coverage:.1f}% "
        f"({100 * prof.kernel_coverage:.1f}% without runtime)"
    )
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
        blocks.add_row(
            row["block"],
            row["kind"],
            f"{row['ms']:.3f}",
            *[f"{row['categories'].get(c, 0.0):.3f}" if row["categories"].get(c) else "" for c in CATEGORIES],
        )
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
    ax.set_title(
        f"{prof.model} @ {prof.img_size}, {prof.runtime_version}, {prof.threads} threads "
        f"(ops explain {100 * prof.coverage:.0f}%)",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


__all__ = [
    "CATEGORIES",
    "COVERAGE_MIN",
    "PROFILERS",
    "RUNTIME_OPS",
    "Locator",
    "OpTime",
    "Profile",
    "RawProfile",
    "align_xnnpack",
    "plot_profile",
    "profile_model",
    "profile_table",
]
