"""The `latvit` command: one subcommand per job, each a thin layer over the Python API.

Errors a user can fix (`LatvitError`) print one line `latvit: error: ...` and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from latvit._version import __version__
from latvit.analysis.density import density_cases, density_table, measure_density, plot_density
from latvit.analysis.profile import COVERAGE_MIN, plot_profile, profile_model, profile_table
from latvit.deploy import compress, deploy
from latvit.deploy.compress import check_compression
from latvit.deploy.quantize import (
    calibration_batches,
    check_quantize_settings,
    default_int8_runtime,
    quantize,
    validation_batches,
)
from latvit.errors import LatvitError
from latvit.latency.bench import (
    DEFAULT_RUNTIMES,
    FRONTIER_MODELS,
    SEED_MODELS,
    SURVEY_BASELINES,
    BenchRequest,
    available_models,
    plot_records,
    print_table,
    records_csv,
    records_json,
)
from latvit.latency.bench import run_bench as measure_bench
from latvit.latency.int8 import compare_int8
from latvit.latency.lut import LatencyTable
from latvit.latency.lut_build import build_lut
from latvit.latency.predictor import DriftWarning, predict_latency
from latvit.latency.validation import format_report
from latvit.latency.validation import validate as validate_table
from latvit.models import create_model, list_models, model_card, save
from latvit.pipeline.export import export_model
from latvit.pipeline.resolve import check_model_ref, resolve_model
from latvit.report import bench_result, write_report
from latvit.report.markup import plotly_module
from latvit.search.run import SearchRequest, search
from latvit.targets import config as targets_config
from latvit.targets import get_target
from latvit.targets.config import load_targets, remove_target
from latvit.targets.protocol import NETWORK_SESSIONS, default_threads
from latvit.targets.ssh import SSHTarget, accept_new_host_key
from latvit.train import make_config, parse_set, read_config_file, train, validate
from latvit.train.evaluate import eval_crop_pct
from latvit.train.profiling import breakdown_table
from latvit.tune import tune_model
from latvit.utils import atomic_write_text, check_writable


def _int_at_least(minimum: int, wording: str):
    """An argparse type: an integer >= `minimum`, else argparse's one-line error with `wording`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _crop_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got '{text}'")
    return value


def _add_compression(p, what: str) -> None:
    """--tome and --sparsity: the float compressions (latvit.deploy.compress) applied to the model `what`."""
    p.add_argument(
        "--tome",
        default="0",
        metavar="R|RxL|keepF",
        help=f"token merging in the model {what}: merge R tokens in every transformer layer, or RxL: R "
        "in each of the first L layers (e.g. 26x6); keepF: merge each transformer's tokens at its "
        "entrance until the fraction F is left (e.g. keep0.25; R+keepF for both); default 0: off",
    )
    p.add_argument(
        "--sparsity",
        metavar="F|2:4",
        help=f"prune the model {what}: the fraction F of smallest weights of its convs and linears "
        "(global magnitude, e.g. 0.5), or 2:4 (two of every four); no fine-tuning (default: off)",
    )


def _check_outputs(*files, directories=()) -> None:
    """Every path a command will write, checked before its work starts (a one-line error, exit 2, instead
    of a traceback after minutes of measuring or training). `files` and `directories`: None/'' = none."""
    for path in files:
        if path:
            check_writable(path)
    for path in directories:
        if path:
            check_writable(path, directory=True)


def _compression_label(result: dict) -> str:
    """', tome keep0.5, sparsity 0.5' for a validate/export result that merged or pruned, else ''."""
    return "".join(f", {k} {result[k]}" for k in ("tome", "sparsity") if result.get(k) not in (None, "0"))


# -- latvit models --------------------------------------------------------------------------------------
def add_models(sub) -> None:
    p = sub.add_parser("models", help="list the model zoo: params, GFLOPs, input size, paper")
    p.add_argument("pattern", nargs="?", help="only names containing this text (or matching this glob)")
    p.add_argument("--family", help="only this family")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run_models)


