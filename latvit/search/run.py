"""`latvit search`: supernet -> accuracy by weight inheritance -> latency from the LUT -> search -> result.

1. The supernet (`--supernet auto`, the default, picks the one the method's paper uses):
   - `efficientformer`: the Gumbel MetaPath supernet (`latvit.search.supernet.GumbelSupernet`), trained
     in OUTPUT/supernet_gumbel; its learned MetaPath importance drives the slimming actions;
   - the `efficientformerv2` space (methods efficientformerv2 and nsga2): the slimmable supernet trained
     with the sandwich rule and switchable BatchNorm (`SandwichSupernet`), in OUTPUT/supernet_sandwich;
   - `plain` (and nsga2 on the other spaces): the space's largest spec trained with `latvit train` (drop
     path gives elastic depth), in OUTPUT/supernet; it resumes like any run.
2. A candidate's accuracy: top-1 on a held-out split with weights inherited from the supernet. Subnets of
   the plain and Gumbel supernets get their BatchNorm statistics re-estimated on a few training batches;
   sandwich subnets use their own width's statistics. Evaluations are cached (OUTPUT/accuracy.json, or
   accuracy.json inside the supernet's directory), so a killed search resumes without re-evaluating
   (NSGA-II also keeps its optuna study in OUTPUT/nsga2.db).
3. Latency: the LUT predictor (`latvit.predict_latency`) on the table's runtime and device, rescaled to
   the device's speed now: the reference workload is measured once at the start (`follow_device`) and
   every prediction of the search is multiplied by that one drift factor.
4. The result is the best point, not the last step: among every evaluated candidate predicted to meet
   the target, the most accurate, ties going to the faster (`best_point`). It is then measured on the
   device, interleaved with the reference (`select_result`); if it misses the target by more than
   `--tolerance`, the limit on predicted latency is lowered by the miss and the next candidate under it is
   taken (the trajectory is extended when no evaluated candidate is fast enough), up to
   MAX_FINAL_MEASUREMENTS measurements.
5. The chosen spec is written to OUTPUT/spec.json, with trace.json, pareto.json/png and result.json
   (predicted and measured latency, the candidates measured, the drift and how the result was chosen).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from latvit.data import Subset, eval_transform, open_dataset
from latvit.errors import LatvitError
from latvit.latency.lut import load_table
from latvit.latency.predictor import follow_device, no_reference_note, predict_latency
from latvit.models import create_model
from latvit.models.spaces import Choice, get_space
from latvit.search.algorithms import (
    METHODS,
    PathState,
    Step,
    dominates,
    greedy_search,
    importance_slimming,
    pareto_search,
)
from latvit.search.inherit import inherit_weights, recalibrate_bn
from latvit.search.supernet import SupernetTraining, train_gumbel, train_sandwich
from latvit.space.plan import spec_cost
from latvit.targets.protocol import default_threads, run_isolated
from latvit.train import make_config, train
from latvit.utils import atomic_write_text, save_png

METHOD_SPACE = {"efficientformer": "efficientformer", "efficientformerv2": "efficientformerv2"}
SUPERNETS = ("auto", "plain")
TOLERANCE = 0.05  # a result may measure this much above the target (+-5%: within a measurement's noise)
MAX_FINAL_MEASUREMENTS = 4
SELECTION = (
    "the most accurate evaluated candidate predicted to meet the target (ties: the faster), "
    "measured on the device interleaved with the reference"
)


@dataclass
class SearchRequest:
    method: str
    lut: str
    target_ms: float
    data: str
    output: str
    runtime: str | None = None  # default: the table's runtime
    img_size: int | None = None  # default: the table's size
    supernet_epochs: int = 1
    batch_size: int = 64
    train_subset: int | None = None
    eval_images: int = 500
    bn_batches: int = 8  # batches of 32 training images to re-estimate BatchNorm statistics per subnet
    trials: int = 40
    threads: int | None = None
    seed: int = 0
    measure: bool = True
    tolerance: float = TOLERANCE  # relative: how far above the target a measured result may be
    at_build: bool = False  # predict at the table's build speed instead of measuring the device's drift first
    target: str | None = None  # the device searched for (default: the table's target); the final check runs there
    supernet: str = "auto"  # auto: Gumbel (efficientformer) / sandwich (efficientformerv2 space); plain: drop path
    progress: bool = True


def supernet_kind(method: str, space_name: str, requested: str = "auto") -> str:
    """Which supernet a search trains: "gumbel", "sandwich" or "plain" (see the module docstring)."""
    if requested not in SUPERNETS:
        raise LatvitError(f"unknown --supernet '{requested}'; choose {' or '.join(SUPERNETS)}")
    if requested == "plain":
        return "plain"
    if method == "efficientformer":
        return "gumbel"
    return "sandwich" if space_name == "efficientformerv2" else "plain"


def _choice_key(c: Choice) -> str:
    return json.dumps(dataclasses.asdict(c), sort_keys=True)


class HeldOut:
    """The held-out images a subnet is scored on, and training batches to re-estimate BatchNorm with."""

    def __init__(self, data: str, img_size: int, mean, std, eval_images: int, bn_batches: int = 8):
        import torch

        tf = eval_transform(img_size, mean, std)
        val = Subset(open_dataset(data, "val"), eval_images, spread=True)  # every class, in a class-sorted set
        train = open_dataset(data, "train")
        self.val = [
            (
                torch.stack([tf(val[i][0]) for i in range(j, min(j + 100, len(val)))]),
                torch.tensor([val[i][1] for i in range(j, min(j + 100, len(val)))]),
            )
            for j in range(0, len(val), 100)
        ]
        step = max(1, len(train) // (32 * bn_batches))  # spread over the set
        self.calib = [
            torch.stack([tf(train[(k * 32 + i) * step % len(train)][0]) for i in range(32)]) for k in range(bn_batches)
        ]

    def top1(self, model) -> float:
        import torch

        with torch.inference_mode():
            correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in self.val)
        return 100.0 * correct / sum(len(y) for _, y in self.val)


class CachedAccuracy:
    """Top-1 (%) of `subnet(point)` (a model with inherited weights, ready to evaluate) on the held-out
    split; cached on disk after each evaluation under `key(point)`."""

    def __init__(self, subnet, held_out: HeldOut, cache: Path, key=None, choice_of_key=None):
        self.subnet, self.held_out, self.cache_path = subnet, held_out, cache
        self.key = key or _choice_key
        self.choice_of_key = choice_of_key or json_choice
        self.cache = json.loads(cache.read_text()) if cache.is_file() else {}

    def __call__(self, point) -> float:
        key = self.key(point)
        if key not in self.cache:
            self.cache[key] = self.held_out.top1(self.subnet(point))
            atomic_write_text(self.cache_path, json.dumps(self.cache))
        return self.cache[key]

    def evaluated(self) -> list[tuple[Choice, float]]:
        return [(self.choice_of_key(k), v) for k, v in self.cache.items()]


def _state_key(state: PathState) -> str:
    return json.dumps(dataclasses.asdict(state), sort_keys=True)


def _state_choice(key: str) -> Choice:
    d = json.loads(key)
    return PathState(tuple(map(tuple, d["kinds"])), tuple(d["widths"]), d["expansion"]).choice()


def plain_accuracy(supernet, space, img_size: int, held_out: HeldOut, cache: Path) -> CachedAccuracy:
    """Plain supernet: a subnet inherits the leading slices of its tensors, BatchNorm re-estimated."""

    def subnet(choice: Choice):
        sub = create_model(space.spec(choice, img_size), num_classes=supernet.num_classes)
        return recalibrate_bn(inherit_weights(supernet, sub), held_out.calib)

    return CachedAccuracy(subnet, held_out, cache)


def check_reused_output(out: Path, settings: dict) -> None:
    """OUTPUT keeps a search's supernets and cached subnet accuracies, so a rerun (another method or target)
    reuses them; that is only right for the same space, data and training / evaluation settings. Records
    `settings` in OUTPUT/settings.json on first use; a rerun with other settings is refused."""
    path = out / "settings.json"
    if path.is_file():
        before = json.loads(path.read_text())
        changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in settings.items() if before.get(k) != v]
        if changed:
            raise LatvitError(
                f"{out} holds a search with other settings ({', '.join(changed)}), whose supernet and "
                f"cached accuracies would be reused; use another --output"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def train_supernet(space, img_size: int, req: SearchRequest, out: Path):
    """Train (or resume, or reuse) the supernet run in OUTPUT/supernet; returns the model with EMA weights."""
    run = out / "supernet"
    if (run / "model" / "spec.json").is_file() and (run / "done").is_file():
        return create_model(run / "model")
    spec = dataclasses.replace(space.spec(space.largest(), img_size), name=f"{space.name}_supernet")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "supernet.json", spec.to_json())
    config = make_config(
        model=str(run / "supernet.json"),
        data=req.data,
        output=str(run),
        epochs=req.supernet_epochs,
        img_size=img_size,
        batch_size=req.batch_size,
        drop_path=0.1,
        seed=req.seed,
        warmup_epochs=min(5.0, 0.2 * req.supernet_epochs),
        train_subset=req.train_subset,
        val_subset=req.eval_images,
        num_workers=0,
        threads=req.threads or 0,
        tensorboard=False,
    )
    train(config, resume=(run / "last.pt").is_file())
    atomic_write_text(run / "done", "")
    return create_model(run / "model")


def write_pareto_plot(points: list[Step], front: list[Step], result: Step, path: Path, target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([p.latency_ms for p in points], [p.accuracy for p in points], s=12, c="lightgray", label="evaluated")
    ax.plot([p.latency_ms for p in front], [p.accuracy for p in front], "o-", ms=4, label="Pareto front")
    ax.scatter([result.latency_ms], [result.accuracy], marker="*", s=160, c="crimson", label="result", zorder=3)
    ax.axvline(target_ms, ls="--", c="gray", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel("predicted latency (ms, LUT)")
    ax.set_ylabel("top-1 with inherited weights (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def best_point(points: list[Step], limit_ms: float) -> Step | None:
    """Among `points` predicted at or under `limit_ms`: the most accurate, ties going to the faster; None
    when none is that fast."""
    meeting = [p for p in points if p.latency_ms <= limit_ms]
    return min(meeting, key=lambda p: (-p.accuracy, p.latency_ms)) if meeting else None


@dataclass
class Selection:
    """The chosen point, the measurements that chose it (one dict per measured candidate) and a note."""

    step: Step
    measured: list[dict]
    note: str


def select_result(
    points: Callable[[], list[Step]],
    target_ms: float,
    *,
    measure: Callable[[Step], dict] | None = None,
    extend: Callable[[float], None] | None = None,
    tolerance: float = TOLERANCE,
    max_measured: int = MAX_FINAL_MEASUREMENTS,
) -> Selection:
    """Choose the result among the evaluated `points()` (see the module docstring, point 4).

    measure(step) -> a record with `median_ms` (and what else the caller keeps), or with `median_ms` None
    and an `error`; None: choose on predictions alone. extend(limit_ms): evaluate further candidates of the
    trajectory until one is predicted at or under limit_ms (raising LatvitError when none can be), so that
    `points()` then has one. When every measured candidate misses, the fastest measured one is returned,
    and the note says so.
    """
    limit, tried = target_ms, []
    best = best_point(points(), limit)
    if best is None:
        raise LatvitError(f"no evaluated candidate is predicted to meet {target_ms:g} ms")
    if measure is None:
        return Selection(best, [], "chosen on predictions (not measured)")
    while best is not None and len(tried) < max_measured:
        record = measure(best) | {
            "predicted_ms": best.latency_ms,
            "accuracy": best.accuracy,
            "choice": dataclasses.asdict(best.choice),
        }
        tried.append((best, record))
        measured = [r for _, r in tried]
        if record.get("median_ms") is None:
            return Selection(best, measured, f"could not be measured ({record.get('error')}); chosen on predictions")
        if record["median_ms"] <= target_ms * (1 + tolerance):
            return Selection(
                best,
                measured,
                f"measured {record['median_ms']:.3f} ms: within {tolerance:.0%} of the target or under it",
            )
        # the predictor was optimistic by measured / predicted here: ask the next candidate for that margin
        limit = min(limit, best.latency_ms * target_ms / record["median_ms"]) * (1 - 1e-9)
        best = best_point(points(), limit)
        if best is None and extend is not None:
            try:
                extend(limit)
            except LatvitError:
                break
            best = best_point(points(), limit)
    step, record = min(tried, key=lambda t: t[1]["median_ms"])
    return Selection(
        step,
        [r for _, r in tried],
        f"misses the target: the fastest of {len(tried)} measured candidates took "
        f"{record['median_ms']:.3f}"
        " ms and no faster candidate was left; raise --target-ms or rebuild the table",
    )


def search(req: SearchRequest) -> dict:
    """Run the search `req` describes; returns the result record (also written to OUTPUT/result.json)."""
    if req.method not in METHODS:
        raise LatvitError(f"unknown search method '{req.method}'; choose {', '.join(METHODS)}")
    if req.target_ms <= 0:
        raise LatvitError(f"--target-ms must be > 0, got {req.target_ms}")
    if req.tolerance < 0:
        raise LatvitError(f"--tolerance must be >= 0 (a fraction, e.g. 0.05), got {req.tolerance}")
    table = load_table(req.lut)
    table.check_device(runtime=req.runtime, target=req.target)
    target = req.target or table.target
    space_name = table.meta.get("space")
    if space_name not in ("efficientformer", "efficientformerv2", "mobilevit", "trtvit"):
        raise LatvitError(
            f"{req.lut} was built for space '{space_name}', which cannot be searched; build one with "
            "`latvit lut build --space efficientformer|efficientformerv2|mobilevit|trtvit`"
        )
    if req.method in METHOD_SPACE and space_name != METHOD_SPACE[req.method]:
        raise LatvitError(
            f"--method {req.method} searches the {METHOD_SPACE[req.method]} space, but {req.lut} "
            f"covers '{space_name}'; build a LUT with --space {METHOD_SPACE[req.method]}"
        )
    space = get_space(space_name)
    img_size = req.img_size or table.meta.get("img_size") or space.img_size
    threads = req.threads or default_threads()
    out = Path(req.output)
    check_reused_output(
        out,
        {
            "space": space_name,
            "img_size": img_size,
            "data": req.data,
            "supernet_epochs": req.supernet_epochs,
            "batch_size": req.batch_size,
            "train_subset": req.train_subset,
            "seed": req.seed,
            "eval_images": req.eval_images,
            "bn_batches": req.bn_batches,
        },
    )

    drift = None if req.at_build else follow_device(table)  # the device now: one factor for the whole search
    factor = drift.factor if drift else 1.0

    def latency(c: Choice) -> float:
        return predict_latency(space.spec(c, img_size), table, now=False).ms * factor

    floor = latency(space.smallest())
    if floor > req.target_ms:  # before any training: an impossible target costs nothing
        raise LatvitError(
            f"target {req.target_ms:g} ms is below the smallest subnet of {space_name} ({floor:.2f} ms "
            "predicted): raise --target-ms or use a smaller --img-size"
        )
    kind = supernet_kind(req.method, space_name, req.supernet)
    start = time.perf_counter()
    torch.set_num_threads(threads)
    training = SupernetTraining(
        data=req.data,
        epochs=req.supernet_epochs,
        batch_size=req.batch_size,
        train_subset=req.train_subset,
        seed=req.seed,
        threads=threads,
        progress=req.progress,
    )
    trace_path = out / "trace.json"
    steps: list[Step] = []

    def save_step(step: Step) -> None:
        steps.append(step)
        atomic_write_text(trace_path, json.dumps([s.as_dict() for s in steps], indent=1))

    def held_out(spec) -> HeldOut:
        return HeldOut(req.data, img_size, spec.mean, spec.std, req.eval_images, req.bn_batches)

    def params(c: Choice) -> float:
        return spec_cost(space.spec(c, img_size)).params

    extend = None  # limit_ms -> None: more steps of the trajectory, until one is predicted under limit_ms
    if kind == "gumbel":
        run = out / "supernet_gumbel"
        supernet = train_gumbel(space, img_size, training, run)
        held = held_out(supernet.spec)
        importance = supernet.importance()
        atomic_write_text(
            run / "importance.json",
            json.dumps(
                {
                    "importance": importance,
                    "alpha_softmax": [
                        [dict(zip(p.kinds, p.probabilities().tolist())) for p in stage] for stage in supernet.paths
                    ],
                },
                indent=1,
            ),
        )
        accuracy = CachedAccuracy(
            lambda s: recalibrate_bn(supernet.subnet(s), held.calib),
            held,
            run / "accuracy.json",
            key=_state_key,
            choice_of_key=_state_choice,
        )
        trace = importance_slimming(
            space,
            supernet.start_state(),
            importance,
            accuracy,
            lambda s: latency(s.choice()),
            req.target_ms,
            on_step=save_step,
        )

        def extend(limit_ms: float) -> None:
            last = steps[-1]
            state = PathState(last.paths, last.choice.widths, supernet.start_state().expansion)
            importance_slimming(
                space,
                state,
                importance,
                accuracy,
                lambda s: latency(s.choice()),
                limit_ms,
                on_step=lambda step: None if step.action == "start" else save_step(step),
            )
    else:
        if kind == "sandwich":
            run = out / "supernet_sandwich"
            supernet = train_sandwich(space, img_size, training, run)
            accuracy = CachedAccuracy(supernet.subnet, held_out(supernet.spec), run / "accuracy.json")
        else:
            supernet = train_supernet(space, img_size, req, out)
            accuracy = plain_accuracy(supernet, space, img_size, held_out(supernet.spec), out / "accuracy.json")
        if req.method == "nsga2":
            trials, front = pareto_search(
                space,
                accuracy,
                latency,
                trials=req.trials,
                seed=req.seed,
                storage=f"sqlite:///{(out / 'nsga2.db').resolve()}",
                target_ms=req.target_ms,
            )
            if not front:
                raise LatvitError(f"no evaluated spec meets {req.target_ms:g} ms; raise --trials or --target-ms")
            trace = trials
        else:
            trace = greedy_search(space, req.method, accuracy, latency, req.target_ms, params=params, on_step=save_step)

            def extend(limit_ms: float) -> None:
                greedy_search(
                    space,
                    req.method,
                    accuracy,
                    latency,
                    limit_ms,
                    params=params,
                    start=steps[-1].choice,
                    on_step=lambda step: None if step.action == "start" else save_step(step),
                )

    def evaluated() -> list[Step]:
        if req.method == "nsga2":
            return trials
        return [Step("evaluated", c, latency(c), acc) for c, acc in accuracy.evaluated()]

    def measure(step: Step) -> dict:
        """The candidate on the device now, interleaved with the reference, in a child process."""
        path = out / "candidates" / f"{_choice_digest(step.choice)}.json"
        spec = dataclasses.replace(space.spec(step.choice, img_size), name=path.stem)
        atomic_write_text(path, spec.to_json() + "\n")
        table_threads = int(table.meta.get("threads") or threads)
        measured = run_isolated(
            "latvit.latency.measure:measure_spec_now",
            {
                "spec": str(path),
                "runtime": table.meta["runtime"],
                "threads": table_threads,
                "deploy": bool(table.meta.get("deploy", True)),
                "target": target,
            },
            timeout=600,
            threads=table_threads,
        )
        return measured.value if measured.ok else {"median_ms": None, "error": measured.error}

    selection = select_result(
        evaluated, req.target_ms, measure=measure if req.measure else None, extend=extend, tolerance=req.tolerance
    )
    result = selection.step
    points = evaluated()
    front = sorted(
        (
            s
            for s in points
            if not any(dominates((o.accuracy, o.latency_ms), (s.accuracy, s.latency_ms)) for o in points)
        ),
        key=lambda s: s.latency_ms,
    )
    if req.method != "nsga2":
        trace = steps
    atomic_write_text(trace_path, json.dumps([s.as_dict() for s in trace], indent=1))
    name = f"{space_name}_{req.method}_{req.target_ms:g}ms"
    spec = dataclasses.replace(space.spec(result.choice, img_size), name=name)
    atomic_write_text(out / "spec.json", spec.to_json() + "\n")
    atomic_write_text(out / "pareto.json", json.dumps([s.as_dict() for s in front], indent=1))
    write_pareto_plot(points, front, result, out / "pareto.png", req.target_ms)
    chosen = next((m for m in selection.measured[::-1] if m["choice"] == dataclasses.asdict(result.choice)), {})
    record = {
        "method": req.method,
        "space": space_name,
        "supernet": kind,
        "img_size": img_size,
        "target_ms": req.target_ms,
        "predicted_ms": result.latency_ms,
        "accuracy_inherited": result.accuracy,
        "params_m": spec_cost(spec).params / 1e6,
        "search_seconds": time.perf_counter() - start,
        "runtime": table.meta.get("runtime"),
        "spec": str(out / "spec.json"),
        "selection": SELECTION if req.measure else SELECTION.split(", measured")[0],
        "selection_note": selection.note,
        "trajectory_end_ms": steps[-1].latency_ms if steps else None,
        "drift": drift.describe()
        if drift
        else "predicted at the table's build speed"
        if req.at_build
        else no_reference_note(table),
        "drift_factor": factor,
        "measured_ms": chosen.get("median_ms"),
        "measured_ci_rel": chosen.get("ci_rel"),
        "measured_ref_ms": chosen.get("ref_ms"),
        "measure_error": chosen.get("error", ""),
        "candidates_measured": selection.measured,
    }
    atomic_write_text(out / "result.json", json.dumps(record, indent=1))
    return record


def _choice_digest(choice: Choice) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(choice), sort_keys=True).encode()).hexdigest()[:12]


def json_choice(key: str) -> Choice:
    d = json.loads(key)
    return Choice(tuple(d["widths"]), tuple(d["depths"]), tuple(tuple(e) for e in d["expansions"]), d["extra"])
