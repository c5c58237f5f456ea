"""`latvit bench`: latency of models on real runtimes, one honest protocol, one flat record per row.

Flow: `check_request` validates everything the user typed (before anything slow starts); the GEMM
probe measures this machine's fp32 peak once; then every (model, runtime) pair runs `measure_row` in its
own subprocess (`protocol.run_isolated`) so a crash or hang becomes a failed row and the bench goes on.
`measure_row` builds the model, deploys it (`latvit.deploy`), merges tokens and prunes it where asked
(`latvit.deploy.compress`), prepares the runtime's runner, checks its
outputs against eager PyTorch on the model as built, and times it with `protocol.measure_latency`.

Records are flat dicts (see RECORD_FIELDS) so they serve as JSON/CSV rows, plot points and LUT rows.
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from latvit.errors import LatvitError, first_line
from latvit.utils import progress_bar

# The default bench: the seed models plus the two classic CNN baselines, on ONNX Runtime, batch 1.
SEED_MODELS = ["efficientformer_l1", "efficientformerv2_s0", "efficientformerv2_s1", "mobilevit_xxs",
               "mobilevit_xs", "mobilevit_s", "trtvit_a"]
# The survey's baselines (issue: "so the survey's baselines sit beside the seed families").
SURVEY_BASELINES = ["timm:levit_128s", "timm:poolformer_s12", "timm:edgenext_xx_small", "timm:nextvit_small",
                    "timm:efficientvit_m0", "timm:efficientvit_b1", "timm:mobilenetv2_100", "timm:resnet50",
                    "timm:deit_tiny_patch16_224"]
DEFAULT_RUNTIMES = ["ort"]

RECORD_FIELDS = [
    "model", "source", "runtime", "runtime_version", "status", "error", "batch", "img_size", "threads",
    "deployed", "tome_r", "sparsity", "params_m", "gflops", "median_ms", "p90_ms", "min_ms", "mean_ms", "cv", "iters",
    "gflops_per_s", "peak_gflops", "pct_peak", "max_abs_diff", "top1", "top1_source", "mes",
    "cpu", "cores", "platform", "python", "torch_version", "latvit_version", "seconds",
]
STATUS_OK, STATUS_FAILED, STATUS_UNAVAILABLE, STATUS_EXPORT_ONLY = "ok", "failed", "unavailable", "export-only"


# -- models: latvit names, spec files, saved directories and timm:NAME through one path ----------------
def load_bench_model(ref: str, img_size: int | None = None):
    """Build the model `ref` names, randomly initialised (latency does not depend on the weights).

    ref: a latvit model name, a spec JSON path, a `latvit.save` directory, or `timm:NAME`.
    Returns (model in eval mode, input size, source) with source "latvit" or "timm".
    """
    if ref.startswith("timm:"):
        import timm

        name = ref[len("timm:"):]
        if not timm.is_model(name):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
            raise LatvitError(f"unknown timm model '{name}'{hint}")
        if img_size and img_size % 32:
            raise LatvitError(f"image size {img_size} does not suit timm:{name}: use a multiple of 32")
        model = timm.create_model(name, pretrained=False)
        default = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
        if img_size and img_size != default:  # ViTs and LeViT fix their size at construction: build at this one
            try:
                model = timm.create_model(name, pretrained=False, img_size=img_size)
            except TypeError:  # a CNN without the argument takes any size as it is
                pass
            import torch

            try:
                with torch.inference_mode():
                    model.eval()(torch.zeros(1, 3, img_size, img_size))
            except Exception as e:  # one line now, rather than a failed row per runtime later
                raise LatvitError(f"timm:{name} does not take {img_size}px input ({first_line(e)}); "
                                  f"use --img-size {default}") from None
        return model.eval(), img_size or default, "timm"
    from latvit.models import create_model, resolve_spec
    from latvit.space.plan import plan_network

    spec, _ = resolve_spec(ref)
    size = img_size or spec.img_size
    plan_network(spec.with_img_size(size))  # raises a SpecError naming the size problem
    return create_model(ref, img_size=size).eval(), size, "latvit"


def input_normalization(model, source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) a model from `load_bench_model` expects its input normalised with: the spec's for latvit
    models, timm's pretrained config for timm ones (ImageNet's when it has none)."""
    if source == "latvit":
        return tuple(model.spec.mean), tuple(model.spec.std)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def model_label(ref: str) -> str:
    """Short row label: the registered name, or the spec's name for files and directories."""
    if ref.startswith("timm:") or "/" not in ref and not ref.endswith(".json"):
        return ref
    from latvit.models import resolve_spec

    return resolve_spec(ref)[0].name or ref