def run_models(args) -> None:
    names = list_models(args.pattern, args.family)
    if not names:
        raise LatvitError(f"no model matches pattern={args.pattern!r} family={args.family!r}; run `latvit models`")
    cards = [model_card(name) for name in names]
    if args.json:
        print(json.dumps(cards, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"latvit models ({len(cards)})")
    table.add_column("model", no_wrap=True)
    table.add_column("family", no_wrap=True)
    for col in ("params (M)", "GFLOPs", "input", "top-1", "MES (size)"):
        table.add_column(col, justify="right")
    table.add_column("paper", no_wrap=True)
    for c in cards:
        table.add_row(
            c["name"],
            c["family"],
            f"{c['params_m']:.2f}",
            f"{c['gflops']:.2f}",
            str(c["img_size"]),
            "" if c["top1"] is None else f"{c['top1']:.1f}",
            f"{c['mes_params']:.1f}",
            c["paper"],
        )
    Console(width=max(Console().width, 110)).print(table)


# -- latvit bench -----------------------------------------------------------------------------------------
DEFAULT_MODELS = "seeds,timm:resnet50,timm:mobilenetv2_100"
MODEL_GROUPS = {
    "seeds": "the seed models",
    "baselines": "the survey's timm baselines",
    "frontier": "today's mobile models from timm (FastViT, RepViT, MobileNetV4, ...)",
    "zoo": "every latvit model",
}


def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure latency of models on real runtimes (the main job)",
        description="Measure models on real runtimes with one protocol: warm-up, at least --iters "
        "calls and --min-seconds, median/p90/CV, each row in its own subprocess.",
    )
    p.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        help="comma-separated latvit names, spec JSON files, saved dirs, timm:NAME, or the groups "
        + ", ".join(MODEL_GROUPS)
        + " (default: %(default)s)",
    )
    p.add_argument(
        "--runtimes",
        default=",".join(DEFAULT_RUNTIMES),
        help="comma-separated: eager, inductor, ort, openvino, executorch, litert, tensorrt, coreml (default: ort)",
    )
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--img-size", type=int, help="input size (default: each model's own)")
    p.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up calls (default 10)")
    p.add_argument("--iters", type=int, default=50, help="at least this many timed calls (default 50)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="and at least this long (default 1.0)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="then on until the median is known to +-2%%, at most this long (default 30; past it the row "
        "is marked noisy)",
    )
    p.add_argument(
        "--sessions",
        type=int,
        default=NETWORK_SESSIONS,
        help="load each artifact this many times and time the loads in turn: one load runs a few percent "
        "off another for as long as it lives (default %(default)s; 1: one load)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per row before it is killed (default 300)")
    p.add_argument("--no-deploy", action="store_true", help="measure models as built, without deploy folding")
    p.add_argument(
        "--target",
        default="local",
        help="where to time the artifacts: local (this machine, the default), a target added with "
        "`latvit target add`, tag:NAME (any free device with that tag), or several, comma-separated "
        "(timed concurrently, one job at a time per device)",
    )
    p.add_argument(
        "--no-reference",
        action="store_true",
        help="do not time the reference workload beside each row (rows then carry no ref_ms; faster)",
    )
    _add_compression(p, "measured")
    p.add_argument("--json", default="latvit-bench.json", help="records as JSON (default %(default)s; '' for none)")
    p.add_argument("--csv", help="records as CSV")
    p.add_argument(
        "--plot",
        default="latvit-bench.png",
        help="PNG of published top-1 vs latency (default %(default)s; '' for none)",
    )
    p.add_argument("--report", metavar="HTML", help="also write the interactive report of this run (`latvit report`)")
    p.set_defaults(run=run_bench)


def expand_models(text: str, img_size: int | None = None) -> list[str]:
    """'seeds,timm:resnet50' -> model references, groups expanded (without the members that cannot run at
    `img_size`), order kept, duplicates dropped."""
    groups = {
        "seeds": available_models(SEED_MODELS),
        "baselines": SURVEY_BASELINES,
        "frontier": FRONTIER_MODELS,
        "zoo": list_models(),
    }
    parts = [part.strip() for part in text.split(",") if part.strip()]
    refs = [
        ref for part in parts for ref in (runnable_members(part, groups[part], img_size) if part in groups else [part])
    ]
    return list(dict.fromkeys(refs))


def runnable_members(group: str, refs: list[str], img_size: int | None) -> list[str]:
    """The members of a model group that can run at `img_size`; each one skipped is printed with its reason.
    (A model named on its own is never skipped: it fails with its reason before any measurement.)"""
    kept = []
    for ref in refs:
        try:
            check_model_ref(ref, img_size)
            if img_size and ref.startswith("timm:"):  # timm models show whether they take a size by building
                resolve_model(ref, img_size)
            kept.append(ref)
        except LatvitError as e:
            print(f"skipped {ref} from {group}: {e}", file=sys.stderr)
    return kept


def run_bench(args) -> None:
    from rich.console import Console

    _check_outputs(args.json, args.csv, args.plot, args.report)  # before the first measurement, not after it
    if args.report:
        plotly_module()  # a missing extra says so now, not after the run

    req = BenchRequest(
        models=expand_models(args.models, args.img_size),
        runtimes=[r.strip() for r in args.runtimes.split(",") if r.strip()],
        batch=args.batch,
        img_size=args.img_size,
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        deploy=not args.no_deploy,
        tome_r=args.tome,
        sparsity=args.sparsity,
        timeout=args.timeout,
        target=args.target,
        reference=not args.no_reference,
        sessions=args.sessions,
    )
    console = Console(stderr=True)
    measured: list[dict] = []

    def on_row(record: dict) -> None:  # save as we go: a killed bench keeps every finished row
        measured.append(record)
        status = (
            f"{record['median_ms']:.2f} ms" if record["status"] == "ok" else f"{record['status']}: {record['error']}"
        )
        console.print(f"  {record['model']} on {record['runtime']}: {status}")
        if args.json:
            atomic_write_text(args.json, records_json(measured))

    records = measure_bench(req, on_row=on_row)
    print_table(records)
    if args.csv:
        atomic_write_text(args.csv, records_csv(records))
    if args.plot and any(r["status"] == "ok" and r.get("top1") is not None for r in records):
        plot_records(records, args.plot)
    if args.report:
        write_report([bench_result(records, args.json or "this run")], args.report)
    written = [p for p in (args.json, args.csv, args.plot, args.report) if p]
    console.print(f"wrote {', '.join(written)}" if written else "")
    if all(r["status"] == "failed" for r in records):
        raise LatvitError("every row failed; see the reasons above")


# -- latvit train ---------------------------------------------------------------------------------------
def add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (the seeds' recipe; resumable; DDP under torchrun)",
        description="Train MODEL on --data. Settings come from the defaults, then --config FILE "
        "(YAML/JSON), then the flags and --set KEY=VALUE; see docs/train.md.",
    )
    p.add_argument("model", nargs="?", help="model name, spec JSON or saved model dir (or `model:` in --config)")
    p.add_argument("--data", help="fashion-mnist, synthetic, an ImageFolder root (train/ val/) or an idx directory")
    p.add_argument("--config", help="YAML or JSON file of config keys (e.g. configs/fashion_mnist.yaml)")
    p.add_argument("--epochs", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, help="per process, at --img-size")
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--init",
        help="start from these weights (checkpoint or saved model dir), e.g. to fine-tune "
        "MODEL = that model's spec with another activation",
    )
    p.add_argument("--teacher", help="distil from this latvit model or timm:NAME (hard distillation)")
    p.add_argument("--teacher-checkpoint", help="the teacher's trained weights")
    p.add_argument("--output", help="run directory (default runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key (repeatable)")
    p.add_argument(
        "--profile-steps",
        type=_positive_int,
        metavar="N",
        help="instead of training: profile N steps after a short warm-up and print where a step's time "
        "goes (data, forward, backward, optimizer, EMA, ...); writes nothing",
    )
    p.set_defaults(run=run_train)


