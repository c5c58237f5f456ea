"""Does a latency table hold on a drifting, noisy device? Build, disturb, come back, validate (issue 25).

1. builds a table (`latvit lut build`: every entry timed interleaved with the reference workload);
2. waits `--gap` minutes (default 20) while other work runs: a CPU-heavy training loop on one core (one
   torch thread) for the whole gap; meanwhile one fixed network is measured `--repeats` times spread over
   the gap, each interleaved with the reference (raw medians, and medians corrected to the table's speed
   at build: median * ref_build / ref_now), each time as one record per `--repeat-sessions` count (loads
   of the network timed in turn; default latvit's 3 and 1, back to back);
3. stops the disturbance and validates `--samples` random specs of the space plus the zoo models the
   table covers (`latvit lut validate`: at build / drift-corrected errors, within +-10%, Spearman).

Everything goes to `--out-dir` as it is measured (lut_drift_<space>_<runtime>.json, the table, the
validation JSON and PNG, and a markdown section for docs/benchmarks.md), so a killed run keeps what it had.

    python benchmarks/lut_drift.py [--space efficientformer] [--runtime ort] [--img-size 64] [--threads 1]
        [--samples 50] [--gap 20] [--repeats 10] [--repeat-sessions 3,1] [--no-disturb]
        [--out-dir benchmarks/results] [--suffix S]

`--rescore RESULT.json [--model NAME]` measures nothing: it re-fits the stored table's calibration with
today's predictor (only model NAME, e.g. `a*S+p*P+c`, when given) and scores it again on the stored
validation measurements (each row keeps the drift correction it was measured with). It then re-draws the
calibration set 40 times from all measured networks (the table's plus 0 or 10 of the validation networks)
and scores each draw's choice on the networks left out: how the model choice depends on the number of
calibration networks. Writes RESULT_rescored[_NAME].json / .md beside RESULT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from latvit.latency.lut import build_reference_ms, entry_ms, load_table, reference_field, table_statistic
from latvit.latency.lut_build import build_lut
from latvit.latency.measure import NETWORK_PROTOCOL, measure_network
from latvit.latency.predictor import (
    MODELS,
    calibrated_ms,
    choose_model,
    fit_calibration,
    predict_latency,
    spec_features,
)
from latvit.latency.validation import (
    ValidationReport,
    error_stats,
    format_report,
    prediction_fields,
    score,
    validate,
    validation_specs,
)
from latvit.models.spaces import get_space
from latvit.runtimes import runnable_runtime
from latvit.space.spec import spec_from_dict
from latvit.targets.protocol import NETWORK_SESSIONS, device_state, machine_info
from latvit.utils import atomic_write_text

# One torch thread training a small convnet on random data, forever: the issue's "CPU-heavy training job
# on one core". Killed by the parent when the gap ends.
DISTURBANCE = """
import torch, torch.nn as nn
torch.set_num_threads(1)
net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(net.parameters(), lr=0.01)
x, y = torch.randn(32, 3, 64, 64), torch.randint(0, 10, (32,))
while True:
    opt.zero_grad(); nn.functional.cross_entropy(net(x), y).backward(); opt.step()
