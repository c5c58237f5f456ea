"""`latvit bench`: latency of models on real runtimes, one honest protocol, one flat record per row.

Flow: `check_request` validates everything the user typed (before anything slow starts); the roofline
(`Roofline`) is probed with torch's GEMM and each runtime's own GEMM; then every (model, runtime) pair
runs `measure_row` in its own subprocess (`protocol.run_isolated`) so a crash or hang becomes a failed row
and the bench goes on. `measure_row` is the one pipeline (`latvit.pipeline`): resolve the reference, deploy,
compress, write the runtime's artifact and check it, then hand it to the target (`--target`, this machine by
default) to be timed.

Records are flat dicts (see RECORD_FIELDS) so they serve as JSON/CSV rows, plot points and LUT rows. Two
errors are kept apart: `export_abs_diff` (the artifact against the PyTorch model it was made from) and
`compression_abs_diff` (token merging / pruning against the model as built).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from rich.console import Console
from rich.table import Table

from latvit.deploy.compress import check_compression
from latvit.errors import LatvitError
from latvit.models import MODELS
from latvit.models.published import PUBLISHED_TOP1
from latvit.pipeline.prepare import BuiltArtifact, PreparedModel, build_artifact, prepare_model
from latvit.pipeline.resolve import check_model_ref, model_label
from latvit.runtimes import get_runtime
from latvit.runtimes.base import Artifact
from latvit.space.mes import mes
from latvit.targets import DEFAULT_TARGET, LOCAL, Protocol, Target, TimingJob, get_target, result_record
from latvit.targets.protocol import (
    NETWORK_SESSIONS,
    default_threads,
    machine_info,
    measure_latency,
    run_isolated,
    set_threads,
)
from latvit.targets.schedule import run_on_targets
from latvit.utils import progress_bar, save_png

# The default bench: the seed models plus the two classic CNN baselines, on ONNX Runtime, batch 1.
SEED_MODELS = [
    "efficientformer_l1",
    "efficientformerv2_s0",
    "efficientformerv2_s1",
    "mobilevit_xxs",
    "mobilevit_xs",
    "mobilevit_s",
    "trtvit_a",
]
# The survey's baselines, beside the seed families.
SURVEY_BASELINES = [
    "timm:levit_128s",
    "timm:poolformer_s12",
    "timm:edgenext_xx_small",
    "timm:nextvit_small",
    "timm:efficientvit_m0",
    "timm:efficientvit_b1",
    "timm:mobilenetv2_100",
    "timm:resnet50",
    "timm:deit_tiny_patch16_224",
]
# Today's mobile models a user would pick instead (`--models frontier`), small variants, each with its
# published top-1 in latvit/models/published.py; TinyViT names its ImageNet-1k weights (the default is 22k).
FRONTIER_MODELS = [
    "timm:fastvit_t8",
    "timm:fastvit_t12",
    "timm:repvit_m0_9",
    "timm:repvit_m1_0",
    "timm:efficientvit_b0",
    "timm:efficientvit_b1",
    "timm:efficientvit_m2",
    "timm:efficientvit_m4",
    "timm:mobilenetv4_conv_small",
    "timm:mobilenetv4_conv_medium",
    "timm:mobilenetv4_hybrid_medium",
    "timm:shvit_s1",
    "timm:shvit_s4",
    "timm:swiftformer_xs",
    "timm:swiftformer_s",
    "timm:starnet_s1",
    "timm:starnet_s4",
    "timm:mobileone_s0",
    "timm:mobileone_s1",
    "timm:tiny_vit_5m_224.in1k",
    "timm:levit_128s",
    "timm:edgenext_xx_small",
    "timm:edgenext_x_small",
    "timm:nextvit_small",
]
DEFAULT_RUNTIMES = ["ort"]

RECORD_FIELDS = [
    "model",
    "source",
    "runtime",
    "runtime_version",
    "target",
    "status",
    "error",
    "batch",
    "img_size",
    "threads",
    "deployed",
    "tome_r",
    "sparsity",
    "params_m",
    "gflops",
    "median_ms",
    "ci_low_ms",
    "ci_high_ms",
    "ci_rel",
    "noisy",
    "p90_ms",
    "min_ms",
    "mean_ms",
    "cv",
    "iters",
    "stats_source",
    "sessions",
    "target_kind",
    "ref_ms",
    "ref_gemm_ms",
    "ref_ratio",
    "gflops_per_s",
    "peak_gflops",
    "peak_engine",
    "peak_at",
    "pct_peak",
    "export_abs_diff",
    "compression_abs_diff",
    "top1",
    "top1_source",
    "mes",
    "cpu",
    "cores",
    "platform",
    "python",
    "torch_version",
    "latvit_version",
    "measured_at",
    "seconds",
]
STATUS_OK, STATUS_FAILED, STATUS_UNAVAILABLE, STATUS_EXPORT_ONLY = "ok", "failed", "unavailable", "export-only"


# -- one row, in a child process ------------------------------------------------------------------------
def measure_row(
    model: str,
    runtime: str,
    batch: int = 1,
    img_size: int | None = None,
    threads: int = 1,
    warmup: int = 10,
    iters: int = 50,
    min_seconds: float = 1.0,
    deploy: bool = True,
    tome_r: int | str = 0,
    sparsity: str | float | None = None,
    peak_gflops: float | None = None,
    seed: int = 0,
    target: str = DEFAULT_TARGET,
    reference: bool = True,
    max_seconds: float = 30.0,
    sessions: int = NETWORK_SESSIONS,
) -> dict[str, Any]:
    """Measure one (model, runtime) pair on `target` and return its flat record (see RECORD_FIELDS). With
    `reference`, the target times its reference workload in alternating rounds with the model, and the
    record carries the device's speed meanwhile (ref_ms, ref_gemm_ms, ref_ratio = median_ms / ref_ms: rows
    from different moments compare as ratios when the device drifted)."""
    start = time.perf_counter()
    tgt = get_target(target)
    local = tgt.kind == "local"
    with tempfile.TemporaryDirectory(prefix="latvit-bench-") as workdir:
        record, built, prepared = export_row(
            model, runtime, batch, img_size, threads, deploy, tome_r, sparsity, seed, Path(workdir), target=tgt
        )
        if record["status"] == STATUS_EXPORT_ONLY:
            return record | {"seconds": time.perf_counter() - start}
        job = TimingJob(
            built.artifact,
            threads,
            Protocol(warmup, iters, min_seconds, max_seconds, sessions=sessions),
            built.runner,
            reference=reference,
        )
        measured = result_record(tgt, tgt.time_settled(job), job)  # timing, the device's identity and conditions
    return timed_record(record, measured, prepared.flops, prepared.params, peak_gflops, local) | {
        "seconds": time.perf_counter() - start
    }


def export_row(
    model: str,
    runtime: str,
    batch: int,
    img_size: int | None,
    threads: int,
    deploy: bool,
    tome_r: int | str,
    sparsity: str | float | None,
    seed: int,
    workdir: Path,
    *,
    target: Target,
) -> tuple[dict[str, Any], BuiltArtifact, PreparedModel]:
    """The first half of a row: resolve, deploy, compress and export (`latvit.pipeline`) into `workdir`,
    checked against PyTorch where the runtime runs here. Returns the record so far (status export-only where
    the runtime cannot run here and the target is this machine), the artifact and the prepared model."""
    set_threads(threads)
    torch.manual_seed(seed)
    rt = get_runtime(runtime)
    prepared = prepare_model(
        model, img_size=img_size, batch=batch, deploy_model=deploy, tome=tome_r, sparsity=sparsity, seed=seed
    )
    record = (
        base_record(model, runtime, batch, prepared.img_size, threads)
        | machine_info(threads)
        | target.record_fields()
        | {
            "source": prepared.resolved.source,
            "runtime_version": rt.version(),
            "deployed": prepared.deployed,
            "tome_r": prepared.tome_label,
            "sparsity": prepared.sparsity,
            "params_m": prepared.params / 1e6,
            "gflops": prepared.flops / 1e9,
            "compression_abs_diff": prepared.compression_abs_diff,
        }
    )
    local = target.kind == "local"
    runs_here = not rt.missing() and not rt.cannot_run()
    built = build_artifact(
        prepared.model,
        prepared.example,
        rt,
        workdir,
        threads=threads,
        expected=prepared.logits if runs_here else None,
        load=runs_here,
    )
    record["export_abs_diff"] = built.export_abs_diff
    if local and not runs_here:  # e.g. CoreML off macOS: the export works, no latency here
        record |= {"status": STATUS_EXPORT_ONLY, "error": rt.cannot_run()}
    return record, built, prepared


def export_for_targets(
    model: str,
    runtime: str,
    batch: int,
    img_size: int | None,
    threads: int,
    deploy: bool,
    tome_r: int | str,
    sparsity: str | float | None,
    workdir: str,
    seed: int = 0,
) -> dict[str, Any]:
    """`export_row` in a child process for a bench on several targets: the artifact stays in `workdir` for
    the targets to time. JSON-ready: the record so far, the artifact's path and input shape, FLOPs, params."""
    Path(workdir).mkdir(parents=True, exist_ok=True)
    record, built, prepared = export_row(
        model, runtime, batch, img_size, threads, deploy, tome_r, sparsity, seed, Path(workdir), target=LOCAL
    )
    path = built.artifact.path
    return {
        "record": record,
        "path": str(path) if path else None,
        "shape": list(built.artifact.input_shape),
        "flops": prepared.flops,
        "params": prepared.params,
    }


