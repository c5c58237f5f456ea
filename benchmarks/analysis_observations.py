"""Re-measure EfficientFormer's four latency observations and TRT-ViT's density finding on this machine.

EfficientFormer (V1, Sec. 3) profiled ViT operators on an iPhone 12 and found: (1) a large-kernel,
large-stride patch embedding is slow, (2) reshapes (LeViT-style 4D <-> 3D switching) cost more than
attention itself, (3) LayerNorm costs more than BatchNorm (which folds into the conv), (4) activation cost
depends on the compiler (HardSwish slower than GELU there). TRT-ViT (Table 1): a Transformer block reaches
far fewer FLOP/s than a BottleNeck at 56x56, the gap closing at 7x7. This script measures each of those
on the CPU runtimes here, through `latvit.targets.protocol` and `latvit.analysis`, and writes

    <out-dir>/analysis_observations.json   every number, with machine metadata
    <out-dir>/analysis_observations.md     the tables docs/analysis.md quotes

    python benchmarks/analysis_observations.py [--runtimes eager,ort,openvino] [--threads N] [--iters 20]
        [--img-size 224] [--sections patch,reshape,norm,act,profiles]
        [--profile-also executorch] [--out-dir benchmarks/results]

On a shared machine expect noise: medians are reported, with the coefficient of variation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import Mlp
from torch.utils.flop_counter import FlopCounterMode

import latvit
from latvit.analysis.profile import profile_model
from latvit.layers.common import ConvNormAct
from latvit.layers.efficientformer import ConvMlpBN, Meta3D
from latvit.runtimes import get_runtime
from latvit.targets.protocol import default_threads, machine_info, measure_latency
from latvit.utils import atomic_write_text


def flops_of(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module.eval()(x)
    return fc.get_total_flops()


def time_module(module: nn.Module, x: torch.Tensor, runtime: str, threads: int, iters: int) -> dict:
    """Median latency (ms) of `module` at `x` on `runtime`, via the runtime interface and the protocol."""
    rt = get_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix="latvit-obs-") as tmp:
        try:
            run = rt.prepare(module.eval(), x, threads, Path(tmp))
            xn = x.numpy()
            t = measure_latency(lambda: run(xn), warmup=5, iters=iters, min_seconds=0.5)
        except Exception as e:  # noqa: BLE001 - a failed export is a row, not the end of the script
            return {
                "ms": None,
                "cv": None,
                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200],
            }
    return {"ms": t.median_ms, "cv": t.cv, "min_ms": t.min_ms, "error": None}


# -- (1) patch embedding ----------------------------------------------------------------------------------
def patch_embeddings() -> dict[str, nn.Module]:
    """Ways to go from a 224x224 image to tokens; all but the last make a 56x56x48 map (EfficientFormer-L1's
    first stage)."""
    return {
        "conv stem: 2x (3x3 s2 Conv-BN-ReLU), 3-24-48 (EfficientFormer)": nn.Sequential(
            ConvNormAct(3, 24, 3, stride=2, act="relu"), ConvNormAct(24, 48, 3, stride=2, act="relu")
        ),
        "patch embed 4x4 s4 conv, 48 (non-overlapping, PoolFormer/Swin)": nn.Conv2d(3, 48, 4, 4),
        "patch embed 7x7 s4 conv, 48 (overlapping, PVTv2)": nn.Conv2d(3, 48, 7, 4, 3),
        "patch embed 16x16 s16 conv, 384 (ViT/DeiT-S, 14x14 tokens)": nn.Conv2d(3, 384, 16, 16),
    }


# -- (2) reshapes -----------------------------------------------------------------------------------------
class TokenBlocks(nn.Module):
    """`n` MB3D blocks on a (B, C, H, W) map: flatten once (EfficientFormer), or go back to 4-D after every
    block and flatten again before the next (the per-block 4D <-> 3D switching of LeViT-style hybrids)."""

    def __init__(self, dim: int, hw: int, n: int, per_block_reshape: bool):
        super().__init__()
        self.hw, self.per_block = hw, per_block_reshape
        self.blocks = nn.ModuleList([Meta3D(dim, resolution=(hw, hw)) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        B, C = x.shape[:2]
        if not self.per_block:
            t = x.flatten(2).transpose(1, 2)  # (B, N, C)
            for blk in self.blocks:
                t = blk(t)
            return t.transpose(1, 2).reshape(B, C, self.hw, self.hw)
        for blk in self.blocks:
            t = blk(x.flatten(2).transpose(1, 2))  # (B, N, C)
            x = t.transpose(1, 2).reshape(B, C, self.hw, self.hw).contiguous()  # back to (B, C, H, W)
        return x


# -- (3) LayerNorm vs BatchNorm ---------------------------------------------------------------------------
class LnMlp(nn.Module):
    """LayerNorm + Linear MLP on tokens of a (B, C, H, W) map (the MB3D / ViT way)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm, self.mlp = nn.LayerNorm(dim), Mlp(dim, hidden, act_layer=nn.GELU)

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        return t + self.mlp(self.norm(t))


