"""The transport adds nothing to a measurement: the same artifacts timed here (`--target local`) and through
an SSH target on this machine (a loopback OpenSSH server, the device's Python a separate environment with only
numpy and onnxruntime) agree within the run's noise.

Each model is exported once (ONNX); every round times it locally and remotely, in alternating order, with the
same protocol; the answer is the median over rounds of remote/local and the spread of the local medians
between rounds (the noise). Writes --out (JSON) and prints a markdown section for docs/benchmarks.md.

    python benchmarks/remote_loopback.py [--models mobilevit_xxs,efficientformer_l1] [--img-size 224]
        [--rounds 5] [--threads 2] [--max-seconds 10] [--out benchmarks/results/remote_loopback.json]

Needs /usr/sbin/sshd (Debian openssh-server) and pip access once (the device environment is cached in the
temp directory). Nothing in the user's ~/.ssh or latvit configuration is touched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from latvit.pipeline.prepare import build_artifact, prepare_model
from latvit.targets import LOCAL, Protocol, TimingJob
from latvit.targets.config import make_config
from latvit.targets.loopback import LoopbackDevice, device_python
from latvit.targets.protocol import default_threads, machine_info, median_ratio
from latvit.targets.ssh import SSHTarget, accept_new_host_key
from latvit.utils import atomic_write_text


def loopback_target(root: Path, python: Path, device: LoopbackDevice) -> SSHTarget:
    """An SSH target for `device`, trusted through a latvit configuration of its own under `root`."""
    os.environ.update(device.client_env())
    os.environ["XDG_CONFIG_HOME"] = str(root / "config")
    accept_new_host_key(device.url)
    return SSHTarget(
        make_config("loopback", device.url, python=str(python), workdir=str(root / "device"), cooldown_s=0)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobilevit_xxs,efficientformer_l1")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=default_threads())
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=10.0,
        help="cap per timing (the stopping rule's +-2%% interval may not be reached on a loaded host)",
    )
    ap.add_argument("--out", default="benchmarks/results/remote_loopback.json")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its sshd (context exit)
    protocol = Protocol(warmup=10, iters=50, min_seconds=1.0, max_seconds=args.max_seconds)
    python = device_python(["numpy", "onnxruntime"])
    with tempfile.TemporaryDirectory(prefix="latvit-loopback-") as tmp, LoopbackDevice(Path(tmp) / "sshd") as device:
        remote = loopback_target(Path(tmp), python, device)
        jobs = {}
        for model in args.models.split(","):
            prepared = prepare_model(model, img_size=args.img_size)
            built = build_artifact(
                prepared.model, prepared.example, "ort", Path(tmp) / model, threads=args.threads, load=False
            )
            jobs[model] = TimingJob(built.artifact, args.threads, protocol)
        medians = {m: {"local": [], "loopback": []} for m in jobs}
        for r in range(args.rounds):
            for model, job in jobs.items():
                order = [("local", LOCAL), ("loopback", remote)]
                for label, target in order[::-1] if r % 2 else order:
                    medians[model][label].append(target.time(job).timing.median_ms)
            print(
                f"round {r + 1}/{args.rounds}: "
                + ", ".join(
                    f"{m} local {v['local'][-1]:.2f} / loopback {v['loopback'][-1]:.2f} ms" for m, v in medians.items()
                ),
                flush=True,
            )
        versions = remote.runner_version("ort"), f"onnxruntime {__import__('onnxruntime').__version__}"
        remote.close()
    rows = []
    for model, v in medians.items():
        local, loop = v["local"], v["loopback"]
        noise = (max(local) - min(local)) / statistics.median(local)
        ratio = median_ratio(loop, local)
        rows.append(
            {
                "model": model,
                "local_ms": statistics.median(local),
                "loopback_ms": statistics.median(loop),
                "ratio": ratio,
                "local_spread": noise,
                "within_noise": abs(ratio - 1) <= max(noise, 0.02),
                "local_rounds": local,
                "loopback_rounds": loop,
            }
        )
    info = machine_info(args.threads)
    load = os.getloadavg()
    result = {
        "date": datetime.date.today().isoformat(),
        "cpu": info["cpu"],
        "cores": info["cores"],
        "threads": args.threads,
        "img_size": args.img_size,
        "rounds": args.rounds,
        "load_1m": load[0],
        "runtime_here": versions[1],
        "runtime_device": versions[0],
        "protocol": protocol.as_kwargs(),
        "rows": rows,
    }
    atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(
        f"\n## Remote targets: the loopback check\n\n`python benchmarks/remote_loopback.py --rounds {args.rounds} "
        f"--threads {args.threads}` ({result['date']}, {info['cpu']}, {info['cores']} cores, load {load[0]:.1f}; "
        f"ORT {versions[1].split()[-1]} here, {versions[0]} in the device environment):\n"
    )
    print("| model | local ms | loopback ms | loopback / local | spread of local between rounds | within noise |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} @{args.img_size} | {row['local_ms']:.2f} | {row['loopback_ms']:.2f} | "
            f"{row['ratio']:.3f} | {100 * row['local_spread']:.1f}% | {'yes' if row['within_noise'] else 'no'} |"
        )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