"""


def repeated_measurements(table, spec, repeats: int, gap_s: float, log, sessions: tuple[int, ...] = (1,)) -> list[dict]:
    """Measure `spec` `repeats` times evenly over `gap_s` seconds, each interleaved with the reference: one
    record per entry of `sessions` (loads of the network timed in turn), back to back, in alternating order."""
    runtime = runnable_runtime(table.meta["runtime"])
    threads, deploy = int(table.meta["threads"]), bool(table.meta["deploy"])
    build_ref = build_reference_ms(table)
    stat, ref_field = table_statistic(table), reference_field(table)  # medians, or minima for a min table
    rows, start = [], time.time()
    for i in range(repeats):
        wake = start + i * gap_s / max(repeats, 1)
        time.sleep(max(0.0, wake - time.time()))
        for loads in sessions[::-1] if i % 2 else sessions:
            protocol = replace(NETWORK_PROTOCOL, sessions=loads)
            timing, ref = measure_network(spec, runtime, threads, deploy, protocol=protocol, reference=True)
            row = {
                "t_s": round(time.time() - start, 1),
                "sessions": loads,
                "ms": getattr(timing, stat),
                "timing": timing.as_dict(),
                "ref_ms": ref[ref_field],
                "ref_gemm_ms": ref["ref_gemm_ms"],
                "corrected_ms": getattr(timing, stat) * build_ref / ref[ref_field],
                "settle_tries": ref.get("settle_tries", 1),
                "state": device_state(),
            }
            rows.append(row)
            log(
                f"repeat {i + 1}/{repeats} ({loads} session(s)) at {row['t_s']:.0f} s: {timing} ({stat} "
                f"{row['ms']:.3f}) ref {row['ref_ms']:.3f} ms -> corrected {row['corrected_ms']:.3f} ms"
                + (f" ({row['settle_tries']} tries: a transient slowdown)" if row["settle_tries"] > 1 else "")
            )
    time.sleep(max(0.0, start + gap_s - time.time()))
    return rows


def repeats_summary(rows: list[dict]) -> dict:
    """Spread of the raw and corrected repeats, per session count (`by_sessions`); `raw` and `corrected` are
    those of latvit's default count (or of the only one, for runs before sessions)."""
    counts = sorted({r.get("sessions", 1) for r in rows})
    by = {
        str(n): {
            "raw": spread([r["ms"] for r in rows if r.get("sessions", 1) == n]),
            "corrected": spread([r["corrected_ms"] for r in rows if r.get("sessions", 1) == n]),
        }
        for n in counts
    }
    main_count = str(NETWORK_SESSIONS) if str(NETWORK_SESSIONS) in by else str(counts[0])
    return {**by[main_count], "sessions": int(main_count), "by_sessions": by}


def spread(values: list[float]) -> dict:
    """Median, and the largest deviation from it in %."""
    m = statistics.median(values)
    return {
        "median": m,
        "max_dev_pct": max(abs(v / m - 1) * 100 for v in values),
        "min": min(values),
        "max": max(values),
    }


def markdown(result: dict) -> str:
    info, m = result["machine"], result["table_meta"]
    v = result["validation"]
    lut, build = v["methods"]["lut_predictor"], v["methods"]["lut_predictor_at_build"]
    flops = v["methods"]["flops_baseline"]
    rep = result.get("repeats_summary") or {}
    lines = [
        "## Latency that holds: a table against a drifting device (`benchmarks/lut_drift.py`)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, {m['threads']} threads, {m['runtime_version']}, torch "
        f"{m['torch_version']}; space {m['space']} at {m['img_size']} px, deployed, batch 1, table statistic "
        f"{m.get('statistic', 'median')}. Build finished at "
        f"{result['built_at']}, validated {result['gap_min']:.0f} min later; in between "
        f"{'a one-thread training loop ran' if result['disturb'] else 'nothing of ours ran'}; load average "
        f"{result['load_at_validation']:.1f} at validation.",
        "",
        f"- Table: {result['entries']} entries, {result['networks']} calibration networks, built in "
        f"{result['build_min']:.1f} min; reference {m['reference']['ref_ms']:.3f} ms at build (rows' reference "
        f"moved x{m['reference']['build_drift']:.2f} during the build); "
        f"{result.get('retimed', m.get('retimed', 0))} rows timed again after the pass (reference > 15% above the build's fastest).",
        f"- Drift at validation: {v['drift']['note']}; per network x{v['drift']['rows_median']:.2f} "
        f"({v['drift']['rows_min']:.2f}-{v['drift']['rows_max']:.2f}).",
        "",
        "| predictor | MAPE | within +-10% | max error | Spearman |",
        "|---|---|---|---|---|",
    ]
    for label, s in (
        ("LUT, at build (uncorrected)", build),
        ("LUT, drift-corrected", lut),
        (f"FLOPs ({v['ms_per_gflop']:.2f} ms/GFLOP fitted on these)", flops),
    ):
        lines.append(
            f"| {label} | {s['mape']:.1f}% | {s['within_10'] * 100:.0f}% | {s['max_abs_pct']:.1f}% "
            f"| {s['spearman']:.3f} |"
        )
    for count, r in (rep.get("by_sessions") or ({"1": rep} if rep else {})).items():
        n = sum(1 for row in result["repeats"] if str(row.get("sessions", 1)) == count)
        lines += [
            "",
            f"One network ({result['repeat_model']}) measured {n} times over the gap, {count} session(s) per "
            f"record: raw {m.get('statistic', 'median')} {r['raw']['min']:.2f}-{r['raw']['max']:.2f} ms (max "
            f"{r['raw']['max_dev_pct']:.1f}% from their median), drift-corrected "
            f"{r['corrected']['min']:.2f}-{r['corrected']['max']:.2f} ms (max "
            f"{r['corrected']['max_dev_pct']:.1f}%).",
        ]
    lines.append("")
    return "\n".join(lines)


