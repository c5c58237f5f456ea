"""Build a latency lookup table for one search space and runtime, then validate the predictor end to end.

Times the build (the issue's budget: under 10 minutes for the EfficientFormer space per runtime on a
2-core CPU), measures the zoo models the table covers plus `--samples` random specs of the space, and
writes, under `--out-dir`:

    lut_<space>_<runtime>.json            the table (rerunning the script resumes it)
    validate_<space>_<runtime>.json       every measurement and the error statistics
    lut_<space>_<runtime>.png             predicted vs measured (copy it to docs/img/ for docs/benchmarks.md)
    lut_<space>_<runtime>.md              a "Latency lookup tables" section to paste into docs/benchmarks.md

Run it on a quiet machine: the table's blocks and the validation networks are measured minutes apart, so
load from other jobs in between shows up as prediction error. `--statistic min` is the robust choice on a
shared machine.

    python benchmarks/lut_validate.py [--space efficientformer] [--runtime ort] [--samples 50] [--threads N]
        [--calibrate N] [--statistic median|min] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from latvit.latency.lut_build import build_lut
from latvit.latency.validation import format_report, validate
from latvit.targets.protocol import default_threads, machine_info
from latvit.utils import atomic_write_text


def markdown(table, report, build_s: float, validate_s: float, png: Path) -> str:
    m, cal = table.meta, table.calibration or {}
    info = machine_info(m["threads"])
    lines = [
        "## Latency lookup tables",
        "",
        f"`latvit lut build --space {m['space']} --runtime {m['runtime']} --threads {m['threads']} "
        f"--statistic {m.get('statistic', 'median')}` then `latvit lut validate --samples "
        f"{sum(r['source'] == 'sample' for r in report.rows)}` "
        f"(script: `benchmarks/lut_validate.py`). Machine: {info['cpu']}, {info['cores']} cores, "
        f"{m['threads']} threads, {m['runtime_version']}, torch {m['torch_version']}, "
        f"{'deployed' if m['deploy'] else 'as built'} models, batch 1, {m.get('img_size') or 'default'} px.",
        "",
        f"- Table: {len(table.entries)} distinct items (blocks and heads) measured in isolation, "
        f"{len(table.networks)} calibration networks end to end; build wall time {build_s / 60:.1f} min "
        f"(includes ~1.5 s of ONNX export per item when the runtime is ort).",
        f"- Predictor: `{cal.get('model', 'sum')}` with coefficients {[round(c, 4) for c in cal.get('coef', [])]}, "
        f"leave-one-out sigma {cal.get('rel_sigma', 0) * 100:.1f}%; the plain sum of entries is off by "
        f"{cal.get('sum_only_mape', float('nan')):.1f}% on the calibration networks.",
        f"- Validation: {len(report.rows)} networks in {validate_s / 60:.1f} min, none used for calibration "
        f"unless marked.",
        "",
        "| method | MAPE | within +-10% | max error | worst cases |",
        "|---|---|---|---|---|",
    ]
    for key, label in (
        ("lut_predictor", "LUT predictor (calibrated)"),
        ("lut_sum_only", "LUT sum, uncalibrated"),
        ("flops_baseline", f"FLOPs baseline ({report.ms_per_gflop:.2f} ms/GFLOP, fitted on these)"),
    ):
        s = report.methods[key]
        worst = ", ".join(f"{w['name']} {w['error_pct']:+.0f}%" for w in s["worst"][:3])
        lines.append(
            f"| {label} | {s['mape']:.1f}% | {s['within_10'] * 100:.0f}% | {s['max_abs_pct']:.1f}% | {worst} |"
        )
    cover = report.methods["lut_predictor"].get("band_coverage")
    if cover is not None:
        lines += [
            "",
            f"The predictor's [low, high] band (+-2 sigma) contains the measurement for {cover * 100:.0f}% "
            "of the networks.",
        ]
    if report.skipped:
        lines += ["", "Zoo models not covered by this table: " + "; ".join(report.skipped) + "."]
    lines += ["", f"![predicted vs measured](img/{png.name})", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="efficientformer")
    ap.add_argument("--runtime", default="ort")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument("--calibrate", type=int, help="networks to fit on (default: latvit's, 20 for a space)")
    ap.add_argument("--statistic", choices=("median", "min"), default="median")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", default="benchmarks/results")
    args = ap.parse_args()

    out = Path(args.out_dir)
    stem = f"{args.space}_{args.runtime}"
    start = time.perf_counter()
    table = build_lut(
        args.space,
        args.runtime,
        out / f"lut_{stem}.json",
        threads=args.threads,
        calibrate=args.calibrate,
        statistic=args.statistic,
    )
    build_s = time.perf_counter() - start
    print(table.describe(), f"built in {build_s / 60:.1f} min")
    start = time.perf_counter()
    png = out / f"lut_{stem}.png"
    report = validate(table, args.samples, seed=args.seed, plot=png)
    validate_s = time.perf_counter() - start
    atomic_write_text(out / f"validate_{stem}.json", json.dumps(report.as_dict(), indent=1) + "\n")
    print(format_report(report))
    text = markdown(table, report, build_s, validate_s, png)
    atomic_write_text(out / f"lut_{stem}.md", text)
    print(f"\nwrote {out}/lut_{stem}.md and {png}")


if __name__ == "__main__":
    main()
