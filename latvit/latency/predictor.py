"""The latency predictor: a spec's latency from a lookup table, and how far it can be trusted.

Isolated block latencies do not add up to the network's latency exactly. Each isolated measurement pays
the runtime's per-call overhead (input binding, session dispatch, Python) that a whole network pays
once; a network adds what no item sees alone (the token reshape between stages, cache misses when the
next block's weights evict the previous block's activations). latvit models this with at most three
terms, fitted on the networks a build measures end to end:

    predicted = a * sum(item medians) + b * (number of items) + p * (parameters, millions) + c

`a` absorbs effects proportional to the work (cache and memory-bandwidth effects, CPU frequency), `b`
the per-call overhead counted once per item instead of once per network (expected <= 0), `p` the weights
a network streams from memory on every call: a block timed alone in a loop finds its weights in cache,
inside a network the other blocks' weights have evicted them (on the 2-core EPYC this term took the
drift-corrected share within +-10% from 86% to 94% on 51 unseen networks: docs/lut.md), `c` the
network's own fixed cost. Fewer terms are used when they predict better: the model is chosen among
`a*S`, `a*S + c`, `a*S + b*N + c` and `a*S + p*P + c` by leave-one-out error on the calibration networks,
and fitted to minimise *relative* error (the quantity the +-10% goal is stated in).

The uncertainty is the leave-one-out RMS relative error of the chosen model (floored at 2%, since a
median measured on a shared 2-core machine is not more precise than that): `low`/`high` are
`ms * (1 -/+ 2 sigma)`, a ~95% band when errors are roughly normal. Without calibration the prediction is
the plain sum and the band is the sum of the entries' min and p90. Latencies here are the table's
statistic (medians, or minima for tables built with `statistic="min"`), for entries and networks alike.

Tables that follow the device: a table states its latencies at the device's speed at build (the reference
workload's time then, `meta.reference.ref_ms`; `latvit.latency.lut.entry_ms`). The device drifts (DVFS,
thermal throttling, other jobs: 1.4x within half an hour on a shared CPU), so a prediction for *now*
measures the reference now (`follow_device`, once per table object, again when older than
DRIFT_MAX_AGE_S) and rescales: predicted now = predicted at build * ref_now / ref_build. When the device
has moved by more than RECALIBRATE_ABOVE, uniform rescaling is checked against the table's own
calibration networks measured now, beside the reference: the median of measured / rescaled prediction
becomes an extra scale (`Drift.scale`), the re-calibration. `Drift.describe()` says what happened
("device is 1.36x slower than at build ..."). A table without a reference (built before latvit measured
one) predicts at its build speed, with a warning that drift cannot be corrected.
"""

from __future__ import annotations

import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latvit.errors import LatvitError
from latvit.latency.lut import (
    LatencyTable,
    build_reference_ms,
    describe_item,
    entry_ms,
    load_table,
    plan_items,
    reference_field,
    table_statistic,
)
from latvit.latency.measure import NETWORK_PROTOCOL, Protocol, measure_network
from latvit.models import resolve_spec
from latvit.runtimes import runnable_runtime
from latvit.runtimes.base import Artifact
from latvit.space.plan import plan_network
from latvit.space.spec import NetSpec, spec_from_dict
from latvit.targets import DEFAULT_TARGET, LOCAL, TimingJob, get_target
from latvit.targets.protocol import set_threads
from latvit.targets.reference import REFERENCE_VERSION, Reference, measure_with_reference, reference_file

# Candidate correction models: name -> the features they use (S = sum of entries, N = items, P = the
# network's parameters in millions, 1 = offset).
MODELS: dict[str, tuple[str, ...]] = {
    "a*S": ("S",),
    "a*S+c": ("S", "1"),
    "a*S+b*N+c": ("S", "N", "1"),
    "a*S+p*P+c": ("S", "P", "1"),
}
SIGMA_FLOOR = 0.02  # relative; see the module docstring
SIGMA_UNKNOWN = 0.10  # relative sigma when fewer than 3 calibration networks exist
Z = 2.0  # low/high = ms * (1 -/+ Z * sigma)
DRIFT_MAX_AGE_S = 600.0  # a measured drift is reused this long by predictions "now"
RECALIBRATE_ABOVE = 0.10  # |ref_now / ref_build - 1| beyond this: check the rescaling on networks measured now
RECALIBRATION_NETWORKS = 3
# the reference measured now: 0.5 s at least, its median to +-1%
REFERENCE_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=0.5, max_seconds=10.0, target_rel=0.01)