class BnMlp(nn.Module):
    """1x1 Conv-BN MLP on the 4-D map (the MB4D way: both BNs fold into the convs at export)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.mlp = ConvMlpBN(dim, hidden, "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x + self.mlp(x)


def with_act(name: str, act: str):
    spec = latvit.get_spec(name)
    return spec.map_blocks(
        lambda b: dataclasses.replace(b, act=act) if b.act not in ("none",) else b, name=f"{name}_{act}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runtimes", default="eager,ort,openvino")
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--sections", default="patch,reshape,norm,act,profiles")
    ap.add_argument(
        "--profile-also",
        default="executorch",
        type=lambda v: [r for r in v.split(",") if r],
        help="runtimes profiled in the per-op section only (not timed in sections 1-4)",
    )
    ap.add_argument("--out-dir", default="benchmarks/results")
    args = ap.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    sections = set(args.sections.split(","))
    out = {
        "machine": machine_info(args.threads),
        "runtimes": {r: get_runtime(r).describe() for r in runtimes},
        "threads": args.threads,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    S = args.img_size
    md: list[str] = [
        f"Machine: {out['machine']['cpu']}, {out['machine']['cores']} cores, {args.threads} threads; "
        f"{', '.join(out['runtimes'].values())}. Medians of >= {args.iters} calls.",
        "",
    ]

    def table(title: str, rows: dict[str, dict], extra: dict[str, str] | None = None) -> None:
        md.append(f"**{title}**\n")
        md.append(
            "| variant | "
            + " | ".join(f"{r} ms" for r in runtimes)
            + (" | " + " | ".join(extra) if extra else "")
            + " |"
        )
        md.append("|---|" + "---:|" * (len(runtimes) + (len(extra) if extra else 0)))
        for name, row in rows.items():
            cells = [("failed" if row[r]["ms"] is None else f"{row[r]['ms']:.3f}") for r in runtimes]
            cells += [row[k] for k in (extra or {}).values()]
            md.append(f"| {name} | " + " | ".join(cells) + " |")
        md.append("")

    def run_section(title, modules: dict[str, nn.Module], x_of, extra=None):
        rows = {}
        for name, mod in modules.items():
            x = x_of(name)
            row = {r: time_module(mod, x, r, args.threads, args.iters) for r in runtimes}
            row["gflops"] = f"{flops_of(mod, x) / 1e9:.3f}"
            rows[name] = row
            print(title, name, {r: row[r]["ms"] for r in runtimes}, flush=True)
        table(title, rows, {"GFLOPs": "gflops", **(extra or {})})
        return rows

    if "patch" in sections:
        img = torch.randn(1, 3, S, S)
        out["patch_embedding"] = run_section("(1) patch embedding at 224x224", patch_embeddings(), lambda _: img)
    if "reshape" in sections:
        mods = {
            f"4x MB3D at 14x14, width 224, {'reshape 4D<->3D around every block' if pb else 'one flatten (EfficientFormer)'}": TokenBlocks(
                224, 14, 4, pb
            )
            for pb in (False, True)
        }
        x14 = torch.randn(1, 224, 14, 14)
        out["reshape"] = run_section(
            "(2) reshapes: 4 MB3D blocks, one flatten vs per-block 4D<->3D", mods, lambda _: x14
        )
    if "norm" in sections:
        rows = {}
        for hw, dim in ((28, 96), (14, 224), (7, 448)):
            x4, x3 = torch.randn(1, dim, hw, hw), torch.randn(1, hw * hw, dim)
            rows[f"{hw}x{hw}, width {dim}: 1x1 Conv-BN MLP (4-D)"] = (BnMlp(dim, 4 * dim), x4)
            rows[f"{hw}x{hw}, width {dim}: LayerNorm + Linear MLP (tokens)"] = (LnMlp(dim, 4 * dim), x3)
        out["norm"] = run_section(
            "(3) LayerNorm + Linear vs Conv-BN MLP (same FLOPs)",
            {k: m for k, (m, _) in rows.items()},
            lambda k: rows[k][1],
        )
    if "act" in sections:
        mods = {}
        for act in ("gelu", "relu", "hardswish"):
            spec = with_act("efficientformer_l1", act)
            mods[f"efficientformer_l1, every activation {act}"] = latvit.create_model(spec, img_size=S)
        img = torch.randn(1, 3, S, S)
        out["activation"] = run_section("(4) activation function: EfficientFormer-L1 end to end", mods, lambda _: img)
    if "profiles" in sections:
        out["profiles"] = {}
        md.append("**Per-op profiles (share of end-to-end latency, %)**\n")
        cats = [
            "stem",
            "downsampling",
            "token_mixer",
            "mlp",
            "norm",
            "activation",
            "reshape",
            "other",
            "runtime",
            "overhead",
        ]
        md.append("| model | runtime | ms (profiled) | " + " | ".join(cats) + " | ops explain | kernels explain |")
        md.append("|---|---|---:|" + "---:|" * (len(cats) + 2))
        for model in ("efficientformer_l1", "efficientformerv2_s1", "mobilevit_xs"):
            for r in runtimes + args.profile_also:
                try:
                    p = profile_model(model, r, img_size=S, threads=args.threads, iters=args.iters, min_seconds=0.5)
                except Exception as e:  # noqa: BLE001
                    print("profile failed", model, r, e, flush=True)
                    continue
                d = p.to_dict()
                out["profiles"][f"{model}/{r}"] = {
                    k: d[k] for k in ("e2e", "latency", "coverage", "kernel_coverage", "categories", "op_types")
                }
                c = d["categories"]
                md.append(
                    f"| {model} | {r} | {p.e2e.mean_ms:.2f} | "
                    + " | ".join(f"{100 * c.get(k, 0.0) / p.e2e.mean_ms:.1f}" for k in cats)
                    + f" | {100 * p.coverage:.0f}% | {100 * p.kernel_coverage:.0f}% |"
                )
                print("profile", model, r, f"{p.e2e.mean_ms:.2f} ms cov {p.coverage:.2f}", flush=True)
        md.append("")
    out["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    od = Path(args.out_dir)
    atomic_write_text(od / "analysis_observations.json", json.dumps(out, indent=1))
    atomic_write_text(od / "analysis_observations.md", "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
