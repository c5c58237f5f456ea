"""The latency predictor: a spec's latency from a lookup table, and how far it can be trusted.

Isolated block latencies do not add up to the network's latency exactly. Each isolated measurement pays
the runtime's per-call overhead (input binding, session dispatch, Python) that a whole network pays
once; a network adds what no item sees alone (the token reshape between stages, cache misses when the
next block's weights evict the previous block's activations). latvit models this with at most three
terms, fitted on the networks a build measures end to end:

    predicted = a * sum(item medians) + b * (number of items) + c

`a` absorbs effects proportional to the work (cache and memory-bandwidth effects, CPU frequency), `b`
the per-call overhead counted once per item instead of once per network (expected <= 0), `c` the
network's own fixed cost. Fewer terms are used when they predict better: the model is chosen among
`a*S`, `a*S + c` and `a*S + b*N + c` by leave-one-out error on the calibration networks, and fitted to
minimise *relative* error (the quantity the +-10% goal is stated in).

The uncertainty is the leave-one-out RMS relative error of the chosen model (floored at 2%, since a
median measured on a shared 2-core machine is not more precise than that): `low`/`high` are
`ms * (1 -/+ 2 sigma)`, a ~95% band when errors are roughly normal. Without calibration the prediction is
the plain sum and the band is the sum of the entries' min and p90. Latencies here are the table's
statistic (medians, or minima for tables built with `statistic="min"`), for entries and networks alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latvit.errors import LatvitError, SpecError
from latvit.latency.lut import (LatencyTable, calibration_specs, describe_item, load_table, measure_network,
                                network_id, plan_items, sample_upto, table_statistic)
from latvit.space.plan import plan_network
from latvit.space.spec import NetSpec, spec_from_dict

# Candidate correction models: name -> the features they use (S = sum of entries, N = items, 1 = offset).
MODELS: dict[str, tuple[str, ...]] = {
    "a*S": ("S",),
    "a*S+c": ("S", "1"),
    "a*S+b*N+c": ("S", "N", "1"),
}
SIGMA_FLOOR = 0.02  # relative; see the module docstring
SIGMA_UNKNOWN = 0.10  # relative sigma when fewer than 3 calibration networks exist
Z = 2.0  # low/high = ms * (1 -/+ Z * sigma)


@dataclass(frozen=True)
class Prediction:
    """Predicted latency in ms with a ~95% band [low, high]; `blocks_ms` is the plain sum of entries."""

    ms: float
    low: float
    high: float
    blocks_ms: float = 0.0
    items: int = 0
    calibrated: bool = False
    model: str = ""

    def __str__(self) -> str:
        return f"{self.ms:.2f} ms [{self.low:.2f}, {self.high:.2f}]"

    def as_dict(self) -> dict[str, Any]:
        return {"ms": self.ms, "low": self.low, "high": self.high, "blocks_ms": self.blocks_ms, "items": self.items,
                "calibrated": self.calibrated, "model": self.model}


# -- features and prediction -----------------------------------------------------------------------------
def _features(table: LatencyTable, spec: NetSpec, img_size: int | None = None) -> dict[str, float]:
    """S, N, 1 and the entries' min/p90 sums for `spec`; missing items raise, listing each."""
    plan = plan_network(spec, img_size)
    items = plan_items(plan)
    missing = table.missing(items)
    if missing:
        shown = "; ".join(describe_item(it) for it in missing[:8])
        more = f"; and {len(missing) - 8} more" if len(missing) > 8 else ""
        space, size = table.meta.get("space"), table.meta.get("img_size")
        raise LatvitError(
            f"{len(missing)} of {len(items)} blocks of {spec.name} at {plan.img_size} are missing from {table.path} "
            f"(space {space} at {size or 'default sizes'}): {shown}{more}; build a table that covers them, e.g. "
            f"`latvit lut build --space {space} --img-size {plan.img_size} --out OTHER.json`")
    entries = [table.lookup(it) for it in items]
    stat = table_statistic(table)
    return {"S": sum(e[stat] for e in entries), "N": float(len(items)), "1": 1.0,
            "min": sum(e["min_ms"] for e in entries), "p90": sum(e["p90_ms"] for e in entries)}