def run_train(args) -> None:
    from pathlib import Path

    values = read_config_file(args.config) if args.config else {}
    flags = dict(
        model=args.model,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
        lr=args.lr,
        seed=args.seed,
        init=args.init,
        teacher=args.teacher,
        teacher_checkpoint=args.teacher_checkpoint,
        output=args.output,
    )
    flags.update(parse_set(args.set))
    if args.resume:  # the run's saved config underneath, so `--resume --output DIR` is enough
        output = flags["output"] or values.get("output")
        if output and (Path(output) / "config.yaml").is_file():
            values = {**read_config_file(Path(output) / "config.yaml"), **values}
    result = train(make_config(values, **flags), resume=args.resume, profile_steps=args.profile_steps or 0)
    if result.get("rank", 0) != 0:  # under torchrun, rank 0 speaks for the run
        return
    if args.profile_steps:
        from rich.console import Console

        Console().print(breakdown_table(result))
    elif result["final"] is not None:
        f = result["final"]
        print(
            json.dumps(
                {
                    "output": result["output"],
                    "epochs": f["epoch"],
                    "val_top1": round(f["val_top1"], 3),
                    "val_top5": round(f["val_top5"], 3),
                    "val_loss": round(f["val_loss"], 5),
                    "best_top1": round(result["best_top1"], 3),
                }
            )
        )


