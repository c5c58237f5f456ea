"""`latvit lut validate`: networks measured end to end against the LUT predictor and a FLOPs baseline.

Each network is measured on the table's runtime interleaved with the reference workload, so its row
carries the device's speed at that moment (`ref_ms`). Every prediction is then scored twice: *at build*
(the table's numbers as they are: the error a user sees if the device has moved) and *drift-corrected*
(rescaled by the row's ref_ms over the table's, times the re-calibration scale when `follow_device` found
the device beyond the threshold). Each method also gets Spearman's rank correlation with the
measurements, the number a search actually depends on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latvit.errors import LatvitError, SpecError
from latvit.latency.lut import (
    LatencyTable,
    build_reference_ms,
    calibration_specs,
    load_table,
    network_id,
    plan_items,
    reference_field,
    sample_upto,
    table_statistic,
)
from latvit.latency.measure import measure_network
from latvit.latency.predictor import RECALIBRATE_ABOVE, Prediction, follow_device, no_reference_note, predict_latency
from latvit.models import MODELS
from latvit.models.spaces import ZOO, get_space
from latvit.runtimes import get_runtime, runnable_runtime
from latvit.space.plan import plan_network
from latvit.space.spec import NetSpec
from latvit.targets import Target, get_target
from latvit.targets.protocol import set_threads
from latvit.utils import progress_bar, save_png


@dataclass
class ValidationReport:
    """End-to-end measurements against the predictor and the FLOPs baseline; `as_dict` is JSON-ready."""

    table: str
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    ms_per_gflop: float = 0.0
    drift: dict[str, Any] = field(default_factory=dict)  # the device against the table (see `validate`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "meta": self.meta,
            "rows": self.rows,
            "skipped": self.skipped,
            "methods": self.methods,
            "ms_per_gflop": self.ms_per_gflop,
            "drift": self.drift,
        }


def ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        r[tied] = r[tied].mean()
    return r


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (nan for fewer than 3 values or no spread)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = ranks(np.asarray(a, float)), ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def error_stats(measured: list[float], predicted: list[float], names: list[str], worst: int = 5) -> dict[str, Any]:
    """Mean absolute % error, share within +-10%, Spearman's rank correlation, and the `worst` cases."""
    m, p = np.array(measured), np.array(predicted)
    err = (p - m) / m * 100
    order = np.argsort(-np.abs(err))[:worst]
    return {
        "n": len(m),
        "mape": float(np.mean(np.abs(err))),
        "within_10": float(np.mean(np.abs(err) <= 10)),
        "max_abs_pct": float(np.max(np.abs(err))),
        "spearman": spearman(measured, predicted),
        "worst": [
            {"name": names[i], "measured_ms": float(m[i]), "predicted_ms": float(p[i]), "error_pct": float(err[i])}
            for i in order
        ],
    }


def validation_specs(
    table: LatencyTable, samples: int, seed: int, zoo: bool
) -> tuple[list[tuple[str, NetSpec]], list[str]]:
    """(source, spec) pairs to validate on, and the zoo models skipped for lack of entries."""
    space, size = table.meta.get("space"), table.meta.get("img_size")
    out, skipped = [], []
    if zoo:
        for spec in MODELS.values():
            spec = spec.with_img_size(size)  # the table's items were measured at its size
            if network_id(spec) in table.networks:  # fitted on: it would flatter the predictor
                skipped.append(f"{spec.name}: a calibration network of this table")
                continue
            try:
                missing = table.missing(plan_items(plan_network(spec)))
            except SpecError as e:  # e.g. a size the model cannot take
                skipped.append(f"{spec.name}: {e}")
                continue
            if missing:
                skipped.append(f"{spec.name}: {len(missing)} blocks not in the table")
            else:
                out.append(("zoo", spec))
    if samples > 0 and space != ZOO:
        calibration = set(table.networks) | {network_id(s) for s in calibration_specs(space, 2, size)}
        drawn = [
            s
            for s in sample_upto(get_space(space), samples + len(calibration), seed, size)
            if network_id(s) not in calibration
        ]
        out += [("sample", s) for s in drawn[:samples]]
    return out, skipped