class DriftWarning(UserWarning):
    """A prediction that cannot be corrected for the device's drift (a table without a reference)."""


@dataclass(frozen=True)
class Prediction:
    """Predicted latency in ms with a ~95% band [low, high]; `blocks_ms` is the plain sum of entries.

    `ms` is for the device's speed now when `drift` is set (the factor ref_now / ref_build times any
    re-calibration scale), else at the table's speed at build; `build_ms` is always the latter."""

    ms: float
    low: float
    high: float
    blocks_ms: float = 0.0
    items: int = 0
    calibrated: bool = False
    model: str = ""
    build_ms: float = 0.0
    drift: float | None = None

    def __str__(self) -> str:
        return f"{self.ms:.2f} ms [{self.low:.2f}, {self.high:.2f}]"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Drift:
    """The device's speed now against the table's at build: reference times then and now (network on the
    table's runtime, and the GEMM), and the re-calibration scale (1.0 when not re-calibrated)."""

    ref_build_ms: float
    ref_now_ms: float
    gemm_build_ms: float | None = None
    gemm_now_ms: float | None = None
    scale: float = 1.0
    recalibrated_on: int = 0  # networks measured now for the re-calibration (0: none)
    measured_at: float = 0.0  # time.time()

    @property
    def reference_factor(self) -> float:
        """ref_now / ref_build: > 1 when the device is slower now."""
        return self.ref_now_ms / self.ref_build_ms

    @property
    def factor(self) -> float:
        """What a prediction at build is multiplied by: the reference factor times the re-calibration."""
        return self.reference_factor * self.scale

    def describe(self) -> str:
        f = self.reference_factor
        speed = "as fast as" if abs(f - 1) < 0.005 else f"{f:.2f}x {'slower' if f > 1 else 'faster'} than"
        gemm = f"; GEMM {self.gemm_now_ms / self.gemm_build_ms:.2f}x" if self.gemm_now_ms and self.gemm_build_ms else ""
        text = f"device is {speed} at build (reference {self.ref_build_ms:.3f} -> {self.ref_now_ms:.3f} ms{gemm})"
        if self.recalibrated_on:
            text += (
                f"; re-calibrated on {self.recalibrated_on} networks measured now: a further x{self.scale:.3f}, "
                f"predictions x{self.factor:.3f} in all"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "reference_factor": self.reference_factor,
            "factor": self.factor,
            "describe": self.describe(),
        }


# -- features and prediction -----------------------------------------------------------------------------
def spec_features(table: LatencyTable, spec: NetSpec, img_size: int | None = None) -> dict[str, float]:
    """S, N, P, 1 and the entries' min/p90 sums for `spec`, at the table's speed at build; missing items
    raise, listing each."""
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
            f"`latvit lut build --space {space} --img-size {plan.img_size} --out OTHER.json`"
        )
    entries = [table.lookup(it) for it in items]
    stat = table_statistic(table)
    return {
        "S": sum(entry_ms(table, e, stat) for e in entries),
        "N": float(len(items)),
        "P": plan.cost.params / 1e6,
        "1": 1.0,
        "min": sum(entry_ms(table, e, "min_ms") for e in entries),
        "p90": sum(entry_ms(table, e, "p90_ms") for e in entries),
    }


def predict_latency(
    spec: NetSpec | str | Path,
    lut: str | Path | LatencyTable,
    *,
    img_size: int | None = None,
    force: bool = False,
    now: bool = True,
    target: str | None = None,
) -> Prediction:
    """Predicted batch-1 latency of `spec` (a NetSpec, model name, spec JSON or saved model) on the runtime
    and device `lut` (a table path or `LatencyTable`) was built on.

    now: for the device's speed now (`follow_device`: the reference is measured at the table's first
    prediction and when its measurement is older than DRIFT_MAX_AGE_S); False: at the table's speed at
    build, with no measurement. A table without a reference predicts at build either way (DriftWarning).
    A table from another device or runtime version, or built on a target other than `target` (default: the
    table's own), raises unless `force`; a spec with blocks the table lacks raises, listing them.
    """
    table = load_table(lut)
    table.check_device(force=force, target=target)
    if not isinstance(spec, NetSpec):
        spec = resolve_spec(spec)[0]
    drift = current_drift(table) if now else None
    return _predict(table, spec, img_size, drift.factor if drift else None)


