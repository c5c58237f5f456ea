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
3. Latency: the LUT predictor (`latvit.predict_latency`) on the table's runtime and device.
4. The chosen spec is written to OUTPUT/spec.json, with trace.json, pareto.json/png and result.json,
   where the result's latency is measured on the runtime next to the predicted one.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from latvit.errors import LatvitError
from latvit.search.algorithms import METHODS, PathState, Step, greedy_search, importance_slimming, pareto_search
from latvit.models.spaces import Choice, get_space
from latvit.search.supernet import SupernetTraining, train_gumbel, train_sandwich
from latvit.utils import atomic_write_text

METHOD_SPACE = {"efficientformer": "efficientformer", "efficientformerv2": "efficientformerv2"}
SUPERNETS = ("auto", "plain")


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

        from latvit.data import Subset, eval_transform, open_dataset

        tf = eval_transform(img_size, mean, std)
        val = Subset(open_dataset(data, "val"), eval_images, spread=True)  # every class, in a class-sorted set
        train = open_dataset(data, "train")
        self.val = [(torch.stack([tf(val[i][0]) for i in range(j, min(j + 100, len(val)))]),
                     torch.tensor([val[i][1] for i in range(j, min(j + 100, len(val)))]))
                    for j in range(0, len(val), 100)]
        step = max(1, len(train) // (32 * bn_batches))  # spread over the set
        self.calib = [torch.stack([tf(train[(k * 32 + i) * step % len(train)][0]) for i in range(32)])
                      for k in range(bn_batches)]

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
    from latvit.models import create_model
    from latvit.search.inherit import inherit_weights, recalibrate_bn

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
            raise LatvitError(f"{out} holds a search with other settings ({', '.join(changed)}), whose supernet and "
                              f"cached accuracies would be reused; use another --output")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(settings, indent=1) + "\n")


def train_supernet(space, img_size: int, req: SearchRequest, out: Path):
    """Train (or resume, or reuse) the supernet run in OUTPUT/supernet; returns the model with EMA weights."""
    from latvit.models import create_model
    from latvit.train import make_config, train

    run = out / "supernet"
    if (run / "model" / "spec.json").is_file() and (run / "done").is_file():
        return create_model(run / "model")
    spec = dataclasses.replace(space.spec(space.largest(), img_size), name=f"{space.name}_supernet")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "supernet.json", spec.to_json())
    config = make_config(model=str(run / "supernet.json"), data=req.data, output=str(run), epochs=req.supernet_epochs,
                         img_size=img_size, batch_size=req.batch_size, drop_path=0.1, seed=req.seed,
                         warmup_epochs=min(5.0, 0.2 * req.supernet_epochs),
                         train_subset=req.train_subset, val_subset=req.eval_images, num_workers=0,
                         threads=req.threads or 0, tensorboard=False)
    train(config, resume=(run / "last.pt").is_file())
    atomic_write_text(run / "done", "")
    return create_model(run / "model")


