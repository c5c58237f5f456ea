"""Where the seed families stand today: the frontier preset and the seed models on ORT and OpenVINO, batch 1.

One `latvit bench` run (`latvit.latency.bench.run_bench`: every row in its own process, timm's
reparameterizable models deployed) over the seed models and `--models frontier` (FastViT, RepViT,
EfficientViT B/M, MobileNetV4, SHViT, SwiftFormer, StarNet, MobileOne, TinyViT, LeViT, EdgeNeXt, NextViT),
each with its published ImageNet-1k top-1 (latvit/models/published.py).

    python benchmarks/frontier.py --threads 2 --min-seconds 0.5

Writes the records to benchmarks/results/frontier.json after every row (a killed run keeps what it
measured), the report (`latvit report`) to benchmarks/results/frontier.html, and prints a markdown table:
per model its params, GFLOPs, top-1 and median (min) latency on each runtime, `*` where the model is on
that runtime's Pareto front (no model both faster and at least as accurate).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from latvit.errors import LatvitError
from latvit.latency.bench import (
    FRONTIER_MODELS,
    SEED_MODELS,
    BenchRequest,
    available_models,
    pareto_front,
    records_json,
    run_bench,
)
from latvit.report import bench_result, write_report
from latvit.targets.protocol import cpu_model
from latvit.utils import atomic_write_text, check_writable

RESULTS = Path(__file__).resolve().parent / "results"


def markdown(records: list[dict], runtimes: list[str]) -> str:
    """One line per model (in bench order): params, GFLOPs, top-1, median (min) ms per runtime (`*`: on that
    runtime's Pareto front by median)."""
    ok = [r for r in records if r["status"] == "ok"]
    on_front = set()
    for runtime in runtimes:
        rows = [r for r in ok if r["runtime"] == runtime and r.get("top1") is not None]
        on_front |= {(runtime, rows[i]["model"]) for i in pareto_front([(r["median_ms"], r["top1"]) for r in rows])}
    lines = [
        "| model | params M | GFLOPs | top-1 | " + " | ".join(f"{rt} ms, median (min)" for rt in runtimes) + " |",
        "|---|---:|---:|---:|" + "---:|" * len(runtimes),
    ]
    for model in dict.fromkeys(r["model"] for r in records):
        mine = {r["runtime"]: r for r in records if r["model"] == model}
        first = next((r for r in mine.values() if r.get("params_m") is not None), next(iter(mine.values())))
        cells = []
        for runtime in runtimes:
            r = mine.get(runtime)
            if r is None or r["status"] != "ok":
                cells.append(r["status"] if r else "")
            else:
                front = " *" if (runtime, model) in on_front else ""
                cells.append(f"{r['median_ms']:.1f} ({r['min_ms']:.1f}){front}")
        top1 = f"{first['top1']:.1f}" if first.get("top1") is not None else ""
        params = f"{first['params_m']:.2f}" if first.get("params_m") is not None else ""
        gflops = f"{first['gflops']:.2f}" if first.get("gflops") is not None else ""
        lines.append(f"| {model} | {params} | {gflops} | {top1} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtimes", default="ort,openvino")
    ap.add_argument("--models", help="comma-separated references (default: the seed models and the frontier preset)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per row (default 600: a shared machine)")
    ap.add_argument("--json", default=str(RESULTS / "frontier.json"))
    ap.add_argument("--report", default=str(RESULTS / "frontier.html"))
    args = ap.parse_args(argv)
    for path in (args.json, args.report):
        check_writable(path)
    models = args.models.split(",") if args.models else available_models(SEED_MODELS) + FRONTIER_MODELS
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    req = BenchRequest(
        models=models,
        runtimes=runtimes,
        batch=1,
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        min_seconds=args.min_seconds,
        timeout=args.timeout,
    )
    measured: list[dict] = []

    def on_row(record: dict) -> None:
        measured.append(record)
        atomic_write_text(Path(args.json), records_json(measured))
        ok = record["status"] == "ok"
        status = f"{record['median_ms']:.2f} ms" if ok else f"{record['status']}: {record['error']}"
        print(f"{record['model']} on {record['runtime']}: {status}", flush=True)

    records = run_bench(req, on_row=on_row)
    atomic_write_text(Path(args.json), records_json(records))  # every row's % peak against the final roofline
    write_report([bench_result(records, Path(args.json).name)], args.report, title="latvit: the frontier on this CPU")
    print(f"\n{cpu_model()}, {args.threads} threads, batch 1\n")
    print(markdown(records, runtimes))
    print(f"\nwrote {args.json} and {args.report}")
    return records


if __name__ == "__main__":
    try:
        main()
    except LatvitError as e:
        sys.exit(f"frontier.py: error: {e}")