def calibrated_ms(calibration: dict[str, Any], features: dict[str, float]) -> float:
    """The correction model `calibration` (`choose_model`'s result) evaluated on `spec_features`."""
    return sum(c * features[t] for c, t in zip(calibration["coef"], MODELS[calibration["model"]]))


def _predict(table: LatencyTable, spec: NetSpec, img_size: int | None, factor: float | None) -> Prediction:
    f = spec_features(table, spec, img_size)
    cal = table.calibration
    if not cal:
        ms, low, high, model = f["S"], f["min"], max(f["p90"], f["S"]), "sum"
    else:
        ms = max(calibrated_ms(cal, f), 1e-3)
        sigma, model = cal["rel_sigma"], cal["model"]
        low, high = ms * max(1.0 - Z * sigma, 0.0), ms * (1.0 + Z * sigma)
    k = factor or 1.0
    return Prediction(ms * k, low * k, high * k, f["S"], int(f["N"]), bool(cal), model, ms, factor)


# -- the device now ----------------------------------------------------------------------------------------
def current_drift(table: LatencyTable, max_age: float = DRIFT_MAX_AGE_S) -> Drift | None:
    """The table's drift, measured now (`follow_device`) unless a measurement younger than `max_age`
    seconds is on the table object; None (with a DriftWarning, once) for a table without a reference."""
    if build_reference_ms(table) is None:
        if not getattr(table, "drift_warned", False):
            warnings.warn(no_reference_note(table), DriftWarning, stacklevel=3)
            table.drift_warned = True
        return None
    if table.drift is None or time.time() - table.drift.measured_at > max_age:
        follow_device(table)
    return table.drift


def no_reference_note(table: LatencyTable) -> str:
    return (
        f"{table.path} has no reference time (built before latvit measured one, or with reference=False): "
        "its predictions are at the device's speed at build and drift cannot be corrected; rebuild it with "
        "`latvit lut build` to follow the device"
    )


def table_reference_version(table: LatencyTable) -> None:
    """Raise unless the table's reference workload is the one this latvit times."""
    version = (table.meta.get("reference") or {}).get("ref_version")
    if version != REFERENCE_VERSION:
        raise LatvitError(
            f"{table.path} was built with reference workload v{version}, this latvit times "
            f"v{REFERENCE_VERSION}; rebuild the table with `latvit lut build`"
        )


def table_reference(table: LatencyTable) -> Reference:
    """The reference workload on the table's runtime and threads, on this machine (prepared once per
    process by the local target)."""
    table_reference_version(table)
    return LOCAL.reference(table.meta["runtime"], int(table.meta["threads"]))


def measure_reference(table: LatencyTable) -> tuple[float, float] | None:
    """(reference network ms, GEMM ms) now, on the table's runtime, threads and target, in the table's
    statistic (medians to +-1%, or minima). Timed in the same alternating rounds as at build (the GEMM, or on
    a device the reference network itself, standing in for the work), so that the reference meets the same
    cache and thread-pool conditions as then. None when the table's device cannot time the reference (adb)."""
    if table.target != DEFAULT_TARGET:
        return _measure_reference_on_device(table)
    ref = table_reference(table)
    set_threads(int(table.meta["threads"]))
    measured = measure_with_reference(ref.gemm, ref, **REFERENCE_PROTOCOL.as_kwargs())
    stat = table_statistic(table)
    return getattr(measured.ref, stat), getattr(measured.gemm, stat)


def _measure_reference_on_device(table: LatencyTable) -> tuple[float, float] | None:
    """The reference measured now on the remote device the table was built on: its reference network's
    artifact shipped and timed there in alternating rounds with itself, as every entry was at build."""
    table_reference_version(table)
    runtime, threads = table.meta["runtime"], int(table.meta["threads"])
    made = reference_file(runtime)
    if made is None:  # an in-process runtime: no remote table has one
        return None
    job = TimingJob(Artifact(runtime, *made), threads, REFERENCE_PROTOCOL, reference=True)
    result = get_target(table.target).time(job)
    if not result.reference:
        return None
    rule, stat = result.stopping_rule(job), table_statistic(table)
    return getattr(rule.timing(result.reference["net"]), stat), getattr(rule.timing(result.reference["gemm"]), stat)