# -- one row, in a child process ------------------------------------------------------------------------
def measure_row(model: str, runtime: str, batch: int = 1, img_size: int | None = None, threads: int = 1,
                warmup: int = 10, iters: int = 50, min_seconds: float = 1.0, deploy: bool = True,
                tome_r: int | str = 0, sparsity: str | float | None = None, peak_gflops: float | None = None,
                seed: int = 0) -> dict[str, Any]:
    """Measure one (model, runtime) pair and return its flat record (see RECORD_FIELDS).

    The output check compares the runtime's logits with eager PyTorch on the model *as built* (before
    deploy folding), so `max_abs_diff` covers both the deploy transform and the runtime.
    """
    import numpy as np
    import torch

    from latvit.targets.protocol import machine_info, measure_latency, set_threads
    from latvit.layers.cost import measured_flops
    from latvit.runtimes import get_runtime

    start = time.perf_counter()
    set_threads(threads)
    torch.manual_seed(seed)
    rt = get_runtime(runtime)
    net, size, source = load_bench_model(model, img_size)
    example = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        reference = net(example).numpy()
    flops = measured_flops(net, example)
    params = sum(p.numel() for p in net.parameters())
    deployed = deploy and source == "latvit"
    if deployed:
        from latvit.deploy import deploy as deploy_model

        net = deploy_model(net)
    from latvit.deploy.compress import compress
    from latvit.deploy.sparsity import parse_sparsity
    from latvit.deploy.token_merging import merges_tokens, parse_tome

    setting = parse_tome(tome_r)  # {"r": 13 or [26] * 6 for '26x6', "keep": 0.25 for 'keep0.25' (else 1)}
    schedule = setting["r"]
    net = compress(net, tome_r, sparsity)
    if merges_tokens(**setting):
        flops = measured_flops(net, example)  # FLOPs count the merged model (what runs)
    record = base_record(model, runtime, batch, size, threads) | machine_info(threads) | {
        "source": source, "runtime_version": rt.version(), "deployed": deployed,
        "tome_r": schedule if isinstance(schedule, int) and setting["keep"] == 1 else str(tome_r).strip(),
        "sparsity": parse_sparsity(sparsity), "params_m": params / 1e6, "gflops": flops / 1e9}
    with tempfile.TemporaryDirectory(prefix="latvit-bench-") as workdir:
        if rt.cannot_run():  # e.g. CoreML off macOS: prove the export works, report no latency
            rt.export(net, example, Path(workdir) / f"model{rt.suffix or ''}")
            return record | {"status": STATUS_EXPORT_ONLY, "error": rt.cannot_run(),
                             "seconds": time.perf_counter() - start}
        run = rt.prepare(net, example, threads, Path(workdir))
        x = example.numpy()
        out = np.asarray(run(x))
        diff = float(np.abs(out.reshape(reference.shape) - reference).max())
        timing = measure_latency(lambda: run(x), warmup=warmup, iters=iters, min_seconds=min_seconds)
    record |= timing.as_dict() | {"status": STATUS_OK, "max_abs_diff": diff}
    return finish_record(record, flops, params, peak_gflops) | {"seconds": time.perf_counter() - start}


def base_record(model: str, runtime: str, batch: int, img_size: int | None, threads: int) -> dict[str, Any]:
    from latvit.models.published import PUBLISHED_TOP1

    top1 = PUBLISHED_TOP1.get(model)
    record = dict.fromkeys(RECORD_FIELDS)
    return record | {"model": model, "runtime": runtime, "batch": batch, "img_size": img_size, "threads": threads,
                     "top1": top1[0] if top1 else None, "top1_source": top1[1] if top1 else None, "error": ""}


def finish_record(record: dict, flops: float, params: int, peak_gflops: float | None) -> dict:
    """Derived columns: density (GFLOP/s), its share of the measured GEMM peak, latency-based MES."""
    from latvit.space.mes import mes

    seconds = record["median_ms"] / 1e3
    density = flops / seconds / 1e9
    per_image_ms = record["median_ms"] / record["batch"]
    return record | {"gflops_per_s": density, "peak_gflops": peak_gflops,
                     "pct_peak": 100 * density / peak_gflops if peak_gflops else None,
                     "mes": mes({"params": params, "latency_ms": per_image_ms})}


