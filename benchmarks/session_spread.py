"""Do fresh runtime sessions of one network run at different speeds? (issue 25's ten repeats)

Records of the same network taken minutes apart differ by a few percent even on a quiet machine while the
reference workload does not move, and each record's own interval is narrower than that. Each record
exports the network and opens a new session. This separates the session from the moment: the network is
exported once, `--sessions` ORT sessions of that one file are opened in this process, and all are timed
interleaved for `--rounds` rounds (alternating order), so drift hits every session alike. Per session: the
median of its per-round medians; the spread of those medians is what a record inherits from its session.

    python benchmarks/session_spread.py [--space efficientformer] [--img-size 64] [--threads 1]
        [--sessions 8] [--rounds 10] [--json benchmarks/results/session_spread.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from latvit.latency.measure import build_model, inference_copy
from latvit.models.spaces import get_space
from latvit.runtimes import get_runtime
from latvit.targets.protocol import device_state, machine_info, measure_interleaved, set_threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="efficientformer", help="its largest network is timed (as lut_drift's repeats)")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", default="benchmarks/results/session_spread.json")
    args = ap.parse_args()
    set_threads(args.threads)
    space = get_space(args.space)
    spec = space.spec(space.largest(), args.img_size)
    torch.manual_seed(0)
    model = inference_copy(build_model(spec), True)
    x = torch.randn(1, 3, args.img_size, args.img_size)
    rt = get_runtime("ort")
    with tempfile.TemporaryDirectory(prefix="latvit-sessions-") as tmp:
        path = rt.export(model, x, Path(tmp) / "model.onnx")
        sessions = {f"session{i}": rt.load(path, x, args.threads) for i in range(args.sessions)}
        xn = x.numpy()
        rounds = measure_interleaved(
            {label: (lambda run=run: run(xn)) for label, run in sessions.items()},
            args.rounds,
            alternate=True,
            warmup=10,
            iters=100,
            min_seconds=0.5,
        )
    medians = {label: statistics.median(ms) for label, ms in rounds.items()}
    overall = statistics.median(medians.values())
    result = {
        "machine": machine_info(args.threads),
        "device_state": device_state(),
        "network": f"{args.space} largest at {args.img_size} px, ort, {args.threads} thread(s)",
        "round_medians_ms": rounds,
        "session_medians_ms": medians,
        "spread_pct": (max(medians.values()) / min(medians.values()) - 1) * 100,
    }
    for label in rounds:
        print(f"{label}: {medians[label]:.3f} ms ({(medians[label] / overall - 1) * 100:+.1f}%)")
    print(f"session medians spread {result['spread_pct']:.1f}% ({result['network']})")
    Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