# -- latvit validate ------------------------------------------------------------------------------------
def add_validate(sub) -> None:
    p = sub.add_parser("validate", help="top-1, top-5, loss and images/s of a model on a dataset")
    p.add_argument("model", help="model name, spec JSON, saved model dir (e.g. runs/RUN/best) or timm:NAME")
    p.add_argument("--data", required=True, help="fashion-mnist, synthetic, an ImageFolder root or an idx directory")
    p.add_argument("--checkpoint", help="training checkpoint (last.pt: its EMA weights) or model weights")
    p.add_argument("--img-size", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--workers", type=_non_negative_int, default=2, help="data-loading processes")
    p.add_argument("--subset", type=_positive_int, help="only the first N validation images")
    p.add_argument(
        "--crop-pct",
        type=_crop_fraction,
        help="resize to img_size / crop_pct, centre-crop (default: the run's, else 0.875)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_non_negative_int, default=0, help="torch CPU threads (default: torch's)")
    _add_compression(p, "evaluated")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    p.set_defaults(run=run_validate)


def run_validate(args) -> None:
    _check_outputs(args.json)
    result = validate(
        args.model,
        args.data,
        checkpoint=args.checkpoint,
        img_size=args.img_size,
        batch_size=args.batch_size,
        num_workers=args.workers,
        subset=args.subset,
        crop_pct=args.crop_pct,
        device=args.device,
        threads=args.threads,
        tome=args.tome,
        sparsity=args.sparsity,
    )
    if args.json:
        from pathlib import Path

        atomic_write_text(Path(args.json), json.dumps(result, indent=1) + "\n")
    changed = _compression_label(result)
    print(
        f"{result['model']}{changed} on {result['data']} ({result['images']} images at {result['img_size']}px): "
        f"top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  loss {result['loss']:.4f}  "
        f"{result['images_per_sec']:.0f} images/s"
    )


# -- latvit profile / latvit density ----------------------------------------------------------------------
def add_profile(sub) -> None:
    p = sub.add_parser("profile", help="per-op latency breakdown by block and category on one runtime")
    p.add_argument("model", help="model name, spec JSON file or saved model directory")
    p.add_argument("--runtime", default="ort", help="eager, ort, openvino, executorch or litert (default: ort)")
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's)")
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    p.add_argument("--iters", type=_positive_int, default=20, help="profiled inferences (default: 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=5, help="untimed warm-up inferences (default: 5)")
    p.add_argument("--top", type=_positive_int, default=12, help="slowest ops to list (default: 12)")
    p.add_argument("--json", metavar="PATH", help="write the full profile as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a stacked-bar PNG (per block, by category)")
    p.add_argument("--no-deploy", action="store_true", help="profile the model as built, without deploy folding")
    p.add_argument(
        "--target",
        default="local",
        help="where to profile (default: local, every runtime); an SSH device profiles ort (its agent sends "
        "ONNX Runtime's per-node events back)",
    )
    p.set_defaults(run=run_profile)


def run_profile(args) -> None:
    from rich.console import Console

    _check_outputs(args.json, args.plot)
    prof = profile_model(
        args.model,
        args.runtime,
        img_size=args.img_size,
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        deploy=not args.no_deploy,
        target=args.target,
    )
    Console(width=max(Console().width, 120)).print(profile_table(prof, top=args.top))
    if prof.coverage < COVERAGE_MIN:
        print(
            f"warning: ops explain only {100 * prof.coverage:.1f}% of the end-to-end latency "
            f"(< {100 * COVERAGE_MIN:.0f}%); the rest is runtime overhead",
            file=sys.stderr,
        )
    if args.json:
        prof.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_profile(prof, args.plot)
        print(f"wrote {args.plot}")


def add_density(sub) -> None:
    p = sub.add_parser("density", help="computational density (GFLOP/s, params/s) per block type and resolution")
    p.add_argument("--runtime", default="ort", help="runtime to measure on (default: ort)")
    p.add_argument("--kinds", help="comma-separated block kinds (default: every block type of the table)")
    p.add_argument(
        "--resolutions", default="56,28,14,7", help="comma-separated input resolutions (default: 56,28,14,7)"
    )
    p.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    p.add_argument("--iters", type=_positive_int, default=20, help="timed inferences per block (default: 20)")
    p.add_argument(
        "--statistic",
        choices=("median", "min"),
        default="median",
        help="latency statistic density uses (min is robust on a shared machine; default: median)",
    )
    p.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", metavar="PATH", help="write GFLOP/s and params/s against resolution as PNG")
    p.add_argument(
        "--target",
        default="local",
        help="where to time the blocks: local (the default) or a target added with `latvit target add`",
    )
    p.set_defaults(run=run_density)


def run_density(args) -> None:
    from rich.console import Console

    _check_outputs(args.json, args.plot)
    try:
        resolutions = [int(r) for r in args.resolutions.split(",") if r.strip()]
    except ValueError:
        raise LatvitError(f"--resolutions must be comma-separated integers, got '{args.resolutions}'") from None
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()] if args.kinds else None
    cases = density_cases(kinds, resolutions)
    report = measure_density(
        cases, args.runtime, threads=args.threads, iters=args.iters, statistic=args.statistic, target=args.target
    )
    Console(width=max(Console().width, 140)).print(density_table(report))
    for row in report.rows:
        if row["error"]:
            print(f"warning: {row['label']} at {row['resolution']}: {row['error']}", file=sys.stderr)
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        plot_density(report, args.plot)
        print(f"wrote {args.plot}")


# -- latvit lut -----------------------------------------------------------------------------------------
def add_lut(sub) -> None:
    p = sub.add_parser(
        "lut",
        help="latency lookup tables: build on this device, predict, validate",
        description="Latency lookup tables: every block of a search space measured in isolation on "
        "this device and runtime, a predictor calibrated end to end, and its validation.",
    )
    lut_sub = p.add_subparsers(dest="lut_command", metavar="build|predict|validate")
    b = lut_sub.add_parser("build", help="measure every distinct block of a space (resumable)")
    b.add_argument(
        "--space",
        required=True,
        help="efficientformer, efficientformerv2, mobilevit, ... (latvit.search.SPACES) or zoo",
    )
    b.add_argument("--runtime", default="ort", help="runtime to measure on (default: ort)")
    b.add_argument("--img-size", type=_positive_int, help="input size (default: the space's; zoo: each model's)")
    b.add_argument("--threads", type=_positive_int, help="CPU threads (default: all cores)")
    b.add_argument(
        "--calibrate",
        type=_non_negative_int,
        help="networks measured end to end to fit the predictor (default: 20 for a search space, 10 for the "
        "zoo; 0 = plain sums)",
    )
    b.add_argument(
        "--statistic",
        choices=("median", "min"),
        default="median",
        help="what the predictor adds up: median (default) or min (robust on a shared machine)",
    )
    b.add_argument("--no-deploy", action="store_true", help="measure modules as built, without deploy folding")
    b.add_argument("--force", action="store_true", help="discard an --out file built under other settings")
    b.add_argument(
        "--no-retime",
        action="store_true",
        help="do not time again the rows whose reference ran > 15%% slower than the build's fastest",
    )
    b.add_argument("--out", default="lut.json", help="table file (default: lut.json); rerun to resume")
    b.add_argument(
        "--target",
        default="local",
        help="where to time the blocks: local (the default) or a target added "
        "with `latvit target add`; the table then predicts only for it",
    )
    b.set_defaults(run=run_lut_build)
    q = lut_sub.add_parser("predict", help="predicted latency of a model or spec from a table")
    q.add_argument("model", nargs="+", help="model names, spec JSON files or saved model directories")
    q.add_argument("--lut", required=True, help="table built by `latvit lut build`")
    q.add_argument("--img-size", type=_positive_int, help="input size (default: the spec's)")
    q.add_argument("--force", action="store_true", help="use a table from another device or runtime version")
    q.add_argument(
        "--at-build",
        action="store_true",
        help="predict at the device's speed when the table was built (default: measure the reference "
        "now and rescale for the device's drift)",
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--target", help="the target to predict for (default: the table's own); another one is refused")
    q.set_defaults(run=run_lut_predict)
    v = lut_sub.add_parser("validate", help="measure networks end to end against the predictor and a FLOPs baseline")
    v.add_argument("--lut", required=True, help="table built by `latvit lut build`")
    v.add_argument(
        "--samples", type=_non_negative_int, default=50, help="random specs of the table's space (default: 50)"
    )
    v.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    v.add_argument("--no-zoo", action="store_true", help="skip the zoo models the table covers")
    v.add_argument("--plot", metavar="PNG", help="write predicted vs measured to this PNG")
    v.add_argument("--json", metavar="PATH", help="write every measurement and the error statistics as JSON")
    v.add_argument("--force", action="store_true", help="use a table from another device or runtime version")
    v.add_argument("--target", help="where to measure (default: the target the table was built on)")
    v.set_defaults(run=run_lut_validate)
    p.set_defaults(run=lambda args: p.print_help())


def run_lut_build(args) -> None:
    _check_outputs(args.out)
    table = build_lut(
        args.space,
        args.runtime,
        args.out,
        img_size=args.img_size,
        threads=args.threads,
        deploy=not args.no_deploy,
        calibrate=args.calibrate,
        statistic=args.statistic,
        force=args.force,
        target=args.target,
        retime=not args.no_retime,
    )
    print(table.describe())
    ref = table.meta.get("reference")
    rows = table.rows()
    noisy, retimed = sum(bool(r.get("noisy")) for r in rows), sum(bool(r.get("retimed")) for r in rows)
    if ref:
        print(
            f"reference {ref['ref_ms']:.3f} ms at build (it moved x{ref['build_drift']:.2f} during the build; "
            f"entries are restated at that speed); {noisy} of {len(rows)} measurements noisy (time cap before "
            f"their +-2% interval); {retimed} timed again after a slowdown"
        )
    cal = table.calibration
    if cal:
        print(
            f"predictor {cal['model']} fitted on {cal['n']} networks: coef {[round(c, 4) for c in cal['coef']]}, "
            f"+-{cal['rel_sigma'] * 100:.1f}% (1 sigma, leave-one-out); plain sum MAPE {cal['sum_only_mape']:.1f}%"
        )


def run_lut_predict(args) -> None:
    import warnings

    table = LatencyTable.load(args.lut)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DriftWarning)
        preds = {
            m: predict_latency(
                m, table, img_size=args.img_size, force=args.force, now=not args.at_build, target=args.target
            )
            for m in args.model
        }
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if table.drift is not None:
        print(f"{table.drift.describe()}; predictions are for the device now", file=sys.stderr)
    if args.json:
        print(json.dumps({m: p.as_dict() for m, p in preds.items()}, indent=1))
        return
    for m, p in preds.items():
        how = f"model {p.model}" if p.calibrated else "uncalibrated: min..p90 of the entries"
        print(f"{m}: {p} ({p.items} blocks, plain sum {p.blocks_ms:.2f} ms; {how})")


def run_lut_validate(args) -> None:
    _check_outputs(args.json, args.plot)
    report = validate_table(
        args.lut,
        args.samples,
        seed=args.seed,
        zoo=not args.no_zoo,
        force=args.force,
        plot=args.plot,
        target=args.target,
    )
    if args.json:
        from pathlib import Path

        atomic_write_text(Path(args.json), json.dumps(report.as_dict(), indent=1) + "\n")
    print(format_report(report))


# -- latvit quantize --------------------------------------------------------------------------------------
def add_quantize(sub) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantization with the runtime's own tooling",
        description="Quantize a model to int8 for ort (QDQ), openvino (NNCF), executorch (XNNPACK "
        "PT2E) or litert (ai-edge-quantizer), calibrated on real images; prints fp32 vs "
        "int8 latency and agreement.",
    )
    p.add_argument("model", help="latvit name, spec JSON, saved directory or timm:NAME")
    p.add_argument(
        "--runtime",
        help="ort, openvino, executorch or litert (default: the runtime -o's suffix names, "
        "else the fastest int8 measured on this kind of CPU among those installed)",
    )
    p.add_argument("--calib", required=True, help="fashion-mnist, synthetic or an ImageFolder root")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="artifact path (.onnx, .xml, .pte or .tflite; without a suffix, the chosen runtime's is added)",
    )
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's)")
    p.add_argument(
        "--calib-images",
        type=_positive_int,
        default=128,
        help="calibration images (default 128: 64 lost 2 points on EfficientFormer-L1 at 224)",
    )
    p.add_argument(
        "--calib-crop",
        type=_crop_fraction,
        default=0.875,
        metavar="PCT",
        help="calibration images: resize to img_size / PCT, centre-crop (default 0.875, also for runs "
        "trained at another crop: measured better, docs/compression.md)",
    )
    p.add_argument(
        "--recipe",
        default="vit",
        help="vit (default: the fastest recipe measured for the runtime, "
        "docs/compression.md), all (the tool's own defaults) or "
        "transformer (openvino: float norms and adds, more accurate)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        metavar="POINTS",
        help="openvino (NNCF) and litert: accuracy control: return the most harmful int8 ops (litert: "
        "blocks) to float until top-1 "
        "on --val-images labelled training images is within POINTS of fp32's (e.g. 0.5)",
    )
    p.add_argument(
        "--val-images",
        type=_positive_int,
        default=500,
        help="labelled images of --calib's training split for --max-drop (default 500: with 300 NNCF "
        "missed a 4.5-point loss on EfficientFormer-L1, docs/compression.md)",
    )
    p.add_argument("--threads", type=_positive_int, help="threads for the comparison (default: all cores)")
    p.add_argument("--no-compare", action="store_true", help="skip the fp32-vs-int8 latency comparison")
    p.add_argument("--target", default="local", help="where the fp32-vs-int8 comparison is timed (default: local)")
    _add_compression(p, "before it is quantized (what `latvit tune` may choose)")
    p.set_defaults(run=run_quantize)


def run_quantize(args) -> None:
    check_writable(args.output)  # required: '' is an error here (a directory), not "no file"
    if args.runtime is None:
        args.runtime, why = default_int8_runtime(args.output)
        print(f"runtime: {args.runtime} ({why}); choose another with --runtime")
    check_quantize_settings(args.runtime, args.recipe, args.max_drop)  # before the model and the images
    check_compression(args.tome, args.sparsity)
    get_target(args.target)  # an unknown target says so now, not after the quantization
    resolved = resolve_model(args.model, args.img_size)
    model, size, mean, std = resolved.model, resolved.img_size, resolved.mean, resolved.std
    if resolved.is_latvit:
        model = deploy(model)
    model = compress(model, args.tome, args.sparsity)
    batches = calibration_batches(args.calib, size, mean, std, count=args.calib_images, crop_pct=args.calib_crop)
    validation = None
    if args.max_drop is not None:  # accuracy control judges top-1 as `latvit validate` does: at the run's crop
        validation = validation_batches(
            args.calib, size, mean, std, count=args.val_images, crop_pct=eval_crop_pct(args.model)
        )
    path = quantize(
        model,
        args.runtime,
        batches,
        args.output,
        recipe=args.recipe,
        max_drop=args.max_drop,
        validation=validation,
        log=print,
    )
    print(f"wrote {path}")
    if not args.no_compare:
        r = compare_int8(model, args.runtime, path, batches[:16], args.threads or default_threads(), target=args.target)
        print(
            f"{args.runtime}: fp32 {r['fp32_ms']:.2f} ms, int8 {r['int8_ms']:.2f} ms (x{r['speedup']:.2f}); "
            f"top-1 agreement {100 * r['top1_agreement']:.0f}%, max |logit diff| {r['max_abs_diff']:.3g}"
        )


# -- latvit tune ------------------------------------------------------------------------------------------
def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _thread_counts(text: str) -> list[int]:
    return [_positive_int(t) for t in _names(text)]


def add_tune(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="the fastest deployable form of a model here within a top-1 budget",
        description="Try runtime x precision x token merging x threads, time each candidate "
        "interleaved with the fp32 baseline, measure top-1 on held-out images of DATA "
        "where it could win, and write the winner, tune.json and a recipe to OUT "
        "(resumable). See docs/tune.md.",
    )
    p.add_argument("model", help="latvit name, spec JSON, saved model directory or timm:NAME")
    p.add_argument(
        "--data",
        required=True,
        help="fashion-mnist, synthetic or an ImageFolder root (its val split "
        "is evaluated, its train split calibrates int8)",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        required=True,
        metavar="POINTS",
        help="top-1 points the winner may lose against the fp32 model (e.g. 0.5)",
    )
    p.add_argument("-o", "--output", required=True, help="output directory (written when the tune completes)")
    p.add_argument("--target", default="local", help="where to time (default local)")
    p.add_argument(
        "--runtimes",
        type=_names,
        help="comma-separated runtimes to try (default: all installed that run here; inductor only when named)",
    )
    p.add_argument(
        "--precisions",
        type=_names,
        help="comma-separated among fp32, bf16, int8, int8-ac (default: all this machine has)",
    )
    p.add_argument(
        "--tome", type=_names, help="comma-separated token-merging settings (default: 0,keep0.5 where the model merges)"
    )
    p.add_argument(
        "--threads", type=_thread_counts, help="comma-separated thread counts (default: 1, 2, 4, ... up to all cores)"
    )
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size of the artifacts (default 1)")
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's)")
    p.add_argument(
        "--eval-images",
        type=_positive_int,
        default=500,
        help="held-out images every candidate's top-1 is measured on (default 500)",
    )
    p.add_argument(
        "--budget-minutes", type=float, default=15.0, help="candidates not started by then are skipped (default 15)"
    )
    p.set_defaults(run=run_tune)


def run_tune(args) -> None:
    tune_model(
        args.model,
        args.data,
        args.max_drop,
        target=args.target,
        runtimes=args.runtimes,
        precisions=args.precisions,
        tomes=args.tome,
        threads=args.threads,
        batch=args.batch,
        img_size=args.img_size,
        eval_images=args.eval_images,
        budget_minutes=args.budget_minutes,
        output=args.output,
        progress=sys.stderr.isatty(),
    )


# -- latvit convert ---------------------------------------------------------------------------------------
def add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="load a timm or official checkpoint strictly and save it as a latvit model dir",
        description="Load CHECKPOINT (timm, official repository or latvit layout; .pth, .pt or "
        ".safetensors) strictly into MODEL and write OUTPUT/spec.json and "
        "OUTPUT/model.safetensors, which `latvit.create_model(OUTPUT)` and every command "
        "taking a model reload. See docs/checkpoints.md.",
    )
    p.add_argument("model", help="model name (e.g. efficientformerv2_s0, mobilevit_xxs) or spec JSON")
    p.add_argument("checkpoint", help="the checkpoint file")
    p.add_argument("output", help="directory to write")
    p.add_argument("--num-classes", type=_positive_int, default=1000, help="classifier outputs (default 1000)")
    p.add_argument("--img-size", type=_positive_int, help="build for this input size (default: the model's)")
    p.set_defaults(run=run_convert)


def run_convert(args) -> None:
    _check_outputs(directories=(args.output,))
    model = create_model(args.model, num_classes=args.num_classes, img_size=args.img_size, checkpoint=args.checkpoint)
    out = save(model, args.output)
    print(
        f"loaded {args.checkpoint} into {model.spec.name} ({model.num_classes} classes, {model.img_size}px); "
        f"wrote {out}"
    )


# -- latvit export ----------------------------------------------------------------------------------------
def add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as ONNX, OpenVINO IR, ExecuTorch, CoreML or TensorRT and check it",
        description="Export MODEL (latvit name, spec JSON, saved directory or timm:NAME) at a static "
        "input shape, check the artifact's logits against PyTorch where its runtime runs "
        "here, and write it atomically (no partial file on failure). See docs/runtimes.md.",
    )
    p.add_argument("model", help="latvit model name, spec JSON, saved model directory, or timm:NAME")
    p.add_argument("--format", required=True, metavar="FORMAT", help="onnx | openvino | executorch | coreml | tensorrt")
    p.add_argument("-o", "--output", required=True, help="artifact path (.onnx, .xml, .pte, .mlpackage, .engine)")
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the model's)")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size baked into the artifact (default 1)")
    p.add_argument("--no-deploy", action="store_true", help="export latvit models as built, without deploy folding")
    p.add_argument("--no-check", action="store_true", help="skip running the artifact against PyTorch")
    _add_compression(p, "exported")
    p.set_defaults(run=run_export)


