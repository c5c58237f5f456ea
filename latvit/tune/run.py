"""`tune_model`: the fastest deployable form of a model on a target within a top-1 budget.

    result = tune_model("runs/s/best", "fashion-mnist", max_drop=0.5, output="tuned/")
    result["winner"]["key"], result["recipe"]       # e.g. "openvino/int8-ac/tome=0/threads=2", "latvit quantize ..."

For every candidate (`latvit.tune.candidates`): export once (`latvit.pipeline.prepare.build_artifact`, or the
runtime's quantizer), check the artifact's logits against PyTorch, time it on the target interleaved with the
fp32 baseline (the drift of a shared host cancels in the per-round ratio), and only when it is faster than the
best accepted candidate so far, measure its top-1 on the same held-out images as every other candidate. A
candidate whose top-1 drop (points, against the fp32 PyTorch model) exceeds `max_drop` is rejected.

Output directory: `tune.json` (every candidate, the Pareto front, what each axis gave), `recipe.txt` (one
command line that reproduces the winner) and the winner's artifact (`model.onnx`, `model.xml`+`.bin`, ...).
It is staged in `.OUT.tune-partial` beside OUT, where results are written as they arrive; a rerun with the
same settings skips the candidates measured there (or in a finished OUT), and OUT appears only when complete.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from latvit.data import Subset, eval_transform, open_dataset
from latvit.deploy.quantize import calibration_batches, quantize, validation_batches
from latvit.errors import LatvitError, first_line
from latvit.pipeline.export import FORMATS
from latvit.pipeline.prepare import PreparedModel, build_artifact, prepare_model
from latvit.pipeline.resolve import check_model_ref, model_label
from latvit.runtimes import get_runtime
from latvit.runtimes.base import Artifact
from latvit.targets import LocalTarget, Protocol, TimingJob, get_target
from latvit.targets.protocol import (
    NETWORK_SESSIONS,
    default_threads,
    machine_info,
    measure_interleaved,
    median_ratio,
    set_threads,
)
from latvit.targets.schedule import time_interleaved
from latvit.train.evaluate import eval_crop_pct
from latvit.tune.candidates import Candidate, candidate_axes, enumerate_candidates
from latvit.utils import atomic_write_text, check_writable, progress_bar

# the default timing: short calls, several interleaved rounds (a ratio's spread shows over the rounds)
DEFAULT_PROTOCOL = Protocol(warmup=5, iters=20, min_seconds=0.5, max_seconds=10.0, sessions=NETWORK_SESSIONS)
DEFAULT_ROUNDS = 5
FORMAT_OF = {runtime: fmt for fmt, runtime in FORMATS.items()}


def tune_model(
    model: str | Path | nn.Module,
    data: str,
    max_drop: float,
    *,
    target: str = "local",
    runtimes=None,
    precisions=None,
    tomes=None,
    threads=None,
    batch: int = 1,
    budget_minutes: float = 15.0,
    output: str | Path,
    eval_images: int = 500,
    calib_images: int = 128,
    img_size: int | None = None,
    protocol: Protocol = DEFAULT_PROTOCOL,
    rounds: int = DEFAULT_ROUNDS,
    progress: bool = False,
    log=print,
) -> dict[str, Any]:
    """Try the candidates for `model` on `target` and write the winner to `output` (see the module docstring).

    max_drop: top-1 points the winner may lose against the fp32 model on `eval_images` held-out images of
    `data`'s validation split. runtimes / precisions / tomes / threads restrict the axes (None: all that run
    here). budget_minutes: a candidate is skipped ("budget") once the budget is spent, or when the last one
    like it took longer than the budget has left (a run ends near its budget instead of starting an
    accuracy-controlled quantization in its last minute). protocol / rounds: how each
    candidate is timed against the baseline. progress: a progress bar; log: where one line per candidate goes.
    Returns tune.json's content.
    """
    started = time.monotonic()
    out = Path(output)
    _check_arguments(model, max_drop, batch, budget_minutes, protocol, rounds, out)
    prepared = {"0": prepare_model(model, img_size=img_size, batch=batch)}
    base = prepared["0"]
    size, mean, std = base.img_size, base.resolved.mean, base.resolved.std
    crop_pct = eval_crop_pct(model)  # held-out and accuracy-control images alike
    held_out = eval_batches(data, base.logits.shape[-1], size, mean, std, eval_images, batch, crop_pct)
    cores = default_threads()
    axes = candidate_axes(
        base.model, cores=cores, runtimes=runtimes, precisions=precisions, tomes=tomes, threads=threads
    )
    if not axes.runtimes:
        raise LatvitError(
            f"no runtime can run {model_label(model)} here: " + "; ".join(f"{k}: {v}" for k, v in axes.skipped.items())
        )
    candidates = enumerate_candidates(axes)
    baseline = _baseline(candidates, axes)
    config = {
        "model": str(model) if not isinstance(model, nn.Module) else model_label(model),
        "data": data,
        "batch": batch,
        "img_size": size,
        "eval_images": len(held_out) * batch,
        "max_drop": max_drop,
        "target": target,
        "baseline": baseline.key,
    }
    staging = out.parent / f".{out.name}.tune-partial"
    records = _resumable_records(config, staging, out, log)
    reference_top1 = 100.0 * top1(torch_runner(base.model), held_out)

    tgt = get_target(target)
    with tempfile.TemporaryDirectory(prefix="latvit-tune-") as tmp:
        builder = _Builder(
            model, prepared, Path(tmp), data, calib_images, max_drop, size, mean, std, crop_pct, batch, img_size
        )
        todo = [c for c in candidates if c.key not in records]
        base_runner = None
        if todo:
            base_runner = _measure_baseline(
                builder,
                baseline,
                tgt,
                protocol,
                rounds,
                budget_minutes,
                started,
                records,
                config,
                staging,
                reference_top1,
                held_out,
            )
        took: dict[tuple[str, bool], float] = {}  # seconds the last candidate of a kind took (below)
        with progress_bar(progress, len(todo), "tune") as advance:
            for c in todo:
                advance(c.key)
                if c.key in records:  # the baseline, measured above
                    continue
                now = time.monotonic()
                left = 60 * budget_minutes - (now - started)
                # what one like it took (same precision, artifact built or not): building dominates (an
                # accuracy-controlled int8 of EfficientFormer-L1 at 224 px takes 3-4 minutes here, its
                # other thread counts seconds). The first accuracy-controlled build is expected to take
                # at least what a plain int8 build took: it quantizes, then evaluates (MobileViT-S at 256:
                # plain 87 s, NNCF's accuracy control 8+ minutes)
                kind = (c.precision, c.build_key in builder.built)
                expected, like = took.get(kind), "one like it"
                if expected is None and c.precision == "int8-ac":
                    expected, like = took.get(("int8", kind[1])), "a plain int8 one"
                slow_plain = _plain_int8_too_slow(c, records)
                if slow_plain:  # pruned before its build: accuracy control costs minutes and gains no speed
                    records[c.key] = {**c.as_dict(), "key": c.key, "status": "pruned", "why": slow_plain}
                elif left <= 0 or (expected is not None and expected > left):
                    why = f"budget of {budget_minutes:g} min spent"
                    if left > 0:
                        why = f"budget: {like} took {expected:.0f} s, {left:.0f} s of {budget_minutes:g} min left"
                    records[c.key] = {**c.as_dict(), "key": c.key, "status": "skipped", "why": why}
                else:
                    records[c.key] = _try_candidate(
                        c,
                        builder,
                        baseline,
                        base_runner,
                        records,
                        tgt,
                        protocol,
                        rounds,
                        reference_top1,
                        held_out,
                        max_drop,
                    )
                    took[kind] = time.monotonic() - now
                _write_partial(staging, config, records)
                log(_one_line(records[c.key]))
            advance(None)
        result = _summary(config, records, axes, reference_top1, baseline, cores)
        _finish(staging, out, result, builder, records, log)
    return result


# -- input checks -------------------------------------------------------------------------------------------
def _check_arguments(model, max_drop, batch, budget_minutes, protocol, rounds, out: Path) -> None:
    """One-line errors before any work: a bad max-drop, batch, budget or output, an unknown model name."""
    if max_drop < 0:
        raise LatvitError(f"--max-drop is the top-1 points the winner may lose: give a number >= 0, got {max_drop:g}")
    if batch < 1:
        raise LatvitError(f"--batch must be >= 1, got {batch}")
    if rounds < 1:
        raise LatvitError(f"rounds must be >= 1, got {rounds}")
    needed = 2 * rounds * protocol.min_seconds  # the baseline and one candidate, timed interleaved
    if budget_minutes * 60 < needed:
        raise LatvitError(
            f"--budget-minutes {budget_minutes:g} is too small to measure even the baseline "
            f"({rounds} rounds of {protocol.min_seconds:g} s each for two runners: "
            f"at least {needed / 60:.2f} min); give more"
        )
    if not isinstance(model, nn.Module):
        check_model_ref(str(model))
    check_writable(out, directory=True)


def eval_batches(
    data: str, num_classes: int, size: int, mean, std, count: int, batch: int, crop_pct: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`count` images of `data`'s validation split spread over it, transformed for evaluation, as
    (images (batch, 3, S, S), labels (batch,)) numpy pairs: the same images for every candidate."""
    dataset = open_dataset(data, "val", synthetic_classes=num_classes)
    if len(dataset.classes) != num_classes:
        raise LatvitError(
            f"{data} has {len(dataset.classes)} classes but the model's head has {num_classes}: "
            f"give the dataset it was trained on"
        )
    if count < batch:
        raise LatvitError(f"evaluation needs at least one batch of {batch} images, got {count}")
    subset = Subset(dataset, count, spread=True)
    transform = eval_transform(size, mean, std, crop_pct=crop_pct)
    items = [subset[i] for i in range(len(subset) - len(subset) % batch)]
    if not items:
        raise LatvitError(f"{data}'s validation split has fewer than {batch} images")
    images = torch.stack([transform(img) for img, _ in items]).numpy()
    labels = np.array([int(label) for _, label in items])
    return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(items), batch)]


