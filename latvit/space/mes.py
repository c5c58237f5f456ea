"""Mobile Efficiency Score (EfficientFormerV2, eq. 7): MES = Score * prod_i (M_i / U_i) ** alpha_i.

M_i is a metric of the model (parameters, latency, ...), U_i its unit and alpha_i its importance, negative
for costs so that smaller and faster models score higher; Score is a base score (100). The seed paper
defines the form but not the units or exponents it used, so latvit's defaults are stated here and can be
overridden: parameters in units of 1 M, latency in units of 1 ms, both with alpha = -0.5 (equal weight,
and MES scales like 1 / sqrt(params * latency)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from latvit.errors import LatvitError

BASE_SCORE = 100.0


@dataclass(frozen=True)
class MesTerm:
    unit: float
    alpha: float


DEFAULT_TERMS: dict[str, MesTerm] = {
    "params": MesTerm(unit=1e6, alpha=-0.5),  # number of parameters
    "latency_ms": MesTerm(unit=1.0, alpha=-0.5),  # measured latency in milliseconds
}


def mes(metrics: dict[str, float], terms: dict[str, MesTerm] | None = None, score: float = BASE_SCORE) -> float:
    """MES of a model from its `metrics` (e.g. {"params": 3.5e6, "latency_ms": 0.9}).

    Only metrics with a term are used; every term needs its metric (a missing or non-positive metric is an
    error, since a product with a missing factor would silently change the score's scale).
    """
    terms = DEFAULT_TERMS if terms is None else terms
    value = score
    for name, term in terms.items():
        if name not in metrics:
            raise LatvitError(f"MES needs the metric '{name}' (given: {sorted(metrics)}); pass it or drop its term")
        m = float(metrics[name])
        if not m > 0 or not math.isfinite(m):
            raise LatvitError(f"MES metric '{name}' must be a positive number, got {metrics[name]!r}")
        if term.unit <= 0:
            raise LatvitError(f"MES unit of '{name}' must be > 0, got {term.unit}")
        value *= (m / term.unit) ** term.alpha
    return value