def run_export(args) -> None:
    check_writable(args.output)  # required: '' is an error here (a directory), not "no file"
    r = export_model(
        args.model,
        args.format,
        args.output,
        img_size=args.img_size,
        batch=args.batch,
        check=not args.no_check,
        deploy=not args.no_deploy,
        tome=args.tome,
        sparsity=args.sparsity,
    )
    changed = _compression_label(r)
    against = "the merged/pruned model in PyTorch" if changed else "PyTorch"
    check = (
        f"max abs diff vs {against} {r['max_abs_diff']:.2e} (relative {r['max_rel_diff']:.2e})"
        if r["checked"]
        else f"not checked: {r['note'] or 'skipped'}"
    )
    print(
        f"wrote {r['path']} ({r['format']}{changed}, {r['bytes'] / 1e6:.1f} MB, input {r['batch']}x3x"
        f"{r['img_size']}x{r['img_size']}, {r['runtime_version']}) in {r['seconds']:.1f} s; {check}"
    )


# -- latvit search ----------------------------------------------------------------------------------------
def add_search(sub) -> None:
    p = sub.add_parser(
        "search",
        help="latency-driven architecture search (slimming, MES, NSGA-II)",
        description="Train a supernet, estimate subnets' accuracy by weight inheritance and their "
        "latency from a LUT, and search down to --target-ms.",
    )
    p.add_argument("--method", required=True, help="efficientformer (slimming), efficientformerv2 (MES) or nsga2")
    p.add_argument("--lut", required=True, help="table built by `latvit lut build` for the space to search")
    p.add_argument("--target-ms", type=float, required=True, help="latency target on the table's runtime")
    p.add_argument("--data", required=True, help="fashion-mnist, synthetic or an ImageFolder root")
    p.add_argument("--output", required=True, help="directory for spec.json, trace, Pareto front; rerun to resume")
    p.add_argument("--runtime", help="the runtime the target is for (must match the table's)")
    p.add_argument(
        "--target",
        help="the device the search is for, where its final candidates are measured "
        "(default: the target the table was built on; another one is refused)",
    )
    p.add_argument("--img-size", type=_positive_int, help="input size (default: the table's)")
    p.add_argument("--supernet-epochs", type=_positive_int, default=1, help="supernet training epochs (default 1)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--train-subset", type=_positive_int, help="train the supernet on the first N images only")
    p.add_argument("--eval-images", type=_positive_int, default=500, help="held-out images per evaluation")
    p.add_argument(
        "--bn-batches", type=_positive_int, default=8, help="batches of 32 images to re-estimate BN (default 8)"
    )
    p.add_argument("--trials", type=_positive_int, default=40, help="NSGA-II trials (default 40)")
    p.add_argument("--threads", type=_positive_int)
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="choose on predictions alone: do not measure the final candidates on the device",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="how far above the target a measured result may be, as a fraction (default 0.05); a "
        "candidate that misses by more is replaced by the next faster one",
    )
    p.add_argument(
        "--at-build",
        action="store_true",
        help="predict at the device's speed when the table was built (default: measure the reference "
        "first and rescale every prediction for the device's drift)",
    )
    p.add_argument(
        "--supernet",
        choices=("auto", "plain"),
        default="auto",
        help="auto: Gumbel MetaPath supernet (efficientformer) or sandwich-trained slimmable supernet "
        "(efficientformerv2 space); plain: the largest spec trained with drop path",
    )
    p.set_defaults(run=run_search)