def write_pareto_plot(points: list[Step], front: list[Step], result: Step, path: Path, target_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latvit.utils import save_png

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


def search(req: SearchRequest) -> dict:
    """Run the search `req` describes; returns the result record (also written to OUTPUT/result.json)."""
    from latvit.latency.lut import load_table
    from latvit.latency.predictor import predict_latency
    from latvit.targets.protocol import default_threads, run_isolated
    from latvit.space.plan import spec_cost

    if req.method not in METHODS:
        raise LatvitError(f"unknown search method '{req.method}'; choose {', '.join(METHODS)}")
    if req.target_ms <= 0:
        raise LatvitError(f"--target-ms must be > 0, got {req.target_ms}")
    table = load_table(req.lut)
    table.check_device(runtime=req.runtime)
    space_name = table.meta.get("space")
    if space_name not in ("efficientformer", "efficientformerv2", "mobilevit", "trtvit"):
        raise LatvitError(f"{req.lut} was built for space '{space_name}', which cannot be searched; build one with "
                          "`latvit lut build --space efficientformer|efficientformerv2|mobilevit|trtvit`")
    if req.method in METHOD_SPACE and space_name != METHOD_SPACE[req.method]:
        raise LatvitError(f"--method {req.method} searches the {METHOD_SPACE[req.method]} space, but {req.lut} "
                          f"covers '{space_name}'; build a LUT with --space {METHOD_SPACE[req.method]}")
    space = get_space(space_name)
    img_size = req.img_size or table.meta.get("img_size") or space.img_size
    threads = req.threads or default_threads()
    out = Path(req.output)
    check_reused_output(out, {"space": space_name, "img_size": img_size, "data": req.data,
                              "supernet_epochs": req.supernet_epochs, "batch_size": req.batch_size,
                              "train_subset": req.train_subset, "seed": req.seed, "eval_images": req.eval_images,
                              "bn_batches": req.bn_batches})

    def latency(c: Choice) -> float:
        return predict_latency(space.spec(c, img_size), table).ms

    floor = latency(space.smallest())
    if floor > req.target_ms:  # before any training: an impossible target costs nothing
        raise LatvitError(f"target {req.target_ms:g} ms is below the smallest subnet of {space_name} ({floor:.2f} ms "
                          "predicted): raise --target-ms or use a smaller --img-size")
    kind = supernet_kind(req.method, space_name, req.supernet)
    start = time.perf_counter()
    import torch

    torch.set_num_threads(threads)
    training = SupernetTraining(data=req.data, epochs=req.supernet_epochs, batch_size=req.batch_size,
                                train_subset=req.train_subset, seed=req.seed, threads=threads, progress=req.progress)
    trace_path = out / "trace.json"
    steps: list[Step] = []

    def save_step(step: Step) -> None:
        steps.append(step)
        atomic_write_text(trace_path, json.dumps([s.as_dict() for s in steps], indent=1))

    def held_out(spec) -> HeldOut:
        return HeldOut(req.data, img_size, spec.mean, spec.std, req.eval_images, req.bn_batches)

    if kind == "gumbel":
        from latvit.search.inherit import recalibrate_bn

        run = out / "supernet_gumbel"
        supernet = train_gumbel(space, img_size, training, run)
        held = held_out(supernet.spec)
        importance = supernet.importance()
        atomic_write_text(run / "importance.json", json.dumps(
            {"importance": importance, "alpha_softmax": [[dict(zip(p.kinds, p.probabilities().tolist())) for p in stage]
                                                         for stage in supernet.paths]}, indent=1))
        accuracy = CachedAccuracy(lambda s: recalibrate_bn(supernet.subnet(s), held.calib), held, run / "accuracy.json",
                                  key=_state_key, choice_of_key=_state_choice)
        trace = importance_slimming(space, supernet.start_state(), importance, accuracy,
                                    lambda s: latency(s.choice()), req.target_ms, on_step=save_step)
        result = trace[-1]
    else:
        if kind == "sandwich":
            run = out / "supernet_sandwich"
            supernet = train_sandwich(space, img_size, training, run)
            accuracy = CachedAccuracy(supernet.subnet, held_out(supernet.spec), run / "accuracy.json")
        else:
            supernet = train_supernet(space, img_size, req, out)
            accuracy = plain_accuracy(supernet, space, img_size, held_out(supernet.spec), out / "accuracy.json")
        if req.method == "nsga2":
            points, front = pareto_search(space, accuracy, latency, trials=req.trials, seed=req.seed,
                                          storage=f"sqlite:///{(out / 'nsga2.db').resolve()}", target_ms=req.target_ms)
            if not front:
                raise LatvitError(f"no evaluated spec meets {req.target_ms:g} ms; raise --trials or --target-ms")
            result, trace = max(front, key=lambda s: s.accuracy), points
        else:
            trace = greedy_search(space, req.method, accuracy, latency, req.target_ms,
                                  params=lambda c: spec_cost(space.spec(c, img_size)).params, on_step=save_step)
            result = trace[-1]
    if req.method != "nsga2":
        from latvit.search.algorithms import dominates

        points = [Step("evaluated", c, latency(c), acc) for c, acc in accuracy.evaluated()]
        front = sorted((s for s in points if not any(
            dominates((o.accuracy, o.latency_ms), (s.accuracy, s.latency_ms)) for o in points)),
            key=lambda s: s.latency_ms)
    atomic_write_text(trace_path, json.dumps([s.as_dict() for s in trace], indent=1))
    spec = dataclasses.replace(space.spec(result.choice, img_size), name=f"{space_name}_{req.method}_{req.target_ms:g}ms")
    atomic_write_text(out / "spec.json", spec.to_json() + "\n")
    atomic_write_text(out / "pareto.json", json.dumps([s.as_dict() for s in front], indent=1))
    write_pareto_plot(points, front, result, out / "pareto.png", req.target_ms)
    record = {"method": req.method, "space": space_name, "supernet": kind, "img_size": img_size,
              "target_ms": req.target_ms, "predicted_ms": result.latency_ms, "accuracy_inherited": result.accuracy,
              "params_m": spec_cost(spec).params / 1e6, "search_seconds": time.perf_counter() - start,
              "runtime": table.meta.get("runtime"), "spec": str(out / "spec.json")}
    if req.measure:
        measured = run_isolated("latvit.latency.bench:measure_row", {
            "model": str(out / "spec.json"), "runtime": table.meta.get("runtime"), "img_size": img_size,
            "threads": int(table.meta.get("threads") or threads), "iters": 30, "min_seconds": 1.0}, timeout=600)
        record["measured_ms"] = measured.value["median_ms"] if measured.ok else None
        record["measure_error"] = "" if measured.ok else measured.error
    atomic_write_text(out / "result.json", json.dumps(record, indent=1))
    return record


def json_choice(key: str) -> Choice:
    d = json.loads(key)
    return Choice(tuple(d["widths"]), tuple(d["depths"]), tuple(tuple(e) for e in d["expansions"]), d["extra"])
