"""`latvit tune`: the fastest deployable form of a model on a target within a top-1 budget (docs/tune.md).

`tune_model` tries runtime x precision x token merging x threads candidates (`latvit.tune.candidates`),
each exported once, checked, timed interleaved with the fp32 baseline and, when it could win, evaluated
on held-out images; it writes the winner's artifact, `tune.json` and a one-line recipe (`latvit.tune.run`).
"""

from __future__ import annotations

from latvit.tune.candidates import PRECISIONS, Candidate, candidate_axes, enumerate_candidates
from latvit.tune.run import DEFAULT_PROTOCOL, axis_gains, pareto_front, recipe, tune_model

__all__ = [
    "Candidate",
    "DEFAULT_PROTOCOL",
    "PRECISIONS",
    "axis_gains",
    "candidate_axes",
    "enumerate_candidates",
    "pareto_front",
    "recipe",
    "tune_model",
]