def run_search(args) -> None:
    _check_outputs(directories=(args.output,))
    r = search(
        SearchRequest(
            method=args.method,
            lut=args.lut,
            target_ms=args.target_ms,
            data=args.data,
            output=args.output,
            runtime=args.runtime,
            img_size=args.img_size,
            supernet_epochs=args.supernet_epochs,
            batch_size=args.batch_size,
            train_subset=args.train_subset,
            eval_images=args.eval_images,
            bn_batches=args.bn_batches,
            trials=args.trials,
            supernet=args.supernet,
            threads=args.threads,
            measure=not args.no_measure,
            tolerance=args.tolerance,
            at_build=args.at_build,
            target=args.target,
        )
    )
    measured = f", measured {r['measured_ms']:.2f} ms" if r.get("measured_ms") else ""
    print(
        f"{r['method']} on {r['space']}: predicted {r['predicted_ms']:.2f} ms (target {r['target_ms']:g}){measured}, "
        f"inherited top-1 {r['accuracy_inherited']:.1f}%, {r['params_m']:.2f} M params; wrote {r['spec']}"
    )
    print(f"chosen: {r['selection']}; {r['selection_note']}. {r['drift']}")


# -- latvit report ----------------------------------------------------------------------------------------
def add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML page from result files (bench, profile, ...)",
        description="Build one HTML page (opens offline) from any mix of latvit results: bench JSON or "
        "CSV, profile, density, lut validate, validate and compression JSON, and search "
        "output directories. See docs/report.md.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT", help="result files and search output directories")
    p.add_argument("-o", "--output", default="latvit-report.html", help="HTML file (default %(default)s)")
    p.add_argument("--title", default="latvit report", help="page title (default %(default)s)")
    p.set_defaults(run=run_report)


