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

- `importance_slimming`: EfficientFormer's slimming as the seed states it, on a Gumbel MetaPath supernet
  (`latvit.search.supernet.GumbelSupernet`): the points are `PathState`s (which candidate each MetaPath
  keeps, and the stage widths), and the learned importance of each MetaPath picks the one candidate of
  each action kind: (a) the least important MetaPath becomes Identity, (b) the first MB3D becomes MB4D,
  (c) the least important stage loses 16 channels. Each is scored by accuracy drop per millisecond.

`accuracy(point) -> float` (e.g. supernet weights inherited and evaluated on a held-out split) and
`latency(point) -> float` (ms, e.g. the LUT predictor) are given by the caller; both are memoised here.
`greedy_search(method="efficientformer")` evaluates every shrink of every stage instead of letting the
alphas choose (more evaluations, no Gumbel supernet needed): `latvit search --supernet plain`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from latvit.errors import LatvitError, missing_extra
from latvit.models.spaces import Choice, SearchSpace
from latvit.space.mes import mes

METHODS = ("efficientformer", "efficientformerv2", "nsga2")


@dataclass(frozen=True)
class Step:
    """One accepted action of a greedy search (or one evaluated trial of NSGA-II)."""

    action: str
    choice: Choice
    latency_ms: float
    accuracy: float
    mes: float | None = None
    paths: tuple[tuple[str, ...], ...] | None = None  # importance slimming: the kind each MetaPath keeps

    def as_dict(self) -> dict:
        d = {
            "action": self.action,
            "choice": dataclasses.asdict(self.choice),
            "latency_ms": self.latency_ms,
            "accuracy": self.accuracy,
            "mes": self.mes,
        }
        if self.paths is not None:
            d["paths"] = [list(stage) for stage in self.paths]
        return d


@dataclass(frozen=True)
class PathState:
    """A subnet of the Gumbel MetaPath supernet: per stage, the candidate each MetaPath keeps ("meta4d",
    "meta3d" or "identity"), and the stage widths. MB3D paths are the trailing kept paths of the last
    stage (a latvit spec reshapes to tokens once), so every state is a point of the space (`choice`)."""

    kinds: tuple[tuple[str, ...], ...]
    widths: tuple[int, ...]
    expansion: float = 4.0

    def depths(self) -> tuple[int, ...]:
        return tuple(sum(k != "identity" for k in stage) for stage in self.kinds)

    def choice(self) -> Choice:
        depths = self.depths()
        return Choice(
            self.widths,
            depths,
            tuple((self.expansion,) * d for d in depths),
            sum(k == "meta3d" for k in self.kinds[-1]),
        )

    def replace(self, stage: int, path: int, kind: str) -> PathState:
        kinds = list(map(list, self.kinds))
        kinds[stage][path] = kind
        return dataclasses.replace(self, kinds=tuple(map(tuple, kinds)))


def _smaller(options: tuple, value) -> object | None:
    lower = [o for o in options if o < value]
    return max(lower) if lower else None


def shrink_actions(space: SearchSpace, c: Choice, method: str) -> list[tuple[str, Choice]]:
    """Every one-step shrink of `c` the method allows, as (label, new choice)."""
    out = []
    for si in range(len(c.depths)):
        depth = _smaller(space.depths[si], c.depths[si])
        if depth is not None:
            depths = c.depths[:si] + (depth,) + c.depths[si + 1 :]
            exps = c.expansions[:si] + (c.expansions[si][:depth],) + c.expansions[si + 1 :]
            out.append(
                (
                    f"stage {si + 1}: depth {c.depths[si]} -> {depth}",
                    dataclasses.replace(c, depths=depths, expansions=exps),
                )
            )
        width = _smaller(space.widths[si], c.widths[si])
        if width is not None:
            widths = c.widths[:si] + (width,) + c.widths[si + 1 :]
            out.append((f"stage {si + 1}: width {c.widths[si]} -> {width}", dataclasses.replace(c, widths=widths)))
        if method == "efficientformerv2":
            for bj, e in enumerate(c.expansions[si]):
                smaller = _smaller(space.expansions, e)
                if smaller is not None:
                    stage = c.expansions[si][:bj] + (smaller,) + c.expansions[si][bj + 1 :]
                    exps = c.expansions[:si] + (stage,) + c.expansions[si + 1 :]
                    out.append(
                        (
                            f"stage {si + 1} block {bj + 1}: expansion {e:g} -> {smaller:g}",
                            dataclasses.replace(c, expansions=exps),
                        )
                    )
    if method == "efficientformer":
        extra = _smaller(space.extras, c.extra)
        if extra is not None:
            out.append((f"drop the first MB3D ({c.extra} -> {extra})", dataclasses.replace(c, extra=extra)))
    return out