def rescore(result_path: Path, models: tuple[str, ...] = tuple(MODELS), draws: int = 40) -> None:
    """Re-fit the stored table's calibration and score it on the stored measurements (see the docstring)."""
    result = json.loads(result_path.read_text())
    table = load_table(result_path.with_suffix(".lut.json"))
    before = table.calibration["model"] if table.calibration else "none"
    table.calibration = fit_calibration(table, models)
    old = result["validation"]
    specs = {s.name: s for _, s in validation_specs(table, result["args"]["samples"], 0, True)[0]}
    report = ValidationReport(old["table"], old["meta"], skipped=old["skipped"], drift=old["drift"])
    for row in old["rows"]:
        pred = predict_latency(specs[row["name"]], table, now=False)
        report.rows.append(row | prediction_fields(pred, row["drift"]))
    score(report)

    # every measured network at the table's speed at build: its features and its latency
    stat = table_statistic(table)
    own = [
        (spec_features(table, spec_from_dict(n["spec"]), n["img_size"]), entry_ms(table, n, stat))
        for n in table.networks.values()
    ]
    unseen = [(spec_features(table, specs[r["name"]]), r["measured_ms"] / r["drift"]) for r in old["rows"]]
    rng = np.random.default_rng(0)
    redrawn = {}
    for extra in (0, 10):
        chosen, within, rho = {}, [], []
        for _ in range(draws):
            order = rng.permutation(len(unseen))
            fit_on = own + [unseen[i] for i in order[:extra]]
            test = [unseen[i] for i in order[extra:]]
            cal = choose_model([f for f, _ in fit_on], [ms for _, ms in fit_on], models)
            chosen[cal["model"]] = chosen.get(cal["model"], 0) + 1
            predicted = [calibrated_ms(cal, f) for f, _ in test]
            stats = error_stats([ms for _, ms in test], predicted, [""] * len(test))
            within.append(stats["within_10"])
            rho.append(stats["spearman"])
        redrawn[str(len(own) + extra)] = {
            "chosen": chosen,
            "within_10": float(np.mean(within)),
            "spearman": float(np.mean(rho)),
        }

    result["validation"] = report.as_dict()
    result["rescored"] = {
        "models": list(models),
        "calibration_before": before,
        "calibration_now": table.calibration,
        "methods_before": old["methods"],
        "redrawn": redrawn,
    }
    suffix = "_rescored" + (
        "" if tuple(models) == tuple(MODELS) else "_" + "_".join(models).replace("*", "").replace("+", "")
    )
    out = result_path.with_name(result_path.stem + suffix + ".json")
    atomic_write_text(out, json.dumps(result, indent=1, default=str) + "\n")
    lines = [
        f"Re-scored on the same measurements: calibration model `{before}` -> `{table.calibration['model']}`; "
        f"drift-corrected within +-10% {old['methods']['lut_predictor']['within_10'] * 100:.0f}% -> "
        f"{report.methods['lut_predictor']['within_10'] * 100:.0f}%, Spearman "
        f"{old['methods']['lut_predictor']['spearman']:.3f} -> {report.methods['lut_predictor']['spearman']:.3f}.",
        "",
        f"Calibration sets re-drawn {draws} times from the measured networks, scored on the ones left out:",
        "",
        "| calibration networks | models chosen | within +-10% | Spearman |",
        "|---|---|---|---|",
    ]
    for n, r in redrawn.items():
        picks = ", ".join(f"`{m}` {c}" for m, c in sorted(r["chosen"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {n} | {picks} | {r['within_10'] * 100:.0f}% | {r['spearman']:.3f} |")
    text = markdown(result) + "\n" + "\n".join(lines) + "\n"
    atomic_write_text(out.with_suffix(".md"), text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="efficientformer")
    ap.add_argument("--runtime", default="ort")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calibrate", type=int, help="networks to fit on (default: latvit's, 20 for a space)")
    ap.add_argument(
        "--statistic",
        choices=("median", "min"),
        default="median",
        help="what the table adds up (min: the uncontended latency, robust on a shared machine)",
    )
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--gap", type=float, default=20.0, help="minutes between build and validation")
    ap.add_argument("--repeats", type=int, default=10, help="measurements of one network over the gap")
    ap.add_argument(
        "--repeat-sessions",
        default=f"{NETWORK_SESSIONS},1",
        help="each repeat is one record per count here, back to back: loads of the network timed in turn "
        "(default: latvit's default and one load, for the comparison)",
    )
    ap.add_argument("--no-disturb", action="store_true", help="run nothing of ours during the gap")
    ap.add_argument("--out-dir", default="benchmarks/results")
    ap.add_argument("--suffix", default="", help="appended to the output files' names (keep an earlier run)")
    ap.add_argument("--rescore", metavar="RESULT.json", help="re-score a stored run with today's predictor")
    ap.add_argument("--model", choices=tuple(MODELS), help="with --rescore: fit only this calibration model")
    args = ap.parse_args()
    if args.rescore:
        rescore(Path(args.rescore), (args.model,) if args.model else tuple(MODELS))
        return

    out = Path(args.out_dir)
    stem = f"{args.space}_{args.runtime}_{args.img_size}_{args.statistic}" + ("_quiet" if args.no_disturb else "")
    stem += args.suffix
    result_path = out / f"lut_drift_{stem}.json"
    result: dict = {"args": vars(args), "machine": machine_info(args.threads), "disturb": not args.no_disturb}

    def log(text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def save() -> None:
        atomic_write_text(result_path, json.dumps(result, indent=1, default=str) + "\n")

    start = time.perf_counter()
    log(f"building {stem}")
    table = build_lut(
        args.space,
        args.runtime,
        out / f"lut_drift_{stem}.lut.json",
        img_size=args.img_size,
        threads=args.threads,
        calibrate=args.calibrate,
        statistic=args.statistic,
        progress=False,
    )
    result |= {
        "built_at": time.strftime("%H:%M"),
        "build_min": (time.perf_counter() - start) / 60,
        "entries": len(table.entries),
        "networks": len(table.networks),
        "retimed": sum(bool(r.get("retimed")) for r in table.rows()),
        "table_meta": table.meta,
    }
    log(table.describe())
    save()

    disturbance = None if args.no_disturb else subprocess.Popen([sys.executable, "-c", DISTURBANCE])
    gap_start = time.perf_counter()
    try:
        space = get_space(args.space)
        spec = space.spec(space.largest(), args.img_size)
        result["repeat_model"] = f"{args.space} largest at {args.img_size} px"
        sessions = tuple(int(n) for n in args.repeat_sessions.split(","))
        result["repeats"] = repeated_measurements(table, spec, args.repeats, args.gap * 60, log, sessions)
        result["repeats_summary"] = repeats_summary(result["repeats"])
        save()
    finally:
        if disturbance is not None:
            disturbance.kill()
            disturbance.wait()
    result["gap_min"] = (time.perf_counter() - gap_start) / 60
    result["load_at_validation"] = os.getloadavg()[0]
    log("validating")
    png = out / f"lut_drift_{stem}.png"
    report = validate(table, args.samples, plot=png, progress=False)
    result["validation"] = report.as_dict()
    save()
    log(format_report(report))
    atomic_write_text(out / f"lut_drift_{stem}.md", markdown(result))
    log(f"wrote {result_path}, {png} and lut_drift_{stem}.md")


if __name__ == "__main__":
    main()