# -- the whole bench, in the parent ---------------------------------------------------------------------
@dataclass
class BenchRequest:
    models: list[str] = field(default_factory=lambda: available_models(SEED_MODELS) + ["timm:resnet50",
                                                                                        "timm:mobilenetv2_100"])
    runtimes: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIMES))
    batch: int = 1
    img_size: int | None = None
    threads: int | None = None  # default: all cores
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    deploy: bool = True
    tome_r: int | str = 0  # token merging: R per transformer layer (0: none), 'RxL', 'keepF', 'R+keepF' (parse_tome)
    sparsity: str | float | None = None  # pruned weights: a fraction (global magnitude) or "2:4"
    timeout: float = 300.0  # per row, seconds


def check_request(req: BenchRequest) -> None:
    """Reject bad input with one clear line before any measurement starts."""
    from latvit.runtimes import get_runtime

    if req.batch < 1:
        raise LatvitError(f"batch must be >= 1, got {req.batch}")
    if req.img_size is not None and req.img_size < 1:
        raise LatvitError(f"image size must be >= 1, got {req.img_size}")
    if req.threads is not None and req.threads < 1:
        raise LatvitError(f"threads must be >= 1, got {req.threads}")
    from latvit.deploy.compress import check_compression

    check_compression(req.tome_r, req.sparsity)  # one line naming the expected forms
    if req.iters < 1 or req.warmup < 0 or req.min_seconds < 0 or req.timeout <= 0:
        raise LatvitError("iters must be >= 1, warmup >= 0, min-seconds >= 0 and timeout > 0")
    if not req.models or not req.runtimes:
        raise LatvitError("give at least one model and one runtime")
    for name in req.runtimes:
        get_runtime(name)
    for ref in req.models:
        check_model(ref, req.img_size)


def check_model(ref: str, img_size: int | None) -> None:
    """Cheap validation of a model reference and input size (no weights built for latvit models)."""
    if ref.startswith("timm:"):
        import timm

        name = ref[len("timm:"):]
        if not timm.is_model(name):
            load_bench_model(ref)  # raises with suggestions
        if img_size and img_size % 32:
            raise LatvitError(f"image size {img_size} does not suit {ref}: use a multiple of 32")
        return
    from latvit.models import resolve_spec
    from latvit.space.plan import plan_network

    spec, _ = resolve_spec(ref)
    plan_network(spec.with_img_size(img_size or spec.img_size))


def available_models(models: list[str]) -> list[str]:
    """Drop seed models that are not registered (yet) from a default list, e.g. trtvit_a."""
    from latvit.models import MODELS

    return [m for m in models if m.startswith("timm:") or m in MODELS or "/" in m or m.endswith(".json")]


def run_bench(req: BenchRequest, on_row: Callable[[dict], None] | None = None, progress: bool = True) -> list[dict]:
    """Measure every (model, runtime) pair of `req`; returns the records in request order.

    on_row: called with each record as soon as it is measured (for live tables and partial saves).
    """
    from latvit.targets.protocol import default_threads, run_isolated
    from latvit.runtimes import get_runtime

    check_request(req)
    threads = req.threads or default_threads()
    probe = run_isolated("latvit.targets.protocol:gemm_peak_gflops", {"threads": threads}, timeout=120,
                         threads=threads)
    peak = probe.value if probe.ok else None
    pairs = [(m, r) for m in req.models for r in req.runtimes]
    records: list[dict] = []
    with progress_bar(progress, len(pairs), "bench") as advance:
        for model, runtime in pairs:
            advance(f"{model_label(model)} on {runtime}")
            rt = get_runtime(runtime)
            reason = rt.missing() or (None if rt.export_only_where_it_cannot_run else rt.cannot_run())
            if reason:
                record = base_record(model, runtime, req.batch, req.img_size, threads) | {
                    "status": STATUS_UNAVAILABLE, "error": reason}
            else:
                kwargs = {"model": model, "runtime": runtime, "batch": req.batch, "img_size": req.img_size,
                          "threads": threads, "warmup": req.warmup, "iters": req.iters,
                          "min_seconds": req.min_seconds, "deploy": req.deploy, "tome_r": req.tome_r,
                          "sparsity": req.sparsity, "peak_gflops": peak}
                result = run_isolated("latvit.latency.bench:measure_row", kwargs, timeout=req.timeout, threads=threads)
                record = result.value if result.ok else base_record(model, runtime, req.batch, req.img_size, threads) | {
                    "status": STATUS_FAILED, "error": result.error, "seconds": result.seconds}
            record["model"] = model_label(model)
            records.append(record)
            if on_row:
                on_row(record)
    return records