def validate(
    lut: str | Path | LatencyTable,
    samples: int = 50,
    *,
    seed: int = 0,
    zoo: bool = True,
    force: bool = False,
    progress: bool = True,
    plot: str | Path | None = None,
    recalibrate_above: float = RECALIBRATE_ABOVE,
    target: str | Target | None = None,
) -> ValidationReport:
    """Measure the zoo models the table covers and `samples` random specs of its space end to end on the
    table's runtime, each interleaved with the reference, and compare (a) the LUT predictor at build and
    drift-corrected, (b) the plain sum and (c) latency = k * FLOPs with k fitted on these same measurements
    (which favours the baseline). First measures the device now (`follow_device`, re-calibrating beyond
    `recalibrate_above`); `report.drift` says how far it moved. Writes a predicted-vs-measured PNG to `plot`."""
    table = load_table(lut)
    target = target or table.target  # measured where the table was built, unless told otherwise
    table.check_device(force=force, target=target)
    tgt = get_target(target) if isinstance(target, str) else target
    rt = runnable_runtime(table.meta["runtime"]) if tgt.kind == "local" else get_runtime(table.meta["runtime"])
    threads, deploy = int(table.meta["threads"]), bool(table.meta["deploy"])
    set_threads(threads)
    specs, skipped = validation_specs(table, samples, seed, zoo)
    if not specs:
        raise LatvitError(f"nothing to validate: no zoo model is covered by {table.path} and samples={samples}")
    report = ValidationReport(str(table.path), dict(table.meta), skipped=skipped)
    build_ref = build_reference_ms(table)
    drift = follow_device(table, recalibrate_above=recalibrate_above) if build_ref else None
    scale = drift.scale if drift else 1.0
    calibration = set(table.networks)
    stat = table_statistic(table)
    with progress_bar(progress, len(specs), f"validate {table.meta['space']} on {rt.name}") as advance:
        for source, spec in specs:
            advance(spec.name)
            pred = predict_latency(spec, table, now=False)  # at the table's speed at build
            timing, ref = measure_network(spec, rt, threads, deploy, reference=bool(build_ref), target=tgt)
            k = ref[reference_field(table)] / build_ref * scale if build_ref else 1.0  # this row's drift correction
            report.rows.append(
                {
                    "name": spec.name,
                    "source": source,
                    "img_size": spec.img_size,
                    "in_calibration": network_id(spec) in calibration,
                    "gflops": plan_network(spec).cost.flops / 1e9,
                    "measured_ms": getattr(timing, stat),
                    "measured_cv": timing.cv,
                    "measured_ci_rel": timing.ci_rel,
                    "noisy": timing.noisy,
                    "ref_ms": ref.get("ref_ms"),
                    "ref_gemm_ms": ref.get("ref_gemm_ms"),
                    "drift": k,
                }
                | prediction_fields(pred, k)
            )
        advance(None)
    factors = [r["drift"] for r in report.rows]
    report.drift = {
        "at_start": drift.as_dict() if drift else None,
        "note": drift.describe() if drift else no_reference_note(table),
        "rows_median": statistics.median(factors),
        "rows_min": min(factors),
        "rows_max": max(factors),
    }
    score(report)
    if plot:
        write_plot(report, plot)
    return report


def prediction_fields(pred: Prediction, k: float) -> dict[str, float]:
    """A validation row's predictions: at build, and times `k` (the row's drift correction) with its band."""
    return {
        "predicted_build_ms": pred.ms,
        "predicted_ms": pred.ms * k,
        "low_ms": pred.low * k,
        "high_ms": pred.high * k,
        "blocks_ms": pred.blocks_ms,
    }


def score(report: ValidationReport) -> None:
    """Fill `report.methods` (error statistics of each predictor) and `ms_per_gflop` from its rows."""
    rows = report.rows
    names = [r["name"] for r in rows]
    measured = [r["measured_ms"] for r in rows]
    g = np.array([r["gflops"] for r in rows])
    t = np.array(measured)
    # k minimising sum((k * g - t) / t)^2, the same relative criterion the predictor is fitted with
    k = float(np.sum(g / t) / np.sum((g / t) ** 2))
    report.ms_per_gflop = k
    for r in rows:
        r["flops_ms"] = k * r["gflops"]
    report.methods = {
        "lut_predictor": error_stats(measured, [r["predicted_ms"] for r in rows], names),
        "lut_predictor_at_build": error_stats(measured, [r["predicted_build_ms"] for r in rows], names),
        "lut_sum_only": error_stats(measured, [r["blocks_ms"] for r in rows], names),
        "flops_baseline": error_stats(measured, [r["flops_ms"] for r in rows], names),
    }
    inside = [r["low_ms"] <= r["measured_ms"] <= r["high_ms"] for r in rows]
    report.methods["lut_predictor"]["band_coverage"] = float(np.mean(inside))