def top1(runner, batches) -> float:
    """Fraction of `batches`' images whose argmax logit is the label."""
    hits = sum(int((np.asarray(runner(x)).reshape(len(y), -1).argmax(-1) == y).sum()) for x, y in batches)
    return hits / sum(len(y) for _, y in batches)


def torch_runner(model: nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run


def _baseline(candidates: list[Candidate], axes) -> Candidate:
    """The reference candidate: fp32, unmerged, the most threads, on ort (the ordinary deployment) where it
    runs, else the first runtime."""
    runtime = "ort" if "ort" in axes.runtimes else axes.runtimes[0]
    return Candidate(runtime, "fp32", "0", max(axes.threads))


# -- building: each (runtime, precision, tome) exported once ------------------------------------------------
class _Builder:
    """Exports or quantizes each candidate's artifact once (candidates that differ only in threads share it)
    and loads runners for it at any thread count."""

    def __init__(
        self,
        model,
        prepared: dict[str, PreparedModel],
        workdir: Path,
        data: str,
        calib_images: int,
        max_drop: float,
        size: int,
        mean,
        std,
        crop_pct: float,
        batch: int,
        img_size,
    ):
        self.model, self.prepared, self.workdir, self.data = model, prepared, workdir, data
        self.calib_images, self.max_drop, self.size, self.mean, self.std = calib_images, max_drop, size, mean, std
        self.crop_pct, self.batch, self.img_size = crop_pct, batch, img_size
        self.built: dict[tuple, tuple[Path | None, float | None]] = {}
        self._calibration = None

    def prepared_for(self, tome: str) -> PreparedModel:
        if tome not in self.prepared:
            self.prepared[tome] = prepare_model(self.model, img_size=self.img_size, batch=self.batch, tome=tome)
        return self.prepared[tome]

    def calibration(self) -> list[np.ndarray]:
        if self._calibration is None:  # the images and crop `latvit quantize` uses, so the recipe reproduces
            self._calibration = calibration_batches(
                self.data, self.size, self.mean, self.std, count=self.calib_images, batch=self.batch
            )
        return self._calibration

    def runner(self, c: Candidate):
        """(runner at c.threads, export error against PyTorch, Artifact) for candidate `c`; builds on first
        use. The Artifact (path None for in-process runtimes) is what a remote target loads."""
        p = self.prepared_for(c.tome)
        folder = self.workdir / "_".join(c.build_key).replace("/", "-")
        rt = get_runtime(c.run_runtime)
        if c.precision in ("fp32", "bf16"):
            if rt.suffix is None or c.build_key not in self.built:
                built = build_artifact(p.model, p.example, rt, folder, threads=c.threads, expected=p.logits)
                self.built[c.build_key] = (built.artifact.path, built.export_abs_diff)
                return built.runner, built.export_abs_diff, built.artifact
        elif c.build_key not in self.built:
            validation = None
            if c.precision == "int8-ac":
                # judged on images prepared as the model is evaluated (as `latvit quantize --max-drop` does); the
                # calibration images keep quantize's 0.875 crop (calibration_batches says why)
                validation = validation_batches(
                    self.data, self.size, self.mean, self.std, batch=self.batch, crop_pct=self.crop_pct
                )
            path = quantize(
                p.model,
                c.runtime,
                self.calibration(),
                folder / f"model{rt.suffix}",
                max_drop=self.max_drop if c.precision == "int8-ac" else None,
                validation=validation,
            )
            self.built[c.build_key] = (path, None)
        path, diff = self.built[c.build_key]
        run = rt.load(path, p.example, c.threads)
        if diff is None:
            out = np.asarray(run(p.example.numpy()), dtype=np.float32).reshape(p.logits.shape)
            diff = float(np.abs(out - p.logits).max())
            self.built[c.build_key] = (path, diff)
        return run, diff, Artifact(c.run_runtime, path, tuple(p.example.shape))


# -- measuring ------------------------------------------------------------------------------------------------
def _timed(runner, threads: int, batch_shape, artifact: Artifact, sessions: int) -> list:
    """No-argument calls of `runner` and of further loads of `artifact` (`sessions` in all, as the local
    target loads them; one for the in-process runtimes), on a fixed input at `threads`: the loads are
    timed in turn, as every whole-network measurement is. torch's pool is global: eager and inductor take
    the count per call, the file runtimes baked it into their session."""
    x = np.random.default_rng(0).standard_normal(batch_shape, dtype=np.float32)
    loads = LocalTarget.sessions(TimingJob(artifact, threads, Protocol(sessions=sessions), runner))

    def call(load):
        def run():
            set_threads(threads)
            return load(x)

        return run

    return [call(load) for load in loads]


def _measure_pair(tgt, base: tuple, cand: tuple, protocol: Protocol, rounds: int) -> tuple[list[float], list[float]]:
    """Per-round median ms of the baseline and the candidate, timed alternately in each round. `base` and
    `cand` are (runner, threads, artifact). Local: in this process; other targets: a TimingJob per call."""
    if getattr(tgt, "kind", "local") == "local":
        medians = measure_interleaved(
            {"base": base[0], "cand": cand[0]}, rounds, alternate=True, **{**protocol.as_kwargs(), "target_rel": None}
        )  # rounds carry the spread
        return medians["base"], medians["cand"]
    for _, _, artifact in (base, cand):
        if artifact.path is None:
            raise LatvitError(
                f"{artifact.runtime} runs in-process only: tune it on the local target or leave it out of --runtimes"
            )
    times = time_interleaved(
        tgt, {"base": TimingJob(base[2], base[1], protocol), "cand": TimingJob(cand[2], cand[1], protocol)}, rounds
    )
    return times["base"], times["cand"]


def _measure_baseline(
    builder,
    baseline,
    tgt,
    protocol,
    rounds,
    budget_minutes,
    started,
    records,
    config,
    staging,
    reference_top1,
    held_out,
):
    """Build, time and evaluate the baseline (it sets the speed-ups); a failure or a spent budget is the
    user's error, before any output exists."""
    try:
        runner, diff, artifact = builder.runner(baseline)
    except Exception as e:  # noqa: BLE001 - any runtime's failure: the model cannot be tuned here
        raise LatvitError(
            f"the baseline {baseline.key} cannot run this model ({first_line(e)}); choose other --runtimes"
        ) from None
    shape = builder.prepared["0"].example.shape
    run = _timed(runner, baseline.threads, shape, artifact, protocol.sessions)
    ms, _ = _measure_pair(tgt, (run, baseline.threads, artifact), (run, baseline.threads, artifact), protocol, rounds)
    if time.monotonic() - started > 60 * budget_minutes:
        raise LatvitError(
            f"--budget-minutes {budget_minutes:g} is too small: measuring the baseline alone took "
            f"{time.monotonic() - started:.0f} s; give more"
        )
    accuracy = 100.0 * top1(runner, held_out)
    records[baseline.key] = {
        **baseline.as_dict(),
        "key": baseline.key,
        "latency_ms": statistics.median(ms),
        "spread": _spread([1.0] * len(ms)),
        "speedup": 1.0,
        "top1": accuracy,
        "drop": reference_top1 - accuracy,
        "export_abs_diff": diff,
        "status": "baseline",
    }
    _write_partial(staging, config, records)
    return run, artifact


def _spread(ratios: list[float]) -> float:
    """Relative spread of the per-round ratios: (max - min) / median (0 for one round)."""
    return (max(ratios) - min(ratios)) / statistics.median(ratios) if len(ratios) > 1 else 0.0


def _try_candidate(
    c: Candidate,
    builder,
    baseline: Candidate,
    base_run,
    records,
    tgt,
    protocol,
    rounds,
    reference_top1,
    held_out,
    max_drop,
) -> dict[str, Any]:
    """One candidate's record: build, check, time against the baseline, and evaluate when it could win."""
    record: dict[str, Any] = {**c.as_dict(), "key": c.key}
    try:
        runner, diff, artifact = builder.runner(c)
    except Exception as e:  # noqa: BLE001 - a runtime that cannot export this model is a result, not a crash
        return {**record, "status": "failed", "why": f"export: {first_line(e)}"}
    record["export_abs_diff"] = diff
    shape = builder.prepared_for(c.tome).example.shape
    base_ms, ms = _measure_pair(
        tgt,
        (base_run[0], baseline.threads, base_run[1]),
        (_timed(runner, c.threads, shape, artifact, protocol.sessions), c.threads, artifact),
        protocol,
        rounds,
    )
    ratios = [b / m for b, m in zip(base_ms, ms)]
    record.update(
        latency_ms=statistics.median(ms),
        baseline_ms=statistics.median(base_ms),
        speedup=median_ratio(base_ms, ms),
        spread=_spread(ratios),
    )
    best = _best_speedup(records)
    if record["speedup"] <= best:
        return {
            **record,
            "status": "pruned",
            "why": f"x{record['speedup']:.2f} is not faster than the best "
            f"accepted so far (x{best:.2f}); top-1 not measured",
        }
    accuracy = 100.0 * top1(runner, held_out)
    record.update(top1=accuracy, drop=reference_top1 - accuracy)
    if record["drop"] > max_drop:
        return {
            **record,
            "status": "rejected",
            "why": f"top-1 drop {record['drop']:.2f} points > --max-drop {max_drop:g}",
        }
    return {**record, "status": "accepted"}


def _best_speedup(records: dict) -> float:
    """The speed-up over the baseline of the best candidate accepted so far (the baseline's: 1)."""
    return max((r["speedup"] for r in records.values() if r.get("status") in ("accepted", "baseline")), default=0.0)


def _plain_int8_speedup(c: Candidate, records: dict) -> float | None:
    """The measured speed-up of plain int8 on `c`'s runtime, merging and threads (None if not timed)."""
    return records.get(Candidate(c.runtime, "int8", c.tome, c.threads).key, {}).get("speedup")


def _plain_int8_too_slow(c: Candidate, records: dict) -> str | None:
    """Why an int8-ac candidate cannot win, or None: accuracy control only returns operations to float, so
    it is never faster than plain int8 on the same runtime, merging and threads; when that one was timed
    and was not faster than the best accepted so far, building this one (minutes) cannot pay."""
    if c.precision != "int8-ac":
        return None
    plain = _plain_int8_speedup(c, records)
    best = _best_speedup(records)
    if plain is None or plain > best:
        return None
    return (
        f"plain int8 here was x{plain:.2f}, not faster than the best accepted so far (x{best:.2f}), and "
        f"accuracy control only returns operations to float; not built"
    )


def _one_line(r: dict) -> str:
    speed = f" x{r['speedup']:.2f} ({r['latency_ms']:.2f} ms)" if "speedup" in r else ""
    top = f", top-1 {r['top1']:.2f} (drop {r['drop']:+.2f})" if "top1" in r else ""
    why = f": {r['why']}" if r.get("why") else ""
    return f"{r['key']}{speed}{top} {r['status']}{why}"


# -- summary --------------------------------------------------------------------------------------------------
def pareto_front(records: dict[str, dict]) -> list[str]:
    """Keys of the candidates with a measured top-1 that no other beats on both speed-up over the baseline
    and top-1 drop, fastest first. Speed-ups, not raw latencies: each was measured interleaved with the
    baseline, so a shared host's drift between candidates cancels."""
    points = [r for r in records.values() if "top1" in r and "speedup" in r]
    front = [
        r
        for r in points
        if not any(
            o["speedup"] >= r["speedup"]
            and o["drop"] <= r["drop"]
            and (o["speedup"] > r["speedup"] or o["drop"] < r["drop"])
            for o in points
        )
    ]
    return [r["key"] for r in sorted(front, key=lambda r: -r["speedup"])]


def axis_gains(records: dict[str, dict], baseline: Candidate, winner: Candidate) -> dict[str, float | None]:
    """What each axis gave on the way from the baseline to the winner, changing one axis at a time in the
    order runtime, precision, merging, threads: the ratio of the measured speed-ups before and after each
    change (None where a step's candidate was not measured). An accuracy-controlled step that was pruned
    before its build stands in with plain int8's speed-up there (the same int8 graph, before any operation
    went back to float)."""
    steps = [
        ("runtime", Candidate(winner.runtime, "fp32", "0", baseline.threads)),
        ("precision", Candidate(winner.runtime, winner.precision, "0", baseline.threads)),
        ("merging", Candidate(winner.runtime, winner.precision, winner.tome, baseline.threads)),
        ("threads", winner),
    ]
    gains, before = {}, records.get(baseline.key, {}).get("speedup")
    for axis, step in steps:
        after = records.get(step.key, {}).get("speedup")
        if after is None and step.precision == "int8-ac":
            after = _plain_int8_speedup(step, records)
        gains[axis] = after / before if after and before else None
        before = after
    return gains


def recipe(config: dict, winner: Candidate, artifact: str | None) -> str:
    """One command line of latvit's other commands that writes the winner's artifact."""
    model, out = config["model"], artifact or "model"
    threads = f"  # run with {winner.threads} threads"
    if winner.precision.startswith("int8"):
        drop = f" --max-drop {config['max_drop']:g}" if winner.precision == "int8-ac" else ""
        tome = f" --tome {winner.tome}" if winner.tome != "0" else ""
        return (
            f"latvit quantize {model} --runtime {winner.runtime} --calib {config['data']} -o {out}{tome}{drop}{threads}"
        )
    if winner.runtime not in FORMAT_OF:  # eager / inductor: the PyTorch model is the deliverable
        return f"latvit bench {model} --runtimes {winner.runtime} --threads {winner.threads} --tome {winner.tome}"
    tome = f" --tome {winner.tome}" if winner.tome != "0" else ""
    bf16 = " (load with runtime openvino_bf16: INFERENCE_PRECISION_HINT bf16)" if winner.precision == "bf16" else ""
    return (
        f"latvit export {model} --format {FORMAT_OF[winner.runtime]} -o {out} --batch {config['batch']}{tome}"
        f"{threads}{bf16}"
    )


def _summary(config, records, axes, reference_top1, baseline: Candidate, cores: int) -> dict[str, Any]:
    accepted = [r for r in records.values() if r.get("status") in ("accepted", "baseline")]
    best = max(accepted, key=lambda r: r["speedup"], default=None)
    winner = Candidate(best["runtime"], best["precision"], best["tome"], best["threads"]) if best else None
    return {
        "config": config,
        "machine": machine_info(cores),
        "reference_top1": reference_top1,
        "axes": {
            "runtimes": list(axes.runtimes),
            "precisions": list(axes.precisions),
            "tomes": list(axes.tomes),
            "threads": list(axes.threads),
            "skipped": axes.skipped,
        },
        "winner": best,
        "pareto": pareto_front(records),
        "axis_gains": axis_gains(records, baseline, winner) if winner else {},
        "candidates": list(records.values()),
    }


# -- output: staged, resumable -----------------------------------------------------------------------------
def _resumable_records(config: dict, staging: Path, out: Path, log) -> dict[str, dict]:
    """Candidate records of an earlier run with the same config: the staging dir of an interrupted run,
    else a finished output; {} when neither matches."""
    for path in (staging / "tune.json", out / "tune.json"):
        if path.is_file():
            try:
                earlier = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if earlier.get("config") == config:
                records = {r["key"]: r for r in earlier.get("candidates", []) if r.get("status") != "skipped"}
                log(f"resuming: {len(records)} candidates measured in {path.parent}")
                return records
            log(f"{path}: other settings; measuring again")
    return {}


def _write_partial(staging: Path, config: dict, records: dict) -> None:
    atomic_write_text(
        staging / "tune.json", json.dumps({"config": config, "candidates": list(records.values())}, indent=1)
    )


def _finish(staging: Path, out: Path, result: dict, builder: _Builder, records: dict, log) -> None:
    """Write the winner's artifact, tune.json and recipe.txt into the staging dir and rename it to `out`."""
    best = result["winner"]
    artifact = None
    staging.mkdir(parents=True, exist_ok=True)  # a rerun that measured nothing new starts it here
    if best is not None:
        winner = Candidate(best["runtime"], best["precision"], best["tome"], best["threads"])
        if get_runtime(winner.run_runtime).suffix is not None:
            builder.runner(winner)  # built already unless every candidate came from an earlier run
            path = builder.built[winner.build_key][0]
            for f in sorted(path.parent.glob(path.stem + ".*")):  # .xml comes with its .bin
                shutil.copyfile(f, staging / f.name)
            artifact = path.name
        result["artifact"] = artifact
        result["recipe"] = recipe(result["config"], winner, artifact)
        atomic_write_text(staging / "recipe.txt", result["recipe"] + "\n")
    atomic_write_text(staging / "tune.json", json.dumps(result, indent=1))
    old = out.parent / f".{out.name}.tune-old"
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    winner_line = _one_line(best) if best else "none accepted"
    log(f"wrote {out}: winner {winner_line}")