# -- reports ----------------------------------------------------------------------------------------------
def records_json(records: list[dict]) -> str:
    return json.dumps({"format": "latvit-bench/1", "records": records}, indent=1)


def records_csv(records: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RECORD_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def print_table(records: list[dict], console=None) -> None:
    """Print `bench_table(records)` and the GEMM peak it was measured against."""
    from rich.console import Console

    console = console or Console(width=max(Console().width, 150))
    console.print(bench_table(records))
    first = next((r for r in records if r.get("cpu")), {})
    if first.get("peak_gflops"):
        console.print(f"GEMM peak measured in this run: {first['peak_gflops']:.1f} GFLOP/s "
                      f"({first['threads']} threads); MES = 100 / sqrt(params M x latency ms)")


def bench_table(records: list[dict]):
    """The rich table `latvit bench` prints: one line per record, failures with their reason."""
    from rich.table import Table

    first = next((r for r in records if r.get("cpu")), {})
    title = f"latvit bench: {first.get('cpu', '')}, {first.get('threads', '')} threads, batch {records[0]['batch']}"
    if first.get("tome_r") not in (None, 0, "0"):
        title += f", token merging {first['tome_r']}"
    if first.get("sparsity") is not None:  # top-1 stays the published model's: these models are changed
        title += f", sparsity {first['sparsity']}"
    table = Table(title=title)
    for col in ("model", "runtime", "size"):
        table.add_column(col, no_wrap=True)
    for col in ("params M", "GFLOPs", "median ms", "p90 ms", "CV %", "GFLOP/s", "% peak", "max |diff|",
                "top-1", "MES"):
        table.add_column(col, justify="right")
    for r in records:
        if r["status"] != STATUS_OK:
            table.add_row(r["model"], r["runtime"], _fmt(r.get("img_size"), "d"), _fmt(r.get("params_m"), ".2f"),
                          _fmt(r.get("gflops"), ".2f"), f"[yellow]{r['status']}[/]: {r['error']}", *[""] * 5,
                          _fmt(r.get("top1"), ".1f"), "")
            continue
        table.add_row(r["model"], r["runtime"], str(r["img_size"]), f"{r['params_m']:.2f}", f"{r['gflops']:.2f}",
                      f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{100 * r['cv']:.1f}",
                      f"{r['gflops_per_s']:.1f}", _fmt(r["pct_peak"], ".0f"), f"{r['max_abs_diff']:.1e}",
                      _fmt(r["top1"], ".1f"), f"{r['mes']:.1f}")
    return table


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points (latency, accuracy) not dominated by a faster-and-at-least-as-accurate one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_records(records: list[dict], path: Path) -> Path:
    """PNG: published ImageNet top-1 against measured latency, one marker per runtime, Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latvit.utils import save_png

    rows = [r for r in records if r["status"] == STATUS_OK and r.get("top1") is not None]
    if not rows:
        raise LatvitError("nothing to plot: no measured row has a published top-1 (see latvit/models/published.py)")
    markers = "osD^v<>P*X"
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for k, runtime in enumerate(dict.fromkeys(r["runtime"] for r in rows)):
        sub = [r for r in rows if r["runtime"] == runtime]
        ax.scatter([r["median_ms"] for r in sub], [r["top1"] for r in sub], marker=markers[k % len(markers)],
                   s=45, label=runtime, zorder=3)
        for r in sub:
            ax.annotate(r["model"], (r["median_ms"], r["top1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front([(r["median_ms"], r["top1"]) for r in rows])
    pts = sorted((rows[i]["median_ms"], rows[i]["top1"]) for i in front)
    ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="gray", ls="--", lw=1, label="Pareto front")
    first = rows[0]
    ax.set_xlabel(f"median latency (ms), batch {first['batch']}, {first['threads']} threads, {first['cpu']}", fontsize=8)
    ax.set_ylabel("published ImageNet-1k top-1 (%)")
    ax.set_title("latvit bench: accuracy vs latency measured here")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