def timed_record(
    record: dict[str, Any], measured: dict[str, Any], flops: float, params: int, peak_gflops: float | None, local: bool
) -> dict[str, Any]:
    """The second half of a row: the target's answer (`latvit.targets.result_record`) into the record, and
    the derived columns. A remote row describes the device (cpu, cores, ...), not this machine."""
    device = {
        key: measured["target_fingerprint"][key]
        for key in ("cpu", "cores", "platform", "python")
        if key in measured.get("target_fingerprint", {})
    }
    record = record | device | measured | {"status": STATUS_OK}
    if record["median_ms"] is None:  # a device runner that reported no median: nothing to derive from
        return record
    return finish_record(record, flops, params, peak_gflops if local else None)


def base_record(model: str, runtime: str, batch: int, img_size: int | None, threads: int) -> dict[str, Any]:
    top1 = PUBLISHED_TOP1.get(model)
    record = dict.fromkeys(RECORD_FIELDS)
    return record | {
        "model": model,
        "runtime": runtime,
        "batch": batch,
        "img_size": img_size,
        "threads": threads,
        "top1": top1[0] if top1 else None,
        "top1_source": top1[1] if top1 else None,
        "error": "",
        "target": DEFAULT_TARGET,
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def unmeasured_record(req: BenchRequest, model: str, runtime: str, threads: int, status: str, error: str) -> dict:
    """The row of a pair that has no measurement: its runtime is unavailable, or exporting or timing failed."""
    record = base_record(model, runtime, req.batch, req.img_size, threads)
    return record | {"model": model_label(model), "status": status, "error": error, "target": req.target}


def finish_record(record: dict, flops: float, params: int, peak_gflops: float | None) -> dict:
    """Derived columns: density (GFLOP/s), its share of the measured GEMM peak, latency-based MES."""
    seconds = record["median_ms"] / 1e3
    density = flops / seconds / 1e9
    per_image_ms = record["median_ms"] / record["batch"]
    return record | {
        "gflops_per_s": density,
        "peak_gflops": peak_gflops,
        "pct_peak": 100 * density / peak_gflops if peak_gflops else None,
        "mes": mes({"params": params, "latency_ms": per_image_ms}),
    }


def upgrade_record(record: dict) -> dict:
    """A record written by an older latvit, in today's fields: `max_abs_diff` (artifact against the model as
    built) becomes `export_abs_diff`; fields it lacks are None."""
    record = dict(record)
    if "max_abs_diff" in record and "export_abs_diff" not in record:
        record["export_abs_diff"] = record.pop("max_abs_diff")
    return dict.fromkeys(RECORD_FIELDS) | record


# -- the roofline: the best GEMM this machine reaches in the run ------------------------------------------
class GemmModel(nn.Module):
    """`x @ w` for a square GEMM: what a runtime's own GEMM engine reaches, exported like any model."""

    def __init__(self, size: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(size, size) / size**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, N) @ (N, N)
        return x @ self.w


def runtime_gemm_gflops(runtime: str, threads: int, size: int = 1024, seconds: float = 1.0) -> float:
    """The best GFLOP/s of a square `size` GEMM exported to and run by `runtime` with `threads` threads."""
    set_threads(threads)
    rt = get_runtime(runtime)
    example = torch.randn(size, size)
    with tempfile.TemporaryDirectory(prefix="latvit-gemm-") as workdir:
        run = rt.prepare(GemmModel(size).eval(), example, threads, Path(workdir))
        x = example.numpy()
        timing = measure_latency(lambda: run(x), warmup=3, iters=5, min_seconds=seconds)
    return 2 * size**3 / (timing.min_ms / 1e3) / 1e9


@dataclass
class Roofline:
    """The machine's practical fp32 peak over a run: the best of every probe (torch's GEMM at the start and
    between rows, each runtime's own GEMM) and of every model measured, since a busy second during one
    probe must not set the ceiling for the whole table (and a model can never exceed the peak)."""

    gflops: float = 0.0
    engine: str = ""
    at: str = ""

    def offer(self, gflops: float | None, engine: str) -> None:
        if gflops and gflops > self.gflops:
            self.gflops, self.engine = float(gflops), engine
            self.at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def apply(self, record: dict) -> dict:
        """`record` with its `% peak` against this roofline."""
        if record.get("status") != STATUS_OK or not self.gflops:
            return record
        return record | {
            "peak_gflops": self.gflops,
            "peak_engine": self.engine,
            "peak_at": self.at,
            "pct_peak": 100 * record["gflops_per_s"] / self.gflops,
        }


# -- the whole bench, in the parent ---------------------------------------------------------------------
def available_models(models: list[str]) -> list[str]:
    """Drop seed models that are not registered (yet) from a default list, e.g. trtvit_a."""
    return [m for m in models if m.startswith("timm:") or m in MODELS or "/" in m or m.endswith(".json")]


@dataclass
class BenchRequest:
    models: list[str] = field(
        default_factory=lambda: available_models(SEED_MODELS) + ["timm:resnet50", "timm:mobilenetv2_100"]
    )
    runtimes: list[str] = field(default_factory=lambda: list(DEFAULT_RUNTIMES))
    batch: int = 1
    img_size: int | None = None
    threads: int | None = None  # default: all cores
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    max_seconds: float = 30.0  # a row's timing stops here even before its median is known to +-2% (then noisy)
    deploy: bool = True
    tome_r: int | str = 0  # token merging: R per transformer layer (0: none), 'RxL', 'keepF', 'R+keepF' (parse_tome)
    sparsity: str | float | None = None  # pruned weights: a fraction (global magnitude) or "2:4"
    timeout: float = 300.0  # per row, seconds
    target: str = DEFAULT_TARGET  # where the artifacts are timed (latvit.targets)
    reference: bool = True  # time the reference workload beside every row (ref_ms: the device's speed then)
    sessions: int = NETWORK_SESSIONS  # loads of each artifact timed in turn (Protocol.sessions)


def check_request(req: BenchRequest) -> None:
    """Reject bad input with one clear line before any measurement starts."""
    if req.batch < 1:
        raise LatvitError(f"batch must be >= 1, got {req.batch}")
    if req.img_size is not None and req.img_size < 1:
        raise LatvitError(f"image size must be >= 1, got {req.img_size}")
    if req.threads is not None and req.threads < 1:
        raise LatvitError(f"threads must be >= 1, got {req.threads}")
    check_compression(req.tome_r, req.sparsity)  # one line naming the expected forms
    if req.iters < 1 or req.warmup < 0 or req.min_seconds < 0 or req.timeout <= 0 or req.sessions < 1:
        raise LatvitError("iters must be >= 1, warmup >= 0, min-seconds >= 0, timeout > 0 and sessions >= 1")
    if not req.min_seconds <= req.max_seconds < req.timeout:
        raise LatvitError(
            f"max-seconds must be at least min-seconds ({req.min_seconds:g}) and below the row timeout "
            f"({req.timeout:g}), got {req.max_seconds:g}"
        )
    if not req.models or not req.runtimes:
        raise LatvitError("give at least one model and one runtime")
    for entry in req.target.split(","):  # several: `bench_on_targets`
        get_target(entry.strip())
    for name in req.runtimes:
        get_runtime(name)
    for ref in req.models:
        check_model_ref(ref, req.img_size)


def run_bench(req: BenchRequest, on_row: Callable[[dict], None] | None = None, progress: bool = True) -> list[dict]:
    """Measure every (model, runtime) pair of `req`; returns the records in request order, each with its
    `% peak` against the run's roofline (see `Roofline`).

    on_row: called with each record as soon as it is measured (for live tables and partial saves); its
        `% peak` is against the roofline known at that moment.
    """
    check_request(req)
    threads = req.threads or default_threads()
    if "," in req.target:
        return bench_on_targets(req, threads, on_row, progress)
    local = get_target(req.target).kind == "local"
    roofline = Roofline()
    if local:  # the peak of the machine the rows run on; a remote target's own is not probed (yet)
        roofline.offer(
            _probe("latvit.targets.protocol:gemm_peak_gflops", {"threads": threads}, threads),
            f"torch.mm 1024 fp32, {threads} threads",
        )
    pairs = [(m, r) for m in req.models for r in req.runtimes]
    records: list[dict] = []
    probed: set[str] = set()
    with progress_bar(progress, len(pairs), "bench") as advance:
        for model, runtime in pairs:
            advance(f"{model_label(model)} on {runtime}")
            rt = get_runtime(runtime)
            reason = rt.missing() or (None if rt.export_only_where_it_cannot_run else rt.cannot_run())
            if reason:
                record = unmeasured_record(req, model, runtime, threads, STATUS_UNAVAILABLE, reason)
            else:
                if local and rt.suffix and runtime not in probed and not rt.cannot_run():
                    probed.add(runtime)  # the runtime's own GEMM engine may beat torch's (oneDNN vs MLAS ...)
                    roofline.offer(
                        _probe(
                            "latvit.latency.bench:runtime_gemm_gflops",
                            {"runtime": runtime, "threads": threads},
                            threads,
                        ),
                        f"{runtime} GEMM 1024 fp32, {threads} threads",
                    )
                kwargs = {
                    "model": model,
                    "runtime": runtime,
                    "batch": req.batch,
                    "img_size": req.img_size,
                    "threads": threads,
                    "warmup": req.warmup,
                    "iters": req.iters,
                    "min_seconds": req.min_seconds,
                    "max_seconds": req.max_seconds,
                    "deploy": req.deploy,
                    "tome_r": req.tome_r,
                    "sparsity": req.sparsity,
                    "target": req.target,
                    "reference": req.reference,
                    "sessions": req.sessions,
                }
                result = run_isolated("latvit.latency.bench:measure_row", kwargs, timeout=req.timeout, threads=threads)
                record = (
                    result.value
                    if result.ok
                    else unmeasured_record(req, model, runtime, threads, STATUS_FAILED, result.error)
                    | {"seconds": result.seconds}
                )
            record["model"] = model_label(model)
            if local and record["status"] == STATUS_OK:
                roofline.offer(record["gflops_per_s"], f"model {record['model']} on {runtime}")
            records.append(roofline.apply(record))
            if on_row:
                on_row(records[-1])
    if local and records:  # once more at the end: the best of the run sets every row's % peak
        roofline.offer(
            _probe("latvit.targets.protocol:gemm_peak_gflops", {"threads": threads}, threads),
            f"torch.mm 1024 fp32, {threads} threads",
        )
    return [roofline.apply(r) for r in records]


def bench_on_targets(
    req: BenchRequest, threads: int, on_row: Callable[[dict], None] | None = None, progress: bool = True
) -> list[dict]:
    """`run_bench` on several targets (`--target pi5,jetson,tag:phones`): each (model, runtime) artifact is
    made once here, in its own child process, then every target times every artifact, the targets at the
    same time and each one job at a time (`latvit.targets.schedule.run_on_targets`). Records come per
    target, in request order; rows have no % peak (a remote device's peak is not probed)."""
    pairs = [(m, r) for m in req.models for r in req.runtimes]
    records: list[dict] = []
    jobs: list[TimingJob] = []
    exported: list[dict] = []
    protocol = Protocol(req.warmup, req.iters, req.min_seconds, req.max_seconds, sessions=req.sessions)
    with (
        tempfile.TemporaryDirectory(prefix="latvit-bench-") as workdir,
        progress_bar(progress, len(pairs) + 1, "bench") as advance,
    ):
        for i, (model, runtime) in enumerate(pairs):
            advance(f"export {model_label(model)} for {runtime}")
            rt = get_runtime(runtime)
            if rt.missing():
                records.append(unmeasured_record(req, model, runtime, threads, STATUS_UNAVAILABLE, rt.missing()))
                continue
            kwargs = {
                "model": model,
                "runtime": runtime,
                "batch": req.batch,
                "img_size": req.img_size,
                "threads": threads,
                "deploy": req.deploy,
                "tome_r": req.tome_r,
                "sparsity": req.sparsity,
                "workdir": str(Path(workdir) / str(i)),
            }
            result = run_isolated(
                "latvit.latency.bench:export_for_targets", kwargs, timeout=req.timeout, threads=threads
            )
            if not result.ok:
                records.append(unmeasured_record(req, model, runtime, threads, STATUS_FAILED, result.error))
                continue
            value = result.value
            value["record"]["model"] = model_label(model)
            exported.append(value)
            path = Path(value["path"]) if value["path"] else None
            jobs.append(
                TimingJob(Artifact(runtime, path, tuple(value["shape"])), threads, protocol, reference=req.reference)
            )
        advance(f"time {len(jobs)} artifacts on {req.target}")
        outcomes = run_on_targets(jobs, req.target) if jobs else []
        for outcome in outcomes:
            made = exported[outcome.job]
            if outcome.ok:
                record = timed_record(made["record"], outcome.record, made["flops"], made["params"], None, False)
            else:
                record = made["record"] | {"status": STATUS_FAILED, "error": outcome.error, "target": outcome.target}
            records.append(record)
            if on_row:
                on_row(record)
        advance(None)
    return records


def _probe(target: str, kwargs: dict, threads: int) -> float | None:
    """A GFLOP/s probe in its own process (a runtime that crashes costs only the probe)."""
    probe = run_isolated(target, kwargs, timeout=180, threads=threads)
    return probe.value if probe.ok else None


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
    console = console or Console(width=max(Console().width, 150))
    console.print(bench_table(records))
    first = next((r for r in records if r.get("cpu")), {})
    if first.get("peak_gflops"):
        console.print(
            f"peak: {first['peak_gflops']:.1f} GFLOP/s, the best of this run ({first.get('peak_engine') or 'GEMM probe'}); "
            "MES = 100 / sqrt(params M x latency ms); export |diff|: the artifact against its PyTorch "
            "model, compress |diff|: merging/pruning against the model as built"
        )


def median_cell(record: dict) -> str:
    """The median with its confidence interval, "12.31 ±1.4%", and "noisy" where the stopping rule's time cap
    came before the interval was narrow enough (records from before the rule show the bare median)."""
    text = f"{record['median_ms']:.2f}"
    if record.get("ci_rel") is not None:
        text += f" ±{100 * record['ci_rel']:.1f}%"
    return text + (" [yellow]noisy[/]" if record.get("noisy") else "")


def bench_table(records: list[dict]):
    """The rich table `latvit bench` prints: one line per record, failures with their reason."""
    first = next((r for r in records if r.get("cpu")), {})
    title = f"latvit bench: {first.get('cpu', '')}, {first.get('threads', '')} threads, batch {records[0]['batch']}"
    if first.get("tome_r") not in (None, 0, "0"):
        title += f", token merging {first['tome_r']}"
    if first.get("sparsity") is not None:  # top-1 stays the published model's: these models are changed
        title += f", sparsity {first['sparsity']}"
    table = Table(title=title)
    for col in ("model", "runtime", "size"):
        table.add_column(col, no_wrap=True)
    for col in (
        "params M",
        "GFLOPs",
        "median ms",
        "p90 ms",
        "CV %",
        "GFLOP/s",
        "% peak",
        "export |diff|",
        "compress |diff|",
        "top-1",
        "MES",
    ):
        table.add_column(col, justify="right")
    for r in records:
        if r["status"] != STATUS_OK:
            table.add_row(
                r["model"],
                r["runtime"],
                _fmt(r.get("img_size"), "d"),
                _fmt(r.get("params_m"), ".2f"),
                _fmt(r.get("gflops"), ".2f"),
                f"[yellow]{r['status']}[/]: {r['error']}",
                *[""] * 6,
                _fmt(r.get("top1"), ".1f"),
                "",
            )
            continue
        table.add_row(
            r["model"],
            r["runtime"],
            str(r["img_size"]),
            f"{r['params_m']:.2f}",
            f"{r['gflops']:.2f}",
            median_cell(r),
            f"{r['p90_ms']:.2f}",
            f"{100 * r['cv']:.1f}",
            f"{r['gflops_per_s']:.1f}",
            _fmt(r["pct_peak"], ".0f"),
            _fmt(r["export_abs_diff"], ".1e"),
            _fmt(r["compression_abs_diff"], ".1e"),
            _fmt(r["top1"], ".1f"),
            f"{r['mes']:.1f}",
        )
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

    rows = [r for r in records if r["status"] == STATUS_OK and r.get("top1") is not None]
    if not rows:
        raise LatvitError("nothing to plot: no measured row has a published top-1 (see latvit/models/published.py)")
    markers = "osD^v<>P*X"
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for k, runtime in enumerate(dict.fromkeys(r["runtime"] for r in rows)):
        sub = [r for r in rows if r["runtime"] == runtime]
        ax.scatter(
            [r["median_ms"] for r in sub],
            [r["top1"] for r in sub],
            marker=markers[k % len(markers)],
            s=45,
            label=runtime,
            zorder=3,
        )
        for r in sub:
            ax.annotate(r["model"], (r["median_ms"], r["top1"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto_front([(r["median_ms"], r["top1"]) for r in rows])
    pts = sorted((rows[i]["median_ms"], rows[i]["top1"]) for i in front)
    ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="gray", ls="--", lw=1, label="Pareto front")
    first = rows[0]
    ax.set_xlabel(
        f"median latency (ms), batch {first['batch']}, {first['threads']} threads, {first['cpu']}", fontsize=8
    )
    ax.set_ylabel("published ImageNet-1k top-1 (%)")
    ax.set_title("latvit bench: accuracy vs latency measured here")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
