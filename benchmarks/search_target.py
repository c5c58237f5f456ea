"""Does a search hit its latency target on the device? Search, then bench what it returns, in one run.

1. picks a target on a latency table (`--target-ms`, default: 2/3 of the way from the space's smallest to
   its largest subnet, predicted at the table's build speed);
2. runs `latvit search` on the table at that target (a short supernet run on Fashion-MNIST: the accuracy
   ranking is not what this measures), which measures its final candidates on the device;
3. runs `latvit bench` on the returned model with the table's runtime, threads and input size.

Goal: bench's median is within +5% of the target or under it. Writes `search_target_<table stem>.json`
(target, the search's prediction and measurement, bench's median, interval and reference ratio).

    python benchmarks/search_target.py --lut benchmarks/results/lut_drift_efficientformer_ort_64_median.lut.json
        [--method efficientformer] [--target-ms MS] [--out-dir benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latvit.latency.lut import load_table
from latvit.latency.predictor import predict_latency
from latvit.models.spaces import get_space
from latvit.targets.protocol import machine_info
from latvit.utils import atomic_write_text


def default_target_ms(table) -> float:
    space, size = get_space(table.meta["space"]), int(table.meta["img_size"])
    lo, hi = (predict_latency(space.spec(c, size), table).ms for c in (space.smallest(), space.largest()))
    return round(lo + 2 / 3 * (hi - lo), 3)


def latvit(*args: str) -> None:
    print("$ latvit " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "latvit", *args], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lut", required=True)
    ap.add_argument("--method", default="efficientformer", help="efficientformer, efficientformerv2 or nsga2")
    ap.add_argument("--target-ms", type=float)
    ap.add_argument("--train-subset", type=int, default=2000, help="supernet training images")
    ap.add_argument("--out-dir", default="benchmarks/results")
    args = ap.parse_args()

    table = load_table(args.lut)
    meta = table.meta
    target = args.target_ms or default_target_ms(table)
    threads, size, runtime = str(meta["threads"]), str(meta["img_size"]), meta["runtime"]
    stem = Path(args.lut).name.removesuffix(".lut.json").removeprefix("lut_drift_")
    result_path = Path(args.out_dir) / f"search_target_{stem}.json"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="latvit-search-target-") as work:
        search_dir, bench_json = Path(work) / "search", Path(work) / "bench.json"
        latvit("search", "--method", args.method, "--lut", args.lut, "--target-ms", f"{target}",
               "--data", "fashion-mnist", "--train-subset", str(args.train_subset), "--eval-images", "200",
               "--threads", threads, "--output", str(search_dir))  # fmt: skip
        found = json.loads((search_dir / "result.json").read_text())
        latvit("bench", "--models", str(search_dir / "spec.json"), "--runtimes", runtime, "--threads", threads,
               "--img-size", size, "--json", str(bench_json), "--plot", "")  # fmt: skip
        row = json.loads(bench_json.read_text())["records"][0]
    bench_ms = row["median_ms"]
    result = {
        "lut": args.lut,
        "machine": machine_info(int(threads)),
        "target_ms": target,
        "search": {k: found.get(k) for k in ("predicted_ms", "measured_ms", "measured_ci_rel", "drift", "selection")},
        "bench_ms": bench_ms,
        "bench_ci_rel": row.get("ci_rel"),
        "bench_ref_ratio": row.get("ref_ratio"),
        "bench_over_target": bench_ms / target,
        "goal_met": bench_ms <= 1.05 * target,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(result_path, json.dumps(result, indent=1, default=str) + "\n")
    print(
        f"target {target:.3f} ms: search predicted {found.get('predicted_ms'):.3f}, measured "
        f"{found.get('measured_ms') or float('nan'):.3f}; bench {bench_ms:.3f} ms = {bench_ms / target:.3f}x the "
        f"target ({'met' if result['goal_met'] else 'missed'}: goal <= 1.05x) -> {result_path}"
    )


if __name__ == "__main__":
    main()