def predict_latency(spec: "NetSpec | str | Path", lut: "str | Path | LatencyTable", *, img_size: int | None = None,
                    force: bool = False) -> Prediction:
    """Predicted batch-1 latency of `spec` (a NetSpec, model name, spec JSON or saved model) on the runtime
    and device `lut` (a table path or `LatencyTable`) was built on.

    A table from another device or runtime version raises unless `force`; a spec with blocks the table
    lacks raises, listing them.
    """
    from latvit.models import resolve_spec

    table = load_table(lut)
    table.check_device(force=force)
    if not isinstance(spec, NetSpec):
        spec = resolve_spec(spec)[0]
    f = _features(table, spec, img_size)
    cal = table.calibration
    if not cal:
        return Prediction(f["S"], f["min"], max(f["p90"], f["S"]), f["S"], int(f["N"]), False, "sum")
    ms = sum(c * f[name] for c, name in zip(cal["coef"], MODELS[cal["model"]]))
    ms = max(ms, 1e-3)
    sigma = cal["rel_sigma"]
    return Prediction(ms, ms * max(1.0 - Z * sigma, 0.0), ms * (1.0 + Z * sigma), f["S"], int(f["N"]), True,
                      cal["model"])


# -- calibration -------------------------------------------------------------------------------------------
def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares on relative error: minimise sum((x @ coef - y) / y)^2."""
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    return coef


def _loo_rel_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    errs = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        errs.append((x[i] @ _fit(x[keep], y[keep]) - y[i]) / y[i])
    return np.array(errs)


def fit_calibration(table: LatencyTable) -> dict[str, Any] | None:
    """Fit the correction model on the table's end-to-end networks (see the module docstring), or None
    when the table has none."""
    rows = []
    for net in table.networks.values():
        spec = spec_from_dict(net["spec"])
        rows.append((_features(table, spec, net["img_size"]), float(net[table_statistic(table)])))
    if not rows:
        return None
    y = np.array([ms for _, ms in rows])
    n = len(rows)
    candidates: dict[str, dict[str, Any]] = {}
    for name, terms in MODELS.items():
        if n < len(terms) + 2 and name != "a*S":  # leave-one-out needs spare points to mean anything
            continue
        x = np.array([[f[t] for t in terms] for f, _ in rows])
        coef = _fit(x, y)
        fit_err = (x @ coef - y) / y
        loo = _loo_rel_errors(x, y) if n >= 3 else fit_err
        candidates[name] = {"coef": [float(c) for c in coef], "loo_rms": float(np.sqrt(np.mean(loo**2))),
                            "fit_mape": float(np.mean(np.abs(fit_err)) * 100)}
    best = min(candidates, key=lambda k: candidates[k]["loo_rms"])
    sigma = max(candidates[best]["loo_rms"], SIGMA_FLOOR) if n >= 3 else SIGMA_UNKNOWN
    sum_err = (np.array([f["S"] for f, _ in rows]) - y) / y
    return {"model": best, "terms": list(MODELS[best]), "coef": candidates[best]["coef"], "rel_sigma": sigma,
            "n": n, "sum_only_mape": float(np.mean(np.abs(sum_err)) * 100), "candidates": candidates}


# -- validation --------------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """End-to-end measurements against the predictor and the FLOPs baseline; `as_dict` is JSON-ready."""

    table: str
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    ms_per_gflop: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "meta": self.meta, "rows": self.rows, "skipped": self.skipped,
                "methods": self.methods, "ms_per_gflop": self.ms_per_gflop}


def error_stats(measured: list[float], predicted: list[float], names: list[str], worst: int = 5) -> dict[str, Any]:
    """Mean absolute % error, share within +-10%, and the `worst` cases."""
    m, p = np.array(measured), np.array(predicted)
    err = (p - m) / m * 100
    order = np.argsort(-np.abs(err))[:worst]
    return {"n": len(m), "mape": float(np.mean(np.abs(err))), "within_10": float(np.mean(np.abs(err) <= 10)),
            "max_abs_pct": float(np.max(np.abs(err))),
            "worst": [{"name": names[i], "measured_ms": float(m[i]), "predicted_ms": float(p[i]),
                       "error_pct": float(err[i])} for i in order]}


def validation_specs(table: LatencyTable, samples: int, seed: int,
                     zoo: bool) -> tuple[list[tuple[str, NetSpec]], list[str]]:
    """(source, spec) pairs to validate on, and the zoo models skipped for lack of entries."""
    from latvit.models import MODELS as ZOO

    space, size = table.meta.get("space"), table.meta.get("img_size")
    out, skipped = [], []
    if zoo:
        for spec in ZOO.values():
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
    if samples > 0 and space != "zoo":
        from latvit.models.spaces import get_space

        calibration = set(table.networks) | {network_id(s) for s in calibration_specs(space, 2, size)}
        drawn = [s for s in sample_upto(get_space(space), samples + len(calibration), seed, size)
                 if network_id(s) not in calibration]
        out += [("sample", s) for s in drawn[:samples]]
    return out, skipped


def validate(lut: "str | Path | LatencyTable", samples: int = 50, *, seed: int = 0, zoo: bool = True,
             force: bool = False, progress: bool = True, plot: "str | Path | None" = None) -> ValidationReport:
    """Measure the zoo models the table covers and `samples` random specs of its space end to end on the
    table's runtime, and compare (a) the LUT predictor and (b) latency = k * FLOPs with k fitted on these
    same measurements (which favours the baseline). Writes a predicted-vs-measured PNG to `plot`."""
    from latvit.utils import progress_bar
    from latvit.targets.protocol import set_threads
    from latvit.runtimes import runnable_runtime

    table = load_table(lut)
    table.check_device(force=force)
    rt = runnable_runtime(table.meta["runtime"])
    threads, deploy = int(table.meta["threads"]), bool(table.meta["deploy"])
    set_threads(threads)
    specs, skipped = validation_specs(table, samples, seed, zoo)
    if not specs:
        raise LatvitError(f"nothing to validate: no zoo model is covered by {table.path} and samples={samples}")
    report = ValidationReport(str(table.path), dict(table.meta), skipped=skipped)
    calibration = set(table.networks)
    stat = table_statistic(table)
    with progress_bar(progress, len(specs), f"validate {table.meta['space']} on {rt.name}") as advance:
        for source, spec in specs:
            advance(spec.name)
            pred = predict_latency(spec, table)
            timing = measure_network(spec, rt, threads, deploy)
            report.rows.append({"name": spec.name, "source": source, "img_size": spec.img_size,
                                "in_calibration": network_id(spec) in calibration,
                                "gflops": plan_network(spec).cost.flops / 1e9, "measured_ms": getattr(timing, stat),
                                "measured_cv": timing.cv, "predicted_ms": pred.ms, "low_ms": pred.low,
                                "high_ms": pred.high, "blocks_ms": pred.blocks_ms})
        advance(None)
    _score(report)
    if plot:
        write_plot(report, plot)
    return report


def _score(report: ValidationReport) -> None:
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
        "lut_sum_only": error_stats(measured, [r["blocks_ms"] for r in rows], names),
        "flops_baseline": error_stats(measured, [r["flops_ms"] for r in rows], names),
    }
    inside = [r["low_ms"] <= r["measured_ms"] <= r["high_ms"] for r in rows]
    report.methods["lut_predictor"]["band_coverage"] = float(np.mean(inside))


def write_plot(report: ValidationReport, path: "str | Path") -> Path:
    """Predicted vs measured (log-log) for the predictor and the FLOPs baseline, with the +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latvit.utils import save_png

    rows = report.rows
    m = np.array([r["measured_ms"] for r in rows])
    lo, hi = m.min() * 0.7, m.max() * 1.4
    fig, ax = plt.subplots(figsize=(6, 6))
    line = np.geomspace(lo, hi, 50)
    ax.plot(line, line, "k-", lw=1)
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="+-10%")
    lut_stats, flops_stats = report.methods["lut_predictor"], report.methods["flops_baseline"]
    ax.scatter(m, [r["flops_ms"] for r in rows], marker="x", c="tab:red", s=25,
               label=f"FLOPs baseline (MAPE {flops_stats['mape']:.1f}%, "
                     f"{flops_stats['within_10'] * 100:.0f}% within 10%)")
    zoo = np.array([r["source"] == "zoo" for r in rows])
    pred = np.array([r["predicted_ms"] for r in rows])
    ax.scatter(m[~zoo], pred[~zoo], marker="o", c="tab:blue", s=18,
               label=f"LUT predictor (MAPE {lut_stats['mape']:.1f}%, {lut_stats['within_10'] * 100:.0f}% within 10%)")
    if zoo.any():
        ax.scatter(m[zoo], pred[zoo], marker="s", facecolors="none", edgecolors="tab:blue", s=40,
                   label="LUT predictor, zoo models")
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
    lines = [f"{len(report.rows)} networks measured end to end ({sum(r['source'] == 'zoo' for r in report.rows)} zoo); "
             f"FLOPs baseline fitted on them: {report.ms_per_gflop:.2f} ms/GFLOP"]
    for name, label in (("lut_predictor", "LUT predictor"), ("lut_sum_only", "LUT sum, uncalibrated"),
                        ("flops_baseline", "FLOPs baseline")):
        s = report.methods[name]
        band = f", band covers {s['band_coverage'] * 100:.0f}%" if "band_coverage" in s else ""
        lines.append(f"{label:22s} MAPE {s['mape']:5.1f}%  within +-10%: {s['within_10'] * 100:5.1f}%  "
                     f"max {s['max_abs_pct']:5.1f}%{band}")
        worst = ", ".join(f"{w['name']} {w['error_pct']:+.0f}%" for w in s["worst"][:3])
        lines.append(f"{'':22s} worst: {worst}")
    lines += [f"skipped {s}" for s in report.skipped]
    return "\n".join(lines)