def best_action(actions: list[tuple[str, object]], current, accuracy: Callable, gain: Callable):
    """The (label, point) with the smallest accuracy drop per unit of gain (ms saved, MES gained), among the
    actions that gain anything; None if none does."""
    best, best_score = None, None
    for label, cand in actions:
        g = gain(cand)
        if g <= 0:
            continue
        score = (max(accuracy(current) - accuracy(cand), 0.0) + 1e-9) / g  # ties favour the bigger gain
        if best_score is None or score < best_score:
            best, best_score = (label, cand), score
    return best


class _Memo:
    def __init__(self, fn: Callable[[Choice], float]):
        self.fn, self.cache = fn, {}

    def __call__(self, c: Choice) -> float:
        if c not in self.cache:
            self.cache[c] = float(self.fn(c))
        return self.cache[c]


def greedy_search(
    space: SearchSpace,
    method: str,
    accuracy: Callable[[Choice], float],
    latency: Callable[[Choice], float],
    target_ms: float,
    params: Callable[[Choice], float] | None = None,
    start: Choice | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """Shrink from `start` (default: the space's largest point) until `latency <= target_ms`.

    Returns the trace: the starting point, then one Step per accepted action; the last is the result.
    params(choice) (parameter count) is needed for the MES criterion of method "efficientformerv2".
    """

    if method not in ("efficientformer", "efficientformerv2"):
        raise LatvitError(f"greedy search method must be efficientformer or efficientformerv2, got '{method}'")
    if method == "efficientformerv2" and params is None:
        raise LatvitError("the MES search needs params(choice)")
    accuracy, latency = _Memo(accuracy), _Memo(latency)
    floor = latency(space.smallest())
    if floor > target_ms:
        raise LatvitError(
            f"target {target_ms:g} ms is below the smallest subnet of {space.name} ({floor:.2f} ms "
            "predicted): raise --target-ms or use a smaller --img-size"
        )

    def score_mes(c: Choice) -> float:
        return mes({"params": params(c), "latency_ms": latency(c)})

    current = start or space.largest()
    trace = [
        Step(
            "start",
            current,
            latency(current),
            accuracy(current),
            score_mes(current) if method == "efficientformerv2" else None,
        )
    ]
    if on_step:
        on_step(trace[0])
    while latency(current) > target_ms:
        if method == "efficientformer":
            gain = lambda cand, now=current: latency(now) - latency(cand)
        else:
            gain = lambda cand, now=current: score_mes(cand) - score_mes(now)
        best = best_action(shrink_actions(space, current, method), current, accuracy, gain)
        if best is None:
            raise LatvitError(
                f"no action lowers the latency below {latency(current):.2f} ms; target {target_ms:g} ms "
                "cannot be reached from this point"
            )
        current = best[1]
        step = Step(
            best[0],
            current,
            latency(current),
            accuracy(current),
            score_mes(current) if method == "efficientformerv2" else None,
        )
        trace.append(step)
        if on_step:
            on_step(step)
    return trace


# -- importance-driven slimming (EfficientFormer V1, Gumbel MetaPath supernet) ------------------------------
def slimming_actions(
    space: SearchSpace, state: PathState, importance: tuple[tuple[float, ...], ...]
) -> list[tuple[str, PathState]]:
    """The seed's three actions from `state`, each picked by the MetaPath importance scores (per stage, per
    path: (p_4D + p_3D) / p_I of the path's softmaxed alphas). A stage's importance is the mean score of its
    kept paths (the seed sums them; the mean does not single out the shallowest stage). Actions that
    would leave the space (depth or MB3D count below its smallest, width below its narrowest) are left out.
    """
    out = []
    depths, n3d = state.depths(), sum(k == "meta3d" for k in state.kinds[-1])
    removable = [
        (importance[si][pi], si, pi)
        for si, stage in enumerate(state.kinds)
        for pi, kind in enumerate(stage)
        if kind != "identity" and depths[si] > min(space.depths[si]) and (kind != "meta3d" or n3d > min(space.extras))
    ]
    if removable:
        score, si, pi = min(removable)
        out.append(
            (
                f"stage {si + 1} path {pi + 1} ({state.kinds[si][pi]}, importance {score:.3g}) -> Identity",
                state.replace(si, pi, "identity"),
            )
        )
    if n3d > min(space.extras):
        pi = state.kinds[-1].index("meta3d")
        out.append(
            (
                f"drop the first MB3D (stage {len(state.kinds)} path {pi + 1} -> MB4D)",
                state.replace(len(state.kinds) - 1, pi, "meta4d"),
            )
        )
    stage_scores = []
    for si, stage in enumerate(state.kinds):
        kept = [importance[si][pi] for pi, kind in enumerate(stage) if kind != "identity"]
        if kept and _smaller(space.widths[si], state.widths[si]) is not None:
            stage_scores.append((sum(kept) / len(kept), si))
    if stage_scores:
        score, si = min(stage_scores)
        width = _smaller(space.widths[si], state.widths[si])
        widths = state.widths[:si] + (width,) + state.widths[si + 1 :]
        out.append(
            (
                f"stage {si + 1} (importance {score:.3g}): width {state.widths[si]} -> {width}",
                dataclasses.replace(state, widths=widths),
            )
        )
    return out


def importance_slimming(
    space: SearchSpace,
    start: PathState,
    importance: tuple[tuple[float, ...], ...],
    accuracy: Callable[[PathState], float],
    latency: Callable[[PathState], float],
    target_ms: float,
    on_step: Callable[[Step], None] | None = None,
) -> list[Step]:
    """EfficientFormer's latency-driven slimming: from `start`, take the best of the three
    `slimming_actions` (smallest accuracy drop per ms saved) until `latency <= target_ms`.
    Returns the trace (start, then one Step per action; the last is the result)."""
    accuracy, latency = _Memo(accuracy), _Memo(latency)

    def step(action: str, s: PathState) -> Step:
        return Step(action, s.choice(), latency(s), accuracy(s), paths=s.kinds)

    current = start
    trace = [step("start", current)]
    if on_step:
        on_step(trace[0])
    while latency(current) > target_ms:
        best = best_action(
            slimming_actions(space, current, importance),
            current,
            accuracy,
            lambda cand, now=current: latency(now) - latency(cand),
        )
        if best is None:
            raise LatvitError(
                f"no slimming action lowers the latency below {latency(current):.2f} ms; target "
                f"{target_ms:g} ms cannot be reached: raise --target-ms"
            )
        current = best[1]
        trace.append(step(best[0], current))
        if on_step:
            on_step(trace[-1])
    return trace


# -- NSGA-II -------------------------------------------------------------------------------------------------
def choice_from_trial(space: SearchSpace, trial) -> Choice:
    """An optuna trial's parameters -> a Choice (categorical per stage width/depth, per block expansion)."""
    widths = tuple(trial.suggest_categorical(f"width{i}", list(w)) for i, w in enumerate(space.widths))
    depths = tuple(trial.suggest_categorical(f"depth{i}", list(d)) for i, d in enumerate(space.depths))
    # one expansion parameter per possible block, so every trial has the same parameter set
    exps = tuple(
        tuple(trial.suggest_categorical(f"exp{i}_{j}", list(space.expansions)) for j in range(max(d)))[: depths[i]]
        for i, d in enumerate(space.depths)
    )
    extra = trial.suggest_categorical("extra", list(space.extras))
    return Choice(widths, depths, exps, extra)


def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """(accuracy, latency): a is at least as accurate and as fast as b, and better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def pareto_search(
    space: SearchSpace,
    accuracy: Callable[[Choice], float],
    latency: Callable[[Choice], float],
    trials: int = 50,
    seed: int = 0,
    storage: str | None = None,
    study_name: str = "latvit",
    target_ms: float | None = None,
) -> tuple[list[Step], list[Step]]:
    """NSGA-II over `space`; returns (every trial, the Pareto front sorted by latency).

    target_ms: if given, points slower than it are kept out of the front (the search still explores them).
    storage: an optuna storage URL (e.g. sqlite:///search.db); a study of the same name is resumed.
    """
    try:
        import optuna
    except ImportError:
        raise missing_extra("optuna", "search") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    accuracy, latency = _Memo(accuracy), _Memo(latency)
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        storage=storage,
        study_name=study_name,
        load_if_exists=storage is not None,
        sampler=optuna.samplers.NSGAIISampler(seed=seed, population_size=min(20, max(trials, 2))),
    )
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
    front = [
        s
        for s in eligible
        if not any(dominates((o.accuracy, o.latency_ms), (s.accuracy, s.latency_ms)) for o in eligible)
    ]
    unique = {s.choice: s for s in sorted(front, key=lambda s: s.latency_ms)}
    return steps, list(unique.values())