def follow_device(
    table: LatencyTable, *, recalibrate_above: float = RECALIBRATE_ABOVE, networks: int = RECALIBRATION_NETWORKS
) -> Drift | None:
    """Measure the device's speed now against the table's at build, store it on the table object
    (`table.drift`, used by `predict_latency(now=True)`) and return it; re-calibrate on up to `networks` of
    the table's calibration networks measured now when the reference moved by more than
    `recalibrate_above` (a fraction). None for a table without a reference (see `no_reference_note`)."""
    build = build_reference_ms(table)
    if build is None:
        return None
    now = measure_reference(table)
    if now is None:
        return None
    ref_now, gemm_now = now
    drift = Drift(
        build, ref_now, (table.meta.get("reference") or {}).get("ref_gemm_ms"), gemm_now, measured_at=time.time()
    )
    if abs(drift.reference_factor - 1) > recalibrate_above and networks > 0 and table.networks:
        scale, n = recalibration_scale(table, networks)
        drift = Drift(
            drift.ref_build_ms, drift.ref_now_ms, drift.gemm_build_ms, drift.gemm_now_ms, scale, n, drift.measured_at
        )
    table.drift = drift
    return drift


def recalibration_scale(table: LatencyTable, networks: int) -> tuple[float, int]:
    """Measure up to `networks` of the table's calibration networks now, each interleaved with the
    reference, and return (median of measured / prediction rescaled by its own reference time, count)."""
    runtime = runnable_runtime(table.meta["runtime"])
    threads, deploy = int(table.meta["threads"]), bool(table.meta["deploy"])
    stat = table_statistic(table)
    rows = sorted(table.networks.values(), key=lambda n: n[stat])
    picks = [rows[round(i * (len(rows) - 1) / max(networks - 1, 1))] for i in range(min(networks, len(rows)))]
    ratios = []
    for net in {id(n): n for n in picks}.values():
        spec = spec_from_dict(net["spec"])
        timing, ref = measure_network(spec, runtime, threads, deploy, NETWORK_PROTOCOL, True, table.target)
        predicted = _predict(table, spec, net["img_size"], ref[reference_field(table)] / build_reference_ms(table))
        ratios.append(getattr(timing, stat) / predicted.ms)
    return float(statistics.median(ratios)), len(ratios)


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


def choose_model(
    features: list[dict[str, float]], measured_ms: list[float], models: tuple[str, ...] = tuple(MODELS)
) -> dict[str, Any]:
    """Fit each candidate model (names of MODELS) to networks given as `spec_features` and their measured
    latencies, and choose the one with the smallest leave-one-out relative error: {"model", "terms",
    "coef", "rel_sigma", "n", "candidates" (each one's coef, loo_rms, fit_mape)}."""
    y = np.array(measured_ms, dtype=float)
    n = len(y)
    candidates: dict[str, dict[str, Any]] = {}
    for name in models:
        terms = MODELS[name]
        if n < len(terms) + 2 and name != "a*S":  # leave-one-out needs spare points to mean anything
            continue
        x = np.array([[f[t] for t in terms] for f in features])
        coef = _fit(x, y)
        fit_err = (x @ coef - y) / y
        loo = _loo_rel_errors(x, y) if n >= 3 else fit_err
        candidates[name] = {
            "coef": [float(c) for c in coef],
            "loo_rms": float(np.sqrt(np.mean(loo**2))),
            "fit_mape": float(np.mean(np.abs(fit_err)) * 100),
        }
    if not candidates:
        raise LatvitError(f"{n} networks are too few to fit any of {', '.join(models)}")
    best = min(candidates, key=lambda k: candidates[k]["loo_rms"])
    sigma = max(candidates[best]["loo_rms"], SIGMA_FLOOR) if n >= 3 else SIGMA_UNKNOWN
    return {
        "model": best,
        "terms": list(MODELS[best]),
        "coef": candidates[best]["coef"],
        "rel_sigma": sigma,
        "n": n,
        "candidates": candidates,
    }


def fit_calibration(table: LatencyTable, models: tuple[str, ...] = tuple(MODELS)) -> dict[str, Any] | None:
    """Fit the correction model on the table's end-to-end networks (see the module docstring), or None
    when the table has none. `models`: the candidates (names of MODELS) to choose among."""
    features, measured, stat = [], [], table_statistic(table)
    for net in table.networks.values():
        features.append(spec_features(table, spec_from_dict(net["spec"]), net["img_size"]))
        measured.append(entry_ms(table, net, stat))
    if not features:
        return None
    sum_err = (np.array([f["S"] for f in features]) - np.array(measured)) / np.array(measured)
    return choose_model(features, measured, models) | {"sum_only_mape": float(np.mean(np.abs(sum_err)) * 100)}