def run_report(args) -> None:
    path = write_report(args.results, args.output, title=args.title)
    print(f"wrote {path} from {len(args.results)} input{'s' if len(args.results) > 1 else ''}")


# -- latvit target ----------------------------------------------------------------------------------------
def add_target(sub) -> None:
    p = sub.add_parser(
        "target",
        help="devices to measure on: add, list, check, remove (SSH, adb)",
        description="Devices every measuring command can run on with --target NAME: SSH hosts "
        "with Python (a Raspberry Pi, a Jetson, a Mac) and Android devices over adb. "
        "Stored in $XDG_CONFIG_HOME/latvit/targets.json (mode 0600; no passwords).",
    )
    t = p.add_subparsers(dest="target_command", metavar="add|list|check|remove")
    a = t.add_parser("add", help="name a device: ssh://user@host[:port] or adb://SERIAL")
    a.add_argument("name", help="the name to use with --target (letters, digits, . _ -)")
    a.add_argument("url", help="ssh://user@host[:port] (keys from your SSH agent and ~/.ssh/config) or adb://SERIAL")
    a.add_argument("--python", help="ssh: the device's Python with the runtime installed (default: python3)")
    a.add_argument("--tags", help="comma-separated tags; --target tag:NAME runs on any free device with the tag")
    a.add_argument(
        "--workdir",
        help="where latvit keeps its agent, artifacts and lock on the device (default: "
        "~/.cache/latvit-target over ssh, /data/local/tmp/latvit over adb)",
    )
    a.add_argument(
        "--runner",
        action="append",
        metavar="NAME=PATH",
        help="adb: a benchmark tool on this machine to push (benchmark_model, executor_runner, "
        "onnxruntime_perf_test); repeat for each",
    )
    a.add_argument(
        "--compute-units",
        choices=("cpu", "gpu", "ne", "all"),
        help="Mac/CoreML: the compute units to time on (default cpu)",
    )
    a.add_argument("--cooldown", type=float, metavar="S", help="pause between jobs on the device (default 2 s)")
    a.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="ssh: trust the host key the device presents now (recorded in latvit's own known_hosts)",
    )
    a.set_defaults(run=run_target_add)
    ls = t.add_parser("list", help="the configured targets")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=run_target_list)
    c = t.add_parser("check", help="reach a target: its CPU, cores, OS, runtimes, governor and free disk")
    c.add_argument("name", help="a configured target, local, or a URL")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=run_target_check)
    r = t.add_parser("remove", help="forget a target")
    r.add_argument("name")
    r.set_defaults(run=run_target_remove)
    p.set_defaults(run=lambda args: p.print_help())


