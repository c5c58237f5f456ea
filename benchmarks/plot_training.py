"""Training curves of `latvit train` runs (their metrics.csv) in one PNG: train loss and validation top-1
per epoch, one line per run.

    python benchmarks/plot_training.py runs/fmnist-mobilevit_xxs-32-e20-n60000 \
        runs/fmnist-efficientformerv2_s0-32-e15-n60000 -o docs/img/train_fashion_mnist.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from latvit.utils import save_png  # noqa: E402


def read_metrics(run: Path) -> list[dict[str, float]]:
    path = run / "metrics.csv"
    if not path.is_file():
        sys.exit(f"plot_training: {path} not found; pass `latvit train` output directories")
    with path.open() as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=Path("train_curves.png"))
    args = parser.parse_args()
    fig, (ax_loss, ax_top1) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for run in args.runs:
        rows = read_metrics(run)
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", ms=3, label=run.name)
        ax_top1.plot(epochs, [r["val_top1"] for r in rows], "o-", ms=3, label=run.name)
    ax_loss.set(xlabel="epoch", ylabel="train loss (label smoothing 0.1)")
    ax_top1.set(xlabel="epoch", ylabel="val top-1 (%, EMA weights)")
    for ax in (ax_loss, ax_top1):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
