"""Computational density per block type and resolution: TRT-ViT's Table 1, measured on this machine.

TRT-ViT (Xia et al. 2022) judges a block by how many FLOPs per second the hardware achieves on it
("TeraFLOPS" = FLOPs / latency) and how many parameters per second ("TeraParams" = params / latency):
a BottleNeck is dense at 56x56, a Transformer is not, and the gap closes at 7x7. latvit repeats that for
every block family it implements, at resolutions 56, 28, 14 and 7, on any runtime.

Each case is one `BlockSpec` taken from the family's own spec where the family has that block at that
resolution (`source` names it, e.g. `efficientformer_l1 stages[3][4]`), and otherwise the family's
nearest block of that kind re-widthed to the family's stage width at that resolution (`source` says
"extrapolated"). FLOPs and params are the analytic costs of the planner (`plan_network`), identical to
`torch.utils.flop_counter`; latency comes from `latvit.targets.protocol` on the chosen runtime; density
is also given as a share of this machine's measured fp32 GEMM peak (`gemm_peak_gflops`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from latvit.errors import LatvitError, first_line
from latvit.latency.module_timing import time_module
from latvit.models import get_spec
from latvit.runtimes import runnable_runtime
from latvit.space.blocks import BLOCK_KINDS
from latvit.space.builder import build_model
from latvit.space.plan import PlannedBlock, plan_network
from latvit.space.spec import BlockSpec, NetSpec, StageSpec
from latvit.targets import DEFAULT_TARGET, Protocol, get_target
from latvit.targets.protocol import default_threads, gemm_peak_gflops, machine_info
from latvit.utils import atomic_write_text, save_png

RESOLUTIONS = (56, 28, 14, 7)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BlockType:
    """One row family of the table: a block kind, the model whose specs it follows, and per-resolution
    overrides where the family has no such block there (or none at all, for TRT-ViT's plain Transformer)."""

    label: str
    kind: str
    family_model: str | None  # the model whose blocks and stage widths are used
    widths: dict[int, int] = field(default_factory=dict)  # explicit widths (no family model)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)  # BlockSpec fields per resolution
    template: BlockSpec | None = None  # used when the family has no block of this kind
    note: str = ""


_RESNET_SR = {56: {"sr": 8}, 28: {"sr": 4}, 14: {"sr": 2}, 7: {"sr": 1}}  # PVT's spatial reduction per stage
_MIX = BlockSpec("mixblock_c", 2048, expansion=3.0, key_dim=32, ratio=0.5, act="gelu")

BLOCK_TYPES: tuple[BlockType, ...] = (
    BlockType("BottleNeck", "bottleneck", "trtvit_a", note="ResNet-50 widths 256-2048 (TRT-ViT's early stages)"),
    BlockType(
        "Transformer",
        "transformer_sr",
        None,
        widths={56: 64, 28: 128, 14: 320, 7: 512},
        overrides=_RESNET_SR,
        template=BlockSpec("transformer_sr", 64, expansion=3.0, key_dim=32, act="gelu"),
        note="PVT widths 64-512 and spatial reduction 8/4/2/1; TRT-ViT head dim 32, MLP ratio 3",
    ),
    BlockType(
        "MixBlock A",
        "mixblock_a",
        "trtvit_a",
        overrides=_RESNET_SR,
        template=dataclasses.replace(_MIX, kind="mixblock_a"),
        note="TRT-ViT-A MixBlock C spec with the kind changed; sr 8/4/2/1 by resolution",
    ),
    BlockType(
        "MixBlock B",
        "mixblock_b",
        "trtvit_a",
        overrides=_RESNET_SR,
        template=dataclasses.replace(_MIX, kind="mixblock_b"),
    ),
    BlockType("MixBlock C", "mixblock_c", "trtvit_a", overrides=_RESNET_SR, template=_MIX),
    BlockType("MB4D (EfficientFormer)", "meta4d", "efficientformer_l1"),
    BlockType(
        "MB3D (EfficientFormer)",
        "meta3d",
        "efficientformer_l1",
        note="L1 uses MB3D at 7x7 only; at 56-14 it attends over all H*W tokens",
    ),
    BlockType("V2 local FFN", "ffn_local", "efficientformerv2_s1"),
    BlockType(
        "V2 attention",
        "attn_ffn",
        "efficientformerv2_s1",
        overrides={56: {"attn_stride": 4}, 28: {"attn_stride": 2}},
        note="V2 uses stride-2 attention at 14x14 and none at 7x7; stride 2 at 28 and 4 at 56 extrapolated",
    ),
    BlockType(
        "MobileViT block",
        "mobilevit",
        "mobilevit_s",
        overrides={56: {"dim": 96, "depth": 2}},
        note="MobileViT-S blocks at 28/14/7; at 56 (where MobileViT has MV2 blocks) dim 96, depth 2",
    ),
)


@dataclass(frozen=True)
class DensityCase:
    """One block at one resolution: what is measured, and where its spec comes from."""

    label: str
    kind: str
    resolution: int
    c_in: int
    block: BlockSpec
    source: str

    def spec(self) -> NetSpec:
        """A one-block network (no stem, no head) the planner and builder accept."""
        return NetSpec(
            f"density_{self.kind}_{self.resolution}",
            stem=(),
            stages=(StageSpec((self.block,)),),
            img_size=self.resolution,
            in_chans=self.c_in,
        )

    def plan(self) -> PlannedBlock:
        return plan_network(self.spec(), num_classes=0).blocks[0]


def _family_cases(bt: BlockType, resolutions) -> list[DensityCase]:
    plan = plan_network(get_spec(bt.family_model), 224)
    width_at = {b.h_out: b.c_out for b in plan.blocks}  # the stage width at each resolution (last block wins)
    own = {}
    for b in plan.blocks:  # the family's own block of this kind at each input resolution, width-keeping preferred
        if b.spec.kind == bt.kind and b.spec.stride == 1 and (b.h not in own or b.c_in == b.c_out):
            own[b.h] = b
    cases = []
    for r in resolutions:
        if r in own:
            b = own[r]
            block = dataclasses.replace(b.spec, **bt.overrides.get(r, {}))
            changed = "" if block == b.spec else f" with {bt.overrides[r]}"
            cases.append(DensityCase(bt.label, bt.kind, r, b.c_in, block, f"{bt.family_model} {b.where}{changed}"))
            continue
        if own:
            near = min(own, key=lambda h: abs(h - r))
            tmpl, origin = own[near].spec, f"{bt.family_model} {own[near].where}"
        elif bt.template is not None:
            tmpl, origin = bt.template, f"{bt.family_model} widths"
        else:
            continue
        width = width_at.get(r, tmpl.width)
        block = dataclasses.replace(tmpl, width=width, stride=1, **bt.overrides.get(r, {}))
        cases.append(DensityCase(bt.label, bt.kind, r, width, block, f"extrapolated from {origin}"))
    return cases


def density_cases(kinds: list[str] | None = None, resolutions=RESOLUTIONS) -> list[DensityCase]:
    """The table's cases for the block `kinds` (default: every block type whose kind is registered here),
    at `resolutions`. Unknown kinds raise; every case is validated by the planner."""
    types = [bt for bt in BLOCK_TYPES if bt.kind in BLOCK_KINDS]
    if kinds:
        known = {bt.kind for bt in types}
        bad = [k for k in kinds if k not in known]
        if bad:
            raise LatvitError(f"no density rows for kind(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
        types = [bt for bt in types if bt.kind in kinds]
    bad_r = [r for r in resolutions if int(r) < 1]
    if bad_r:
        raise LatvitError(f"resolutions must be positive, got {bad_r}")
    cases = []
    for bt in types:
        if bt.family_model is None:
            cases += [
                DensityCase(
                    bt.label,
                    bt.kind,
                    r,
                    bt.widths[r] if r in bt.widths else bt.template.width,
                    dataclasses.replace(
                        bt.template, width=bt.widths.get(r, bt.template.width), **bt.overrides.get(r, {})
                    ),
                    "TRT-ViT / PVT widths",
                )
                for r in resolutions
            ]
        else:
            cases += _family_cases(bt, resolutions)
    for c in cases:
        c.plan()  # raises a SpecError naming the block if a case is invalid
    return cases


@dataclass
class DensityReport:
    runtime: str
    runtime_version: str
    threads: int
    peak_gflops: float
    rows: list[dict[str, Any]]
    machine: dict[str, Any]
    statistic: str = "median"  # the latency statistic density is computed from

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "latvit.density",
            "schema_version": SCHEMA_VERSION,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "threads": self.threads,
            "gemm_peak_gflops": self.peak_gflops,
            "statistic": self.statistic,
            "rows": self.rows,
            "machine": self.machine,
        }

    def to_json(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))