def run_target_add(args) -> None:
    config = targets_config.make_config(
        args.name,
        args.url,
        python=args.python,
        tags=args.tags,
        workdir=args.workdir,
        runners=args.runner,
        compute_units=args.compute_units,
        cooldown_s=args.cooldown,
    )
    if args.accept_new_host_key:
        if config.parsed.kind != "ssh":
            raise LatvitError("--accept-new-host-key is for ssh:// targets")
        status, fingerprint = accept_new_host_key(config.url)
        print(f"host key {fingerprint}: {'already trusted' if status == 'known' else 'recorded as trusted'}")
    replaced = targets_config.add_target(config)
    print(
        f"{'updated' if replaced else 'added'} target '{config.name}' ({config.url}); check it with "
        f"`latvit target check {config.name}`"
    )


def run_target_list(args) -> None:
    targets = load_targets()
    if args.json:
        print(json.dumps({name: t.as_dict() for name, t in targets.items()}, indent=1))
        return
    if not targets:
        print("no targets yet (this machine is 'local'); add one with `latvit target add NAME ssh://user@host`")
        return
    for name, t in sorted(targets.items()):
        extra = ", ".join(
            filter(
                None,
                (
                    f"tags {','.join(t.tags)}" if t.tags else "",
                    f"python {t.python}" if t.parsed.kind == "ssh" else "",
                    f"runners {','.join(t.runners)}" if t.runners else "",
                ),
            )
        )
        print(f"{name:<16} {t.url}{'  (' + extra + ')' if extra else ''}")


def run_target_check(args) -> None:
    target = get_target(args.name)
    if isinstance(target, SSHTarget):
        target.retries = 0  # a check answers at once: reachable or not
    try:
        info = target.check()
    finally:
        target.close()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return
    free = info.get("free_bytes")
    runtimes = info.get("packages") or info.get("runners") or {}
    print(f"{info['name']} ({info['kind']}{', ' + info['url'] if info.get('url') else ''}): reachable")
    for label, value in (
        ("cpu", info.get("cpu")),
        ("board", info.get("board")),
        ("cores", info.get("cores")),
        ("os", info.get("platform")),
        ("python", info.get("python_path") or info.get("python")),
        ("runtimes", ", ".join(f"{k} {v}" for k, v in runtimes.items()) or "none found"),
        ("governor", info.get("governor")),
        ("free disk", f"{free / 1e9:.1f} GB in {info.get('workdir')}" if free is not None else None),
    ):
        if value is not None:
            print(f"  {label:<9} {value}")


def run_target_remove(args) -> None:
    removed = remove_target(args.name)
    print(f"removed target '{removed.name}' ({removed.url})")


# -- the command ------------------------------------------------------------------------------------------
SUBCOMMANDS = [
    add_models,
    add_bench,
    add_export,
    add_profile,
    add_density,
    add_lut,
    add_train,
    add_validate,
    add_search,
    add_quantize,
    add_tune,
    add_convert,
    add_report,
    add_target,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latvit", description="latency-first vision transformers")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        print(__version__)
        return 0
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        args.run(args)
    except LatvitError as e:
        print(f"latvit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latvit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
