"""The search algorithms, over points (`Choice`) of a `SearchSpace`, with pluggable objectives.

- `greedy_search(method="efficientformer")`: EfficientFormer's latency-driven slimming. From the
  supernet, each step considers the seed's three actions (a MetaPath becomes Identity: one block fewer in
  a stage; drop the first MB3D; shrink a stage's width to the next smaller option, i.e. by 16), and
  takes the one with the smallest accuracy drop per millisecond saved, until the latency target.
- `greedy_search(method="efficientformerv2")`: EfficientFormerV2's search: the frontier actions are
  shrinking a depth, a width, or one block's FFN expansion; the step takes the smallest accuracy drop
  per MES gain, until the latency target.
- `pareto_search`: NSGA-II (optuna) over the whole space, maximising accuracy and minimising latency;
  returns the non-dominated set. With a storage URL, an interrupted search resumes.

`accuracy(choice) -> float` (e.g. supernet weights inherited and evaluated on a held-out split) and
`latency(choice) -> float` (ms, e.g. the LUT predictor) are given by the caller; both are memoised here.
The EfficientFormer seed ranks MetaPaths by learned importance alphas; latvit evaluates each candidate
action's accuracy directly, which ranks the same actions by what the alphas estimate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from latvit.errors import LatvitError
from latvit.search.spaces import Choice, SearchSpace

METHODS = ("efficientformer", "efficientformerv2", "nsga2")


@dataclass(frozen=True)
class Step:
    """One accepted action of a greedy search (or one evaluated trial of NSGA-II)."""

    action: str
    choice: Choice
    latency_ms: float
    accuracy: float
    mes: float | None = None

    def as_dict(self) -> dict:
        return {"action": self.action, "choice": dataclasses.asdict(self.choice), "latency_ms": self.latency_ms,
                "accuracy": self.accuracy, "mes": self.mes}


def _smaller(options: tuple, value) -> object | None:
    lower = [o for o in options if o < value]
    return max(lower) if lower else None


def shrink_actions(space: SearchSpace, c: Choice, method: str) -> list[tuple[str, Choice]]:
    """Every one-step shrink of `c` the method allows, as (label, new choice)."""
    out = []
    for si in range(len(c.depths)):
        depth = _smaller(space.depths[si], c.depths[si])
        if depth is not None:
            depths = c.depths[:si] + (depth,) + c.depths[si + 1:]
            exps = c.expansions[:si] + (c.expansions[si][:depth],) + c.expansions[si + 1:]
            out.append((f"stage {si + 1}: depth {c.depths[si]} -> {depth}", dataclasses.replace(c, depths=depths, expansions=exps)))
        width = _smaller(space.widths[si], c.widths[si])
        if width is not None:
            widths = c.widths[:si] + (width,) + c.widths[si + 1:]
            out.append((f"stage {si + 1}: width {c.widths[si]} -> {width}", dataclasses.replace(c, widths=widths)))
        if method == "efficientformerv2":
            for bj, e in enumerate(c.expansions[si]):
                smaller = _smaller(space.expansions, e)
                if smaller is not None:
                    stage = c.expansions[si][:bj] + (smaller,) + c.expansions[si][bj + 1:]
                    exps = c.expansions[:si] + (stage,) + c.expansions[si + 1:]
                    out.append((f"stage {si + 1} block {bj + 1}: expansion {e:g} -> {smaller:g}",
                                dataclasses.replace(c, expansions=exps)))
    if method == "efficientformer":
        extra = _smaller(space.extras, c.extra)
        if extra is not None:
            out.append((f"drop the first MB3D ({c.extra} -> {extra})", dataclasses.replace(c, extra=extra)))
    return out


class _Memo:
    def __init__(self, fn: Callable[[Choice], float]):
        self.fn, self.cache = fn, {}

    def __call__(self, c: Choice) -> float:
        if c not in self.cache:
            self.cache[c] = float(self.fn(c))
        return self.cache[c]


def greedy_search(space: SearchSpace, method: str, accuracy: Callable[[Choice], float],
                  latency: Callable[[Choice], float], target_ms: float, params: Callable[[Choice], float] | None = None,
                  start: Choice | None = None, on_step: Callable[[Step], None] | None = None) -> list[Step]:
    """Shrink from `start` (default: the space's largest point) until `latency <= target_ms`.

    Returns the trace: the starting point, then one Step per accepted action; the last is the result.
    params(choice) (parameter count) is needed for the MES criterion of method "efficientformerv2".
    """
    from latvit.analysis.mes import mes

    if method not in ("efficientformer", "efficientformerv2"):
        raise LatvitError(f"greedy search method must be efficientformer or efficientformerv2, got '{method}'")
    if method == "efficientformerv2" and params is None:
        raise LatvitError("the MES search needs params(choice)")
    accuracy, latency = _Memo(accuracy), _Memo(latency)
    floor = latency(space.smallest())
    if floor > target_ms:
        raise LatvitError(f"target {target_ms:g} ms is below the smallest subnet of {space.name} ({floor:.2f} ms "
                          "predicted): raise --target-ms or use a smaller --img-size")

    def score_mes(c: Choice) -> float:
        return mes({"params": params(c), "latency_ms": latency(c)})

    current = start or space.largest()
    trace = [Step("start", current, latency(current), accuracy(current),
                  score_mes(current) if method == "efficientformerv2" else None)]
    if on_step:
        on_step(trace[0])
    while latency(current) > target_ms:
        best, best_score = None, None
        for label, cand in shrink_actions(space, current, method):
            drop = max(accuracy(current) - accuracy(cand), 0.0) + 1e-9  # ties favour the bigger gain
            if method == "efficientformer":
                gain = latency(current) - latency(cand)
            else:
                gain = score_mes(cand) - score_mes(current)
            if gain <= 0:
                continue
            score = drop / gain
            if best_score is None or score < best_score:
                best, best_score = (label, cand), score
        if best is None:
            raise LatvitError(f"no action lowers the latency below {latency(current):.2f} ms; target {target_ms:g} ms "
                              "cannot be reached from this point")
        current = best[1]
        step = Step(best[0], current, latency(current), accuracy(current),
                    score_mes(current) if method == "efficientformerv2" else None)
        trace.append(step)
        if on_step:
            on_step(step)
    return trace


# -- NSGA-II -------------------------------------------------------------------------------------------------
def choice_from_trial(space: SearchSpace, trial) -> Choice:
    """An optuna trial's parameters -> a Choice (categorical per stage width/depth, per block expansion)."""
    widths = tuple(trial.suggest_categorical(f"width{i}", list(w)) for i, w in enumerate(space.widths))
    depths = tuple(trial.suggest_categorical(f"depth{i}", list(d)) for i, d in enumerate(space.depths))
    # one expansion parameter per possible block, so every trial has the same parameter set
    exps = tuple(tuple(trial.suggest_categorical(f"exp{i}_{j}", list(space.expansions)) for j in range(max(d)))[:depths[i]]
                 for i, d in enumerate(space.depths))
    extra = trial.suggest_categorical("extra", list(space.extras))
    return Choice(widths, depths, exps, extra)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, latency): a is at least as accurate and as fast as b, and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_search(space: SearchSpace, accuracy: Callable[[Choice], float], latency: Callable[[Choice], float],
                  trials: int = 50, seed: int = 0, storage: str | None = None, study_name: str = "latvit",
                  target_ms: float | None = None) -> tuple[list[Step], list[Step]]:
    """NSGA-II over `space`; returns (every trial, the Pareto front sorted by latency).

    target_ms: if given, points slower than it are kept out of the front (the search still explores them).
    storage: an optuna storage URL (e.g. sqlite:///search.db); a study of the same name is resumed.
    """
    try:
        import optuna
    except ImportError:
        from latvit.errors import missing_extra

        raise missing_extra("optuna", "search") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    accuracy, latency = _Memo(accuracy), _Memo(latency)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=storage, study_name=study_name,
                                load_if_exists=storage is not None,
                                sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=min(20, max(trials, 2))))
    done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])

    def objective(trial):
        c = choice_from_trial(space, trial)
        return accuracy(c), latency(c)

    if trials > done:
        study.optimize(objective, n_trials=trials - done)
    steps = []
    for t in study.trials:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        c = choice_from_trial(space, optuna.trial.FixedTrial(t.params))
        steps.append(Step(f"trial {t.number}", c, t.values[1], t.values[0]))
    eligible = [s for s in steps if target_ms is None or s.latency_ms <= target_ms]
    front = [s for s in eligible
             if not any(dominates((o.accuracy, o.latency_ms), (s.accuracy, s.latency_ms)) for o in eligible)]
    unique = {s.choice: s for s in sorted(front, key=lambda s: s.latency_ms)}
    return steps, list(unique.values())