def measure_density(
    cases: list[DensityCase],
    runtime: str = "ort",
    *,
    threads: int | None = None,
    warmup: int = 5,
    iters: int = 20,
    min_seconds: float = 0.5,
    peak: bool = True,
    statistic: str = "median",
    target: str = DEFAULT_TARGET,
) -> DensityReport:
    """Measure each case's latency (batch 1) on `runtime`: one row per case with GFLOPs, params, latency,
    GFLOP/s, Mparams/s and % of the GEMM peak. A case that fails to export or run becomes a row with
    `error` set; the others go on. `statistic` ("median" or "min") is the latency density is computed from:
    on a machine shared with other jobs the minimum is the robust choice. `target`: where the blocks are
    timed (latvit.targets; the GEMM peak is probed only on this machine)."""
    if statistic not in ("median", "min"):
        raise LatvitError(f"statistic must be 'median' or 'min', got '{statistic}'")
    rt = runnable_runtime(runtime)
    threads = threads or default_threads()
    peak_gflops = gemm_peak_gflops(threads) if peak and get_target(target).kind == "local" else 0.0
    rows = []
    with tempfile.TemporaryDirectory(prefix="latvit-density-") as tmp:
        for i, case in enumerate(cases):
            p = case.plan()
            row = {
                "label": case.label,
                "kind": case.kind,
                "resolution": case.resolution,
                "c_in": case.c_in,
                "width": case.block.width,
                "source": case.source,
                "gflops": p.cost.flops / 1e9,
                "mparams": p.cost.params / 1e6,
                "block": dataclasses.asdict(case.block),
            }
            try:
                stage = build_model(case.spec(), num_classes=0).stages[0].eval()  # the block (and a flatten for MB3D)
                x = torch.randn(1, case.c_in, case.resolution, case.resolution)
                work = Path(tmp) / f"case{i}"
                work.mkdir()
                t = time_module(
                    stage,
                    x,
                    runtime,
                    threads=threads,
                    workdir=work,
                    target=target,
                    protocol=Protocol(warmup, iters, min_seconds),
                )
                ms = t.median_ms if statistic == "median" else t.min_ms
                seconds = ms / 1e3
                row.update(
                    latency=t.as_dict(),
                    ms=ms,
                    gflops_per_s=row["gflops"] / seconds,
                    mparams_per_s=row["mparams"] / seconds,
                    pct_peak=100 * row["gflops"] / seconds / peak_gflops if peak_gflops else None,
                    error=None,
                )
            except LatvitError:
                raise
            except Exception as e:  # noqa: BLE001 - one failed export must not lose the table
                row.update(
                    latency=None,
                    ms=None,
                    gflops_per_s=None,
                    mparams_per_s=None,
                    pct_peak=None,
                    error=first_line(e, 300),
                )
            rows.append(row)
    return DensityReport(runtime, rt.version(), threads, peak_gflops, rows, machine_info(threads), statistic)