def write_plot(report: ValidationReport, path: str | Path) -> Path:
    """Predicted vs measured (log-log) for the predictor and the FLOPs baseline, with the +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    m = np.array([r["measured_ms"] for r in rows])
    lo, hi = m.min() * 0.7, m.max() * 1.4
    fig, ax = plt.subplots(figsize=(6, 6))
    line = np.geomspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="+-10%")
    lut_stats, flops_stats = report.methods["lut_predictor"], report.methods["flops_baseline"]
    ax.scatter(
        m,
        [r["flops_ms"] for r in rows],
        marker="x",
        c="tab:red",
        s=25,
        label=f"FLOPs baseline (MAPE {flops_stats['mape']:.1f}%, {flops_stats['within_10'] * 100:.0f}% within 10%)",
    )
    build_stats = report.methods["lut_predictor_at_build"]
    if any(r["drift"] != 1.0 for r in rows):
        ax.scatter(
            m,
            [r["predicted_build_ms"] for r in rows],
            marker=".",
            c="0.6",
            s=14,
            label=f"LUT predictor at build, uncorrected (MAPE {build_stats['mape']:.1f}%)",
        )
    zoo = np.array([r["source"] == "zoo" for r in rows])
    pred = np.array([r["predicted_ms"] for r in rows])
    ax.scatter(
        m[~zoo],
        pred[~zoo],
        marker="o",
        c="tab:blue",
        s=18,
        label=f"LUT predictor, drift-corrected (MAPE {lut_stats['mape']:.1f}%, "
        f"{lut_stats['within_10'] * 100:.0f}% within 10%)",
    )
    if zoo.any():
        ax.scatter(
            m[zoo],
            pred[zoo],
            marker="s",
            facecolors="none",
            edgecolors="tab:blue",
            s=40,
            label="LUT predictor, zoo models",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    meta = report.meta
    ax.set_xlabel(f"measured latency (ms, {meta.get('statistic', 'median')})")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{meta.get('space')} on {meta.get('runtime_version')}, {meta.get('threads')} threads", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    return save_png(fig, path, dpi=110, bbox_inches="tight")


def format_report(report: ValidationReport) -> str:
    """A short text summary (the CLI prints it, benchmarks paste it)."""
    lines = [
        f"{len(report.rows)} networks measured end to end ({sum(r['source'] == 'zoo' for r in report.rows)} zoo); "
        f"FLOPs baseline fitted on them: {report.ms_per_gflop:.2f} ms/GFLOP"
    ]
    if report.drift:
        lines.append(
            f"drift: {report.drift['note']}; per network x{report.drift['rows_median']:.2f} "
            f"({report.drift['rows_min']:.2f}-{report.drift['rows_max']:.2f})"
        )
    for name, label in (
        ("lut_predictor", "LUT, drift-corrected"),
        ("lut_predictor_at_build", "LUT, at build"),
        ("lut_sum_only", "LUT sum, uncalibrated"),
        ("flops_baseline", "FLOPs baseline"),
    ):
        s = report.methods[name]
        band = f", band covers {s['band_coverage'] * 100:.0f}%" if "band_coverage" in s else ""
        lines.append(
            f"{label:22s} MAPE {s['mape']:5.1f}%  within +-10%: {s['within_10'] * 100:5.1f}%  "
            f"max {s['max_abs_pct']:5.1f}%  Spearman {s['spearman']:.3f}{band}"
        )
        worst = ", ".join(f"{w['name']} {w['error_pct']:+.0f}%" for w in s["worst"][:3])
        lines.append(f"{'':22s} worst: {worst}")
    noisy = sum(bool(r.get("noisy")) for r in report.rows)
    if noisy:
        lines.append(f"{noisy} of {len(report.rows)} measurements hit the time cap before their +-2% interval (noisy)")
    lines += [f"skipped {s}" for s in report.skipped]
    return "\n".join(lines)