def density_table(report: DensityReport):
    """A rich table of the report, one row per block type, one column group per resolution."""
    from rich.table import Table

    res = sorted({r["resolution"] for r in report.rows}, reverse=True)
    t = Table(
        title=f"computational density on {report.runtime_version}, {report.threads} threads "
        f"(GEMM peak {report.peak_gflops:.0f} GFLOP/s); per cell: GFLOP/s | Mparams/s | {report.statistic} ms"
    )
    t.add_column("block")
    for r in res:
        t.add_column(f"{r}x{r}", justify="right")
    labels = list(dict.fromkeys(r["label"] for r in report.rows))
    for label in labels:
        cells = []
        for r in res:
            row = next((x for x in report.rows if x["label"] == label and x["resolution"] == r), None)
            if row is None:
                cells.append("")
            elif row["error"]:
                cells.append("failed")
            else:
                cells.append(f"{row['gflops_per_s']:.1f} | {row['mparams_per_s']:.3g} | {row['ms']:.2f}")
        t.add_row(label, *cells)
    return t


def plot_density(report: DensityReport, path: Path) -> None:
    """GFLOP/s (left) and Mparams/s (right) against resolution, one line per block type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for label in dict.fromkeys(r["label"] for r in report.rows):
        pts = sorted(
            (r["resolution"], r["gflops_per_s"], r["mparams_per_s"])
            for r in report.rows
            if r["label"] == label and not r["error"]
        )
        if not pts:
            continue
        xs = [p[0] for p in pts]
        style = "-o" if label in ("BottleNeck", "Transformer") else "--."
        axes[0].plot(xs, [p[1] for p in pts], style, label=label)
        axes[1].plot(xs, [p[2] for p in pts], style, label=label)
    for ax, what in zip(axes, ("GFLOP/s", "Mparams/s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(RESOLUTIONS), [f"{r}x{r}" for r in RESOLUTIONS])
        ax.invert_xaxis()
        ax.set_xlabel("input resolution of the block")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    if report.peak_gflops:
        axes[0].axhline(report.peak_gflops, color="k", lw=0.8, ls=":", label="GEMM peak")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"block density on {report.runtime_version}, {report.threads} threads", fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


__all__ = [
    "BLOCK_TYPES",
    "RESOLUTIONS",
    "DensityCase",
    "DensityReport",
    "density_cases",
    "density_table",
    "measure_density",
    "plot_density",
]
