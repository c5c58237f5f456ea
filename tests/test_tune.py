"""`latvit tune`: candidates measured, tune.json's content, the winner's artifact, resume, bad input.

A tiny MobileViT (one merging block of tests/test_compression.py, 32 px, 10 classes, random weights) on the
synthetic set, eager and ORT only, a tiny timing protocol: the tune finishes in seconds. Top-1 of a random model is near chance; what is tested is
that every candidate is measured on the same images against the same reference, not the accuracy itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

import latvit
from latvit.cli import main
from latvit.data import write_synthetic_imagefolder
from latvit.errors import LatvitError
from latvit.targets import Protocol
from latvit.tune import Candidate, axis_gains, pareto_front, tune_model

TINY = Protocol(warmup=1, iters=3, min_seconds=0.01, max_seconds=0.5)
FAST = dict(
    runtimes=["eager", "ort"],
    precisions=["fp32", "int8"],
    tomes=["0"],
    threads=[1],
    eval_images=16,
    calib_images=4,
    protocol=TINY,
    rounds=2,
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "model"
    from test_compression import ONE_BLOCK_MOBILEVIT

    latvit.save(latvit.create_model(ONE_BLOCK_MOBILEVIT, num_classes=10, img_size=32), path)
    return path


@pytest.fixture(scope="module")
def loads() -> dict[Path, int]:
    """How often `tuned` loaded each ONNX Runtime artifact."""
    return {}


@pytest.fixture(scope="module")
def tuned(saved, loads):
    from latvit.runtimes.ort import OnnxRuntime

    original = OnnxRuntime.load

    def counted(self, path, example, threads):
        loads[Path(path)] = loads.get(Path(path), 0) + 1
        return original(self, path, example, threads)

    out = saved.parent / "out"
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OnnxRuntime, "load", counted)
        settings = {**FAST, "protocol": replace(TINY, sessions=2)}  # two loads of each artifact, timed in turn
        result = tune_model(str(saved), "synthetic", 100.0, output=out, log=lines.append, **settings)
    return out, result, lines


def test_every_candidate_is_measured_against_the_baseline(tuned):
    out, result, _ = tuned
    records = {r["key"]: r for r in result["candidates"]}
    assert set(records) == {"ort/fp32/tome=0/threads=1", "eager/fp32/tome=0/threads=1", "ort/int8/tome=0/threads=1"}
    baseline = records[result["config"]["baseline"]]
    assert baseline["status"] == "baseline" and baseline["runtime"] == "ort" and baseline["speedup"] == 1.0
    for r in records.values():
        assert r["latency_ms"] > 0 and r["speedup"] > 0 and r["spread"] >= 0
        assert r["status"] in ("baseline", "accepted", "rejected", "pruned")
        assert r["export_abs_diff"] is not None
    fp32 = [r for r in records.values() if r["precision"] == "fp32"]
    assert all(r["export_abs_diff"] < 1e-3 for r in fp32)  # fp32 exports compute what PyTorch computes
    for r in records.values():  # pruned: slower than the best accepted, so top-1 was not spent on it
        assert ("top1" in r) == (r["status"] != "pruned")
    evaluated = [r for r in records.values() if "top1" in r]
    assert all(r["drop"] == pytest.approx(result["reference_top1"] - r["top1"]) for r in evaluated)


def test_each_candidate_is_timed_over_several_loads(tuned, loads):
    """`Protocol(sessions=2)`: the baseline's and each candidate's ORT artifact were loaded twice for timing
    (one load runs a few percent off another for its whole life, enough to flip a close comparison)."""
    assert len(loads) == 2 and min(loads.values()) >= 2, loads  # ort fp32 and ort int8


def test_tune_json_winner_pareto_recipe(tuned):
    out, result, _ = tuned
    on_disk = json.loads((out / "tune.json").read_text())
    assert on_disk["winner"] == result["winner"]
    winner = result["winner"]
    accepted = [r for r in result["candidates"] if r["status"] in ("accepted", "baseline")]
    assert winner["speedup"] == max(r["speedup"] for r in accepted)
    assert winner["key"] in result["pareto"]
    assert set(result["axis_gains"]) == {"runtime", "precision", "merging", "threads"}
    assert result["machine"]["cpu"]
    recipe = (out / "recipe.txt").read_text().strip()
    assert recipe == result["recipe"] and recipe.startswith("latvit ")
    if result["artifact"]:  # file runtimes ship their artifact; eager's deliverable is the model itself
        assert (out / result["artifact"]).is_file()
    assert not (out.parent / ".out.tune-partial").exists()


def test_rerun_skips_measured_candidates(saved, tuned):
    out, first, _ = tuned
    lines: list[str] = []
    again = tune_model(str(saved), "synthetic", 100.0, output=out, log=lines.append, **FAST)
    assert any(line.startswith("resuming: 3 candidates") for line in lines)
    measured = [line for line in lines if "/tome=" in line and not line.startswith("wrote")]
    assert measured == []  # nothing timed again
    assert again["candidates"] == first["candidates"]


def test_interrupted_run_resumes_from_staging_and_ships_the_artifact(saved, tmp_path, monkeypatch):
    import latvit.tune.run as run

    out = tmp_path / "out"
    ort_only = {**FAST, "runtimes": ["ort"], "precisions": ["fp32"], "threads": [1, 2]}  # baseline: 2 threads
    original = run._try_candidate

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(run, "_try_candidate", killed)
    with pytest.raises(RuntimeError):
        tune_model(str(saved), "synthetic", 100.0, output=out, log=lambda _: None, **ort_only)
    assert not out.exists()  # no partial output directory
    staged = json.loads((tmp_path / ".out.tune-partial" / "tune.json").read_text())
    assert [r["status"] for r in staged["candidates"]] == ["baseline"]  # written as it came
    monkeypatch.setattr(run, "_try_candidate", original)
    lines: list[str] = []
    result = tune_model(str(saved), "synthetic", 100.0, output=out, log=lines.append, **ort_only)
    assert any(line.startswith("resuming: 1 candidates") for line in lines)
    assert len(result["candidates"]) == 2 and (out / "tune.json").is_file()
    assert result["artifact"] == "model.onnx" and (out / "model.onnx").stat().st_size > 0
    assert "--format onnx" in result["recipe"]
    assert not (tmp_path / ".out.tune-partial").exists()


def test_pareto_and_axis_gains_from_records():
    records = {
        "a": {"key": "a", "speedup": 1.0, "drop": 0.0, "top1": 1},
        "b": {"key": "b", "speedup": 2.0, "drop": 0.3, "top1": 1},
        "c": {"key": "c", "speedup": 1.5, "drop": 0.5, "top1": 1},  # dominated by b
        "d": {"key": "d", "speedup": 3.0},
    }  # pruned: no top-1
    assert pareto_front(records) == ["b", "a"]
    base, win = Candidate("ort", "fp32", "0", 2), Candidate("openvino", "int8", "0", 2)
    recs = {
        base.key: {"speedup": 1.0},
        Candidate("openvino", "fp32", "0", 2).key: {"speedup": 1.2},
        win.key: {"speedup": 3.0},
    }
    gains = axis_gains(recs, base, win)
    assert gains["runtime"] == pytest.approx(1.2) and gains["precision"] == pytest.approx(2.5)
    assert gains["merging"] == pytest.approx(1.0) and gains["threads"] == pytest.approx(1.0)
    # an accuracy-controlled winner whose unmerged step was pruned unbuilt: plain int8 stands in for it
    win = Candidate("openvino", "int8-ac", "keep0.5", 2)
    recs = {
        base.key: {"speedup": 1.0},
        Candidate("openvino", "fp32", "0", 2).key: {"speedup": 1.03},
        Candidate("openvino", "int8", "0", 2).key: {"speedup": 1.11},
        Candidate("openvino", "int8-ac", "0", 2).key: {"status": "pruned"},
        win.key: {"speedup": 1.63},
    }
    gains = axis_gains(recs, base, win)
    assert gains["precision"] == pytest.approx(1.11 / 1.03) and gains["merging"] == pytest.approx(1.63 / 1.11)


# -- bad input: one line, exit 2, no output directory ----------------------------------------------------
def _cli(saved, out, *extra, data="synthetic", max_drop="0.5"):
    return main(
        [
            "tune",
            str(saved),
            "--data",
            data,
            "--max-drop",
            max_drop,
            "-o",
            str(out),
            "--threads",
            "1",
            "--tome",
            "0",
            *extra,
        ]
    )


@pytest.mark.parametrize("case", ["no runtime", "negative drop", "tiny budget", "class count"])
def test_bad_input_is_one_line_exit_2_no_output(saved, tmp_path, capsys, case):
    out = tmp_path / "out"
    args = {
        "no runtime": dict(extra=("--runtimes", "tensorrt")),
        "negative drop": dict(max_drop="-1"),
        "tiny budget": dict(extra=("--budget-minutes", "0.001")),
        "class count": dict(
            data=str(write_synthetic_imagefolder(tmp_path / "four", num_classes=4, train_per_class=2, val_per_class=2))
        ),
    }
    kwargs = args[case]
    assert _cli(saved, out, *kwargs.get("extra", ()), **{k: v for k, v in kwargs.items() if k != "extra"}) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # above it: third-party import warnings
    assert last.startswith("latvit: error: ")
    assert not out.exists() and not (tmp_path / ".out.tune-partial").exists()


def test_budget_spent_on_the_baseline_is_an_error(saved, tmp_path):
    slow = Protocol(warmup=1, iters=3, min_seconds=0.6, max_seconds=1.0)  # 2 rounds x 2 runners x 0.6 s > 0.04 min
    with pytest.raises(LatvitError, match="too small"):
        tune_model(
            str(saved),
            "synthetic",
            0.5,
            output=tmp_path / "out",
            budget_minutes=0.045,
            **{**FAST, "protocol": slow, "runtimes": ["ort"], "precisions": ["fp32"]},
        )
    assert not (tmp_path / "out").exists()


def _builds_taking_ten_minutes(monkeypatch) -> list[bool]:
    """Each int8 build "takes" 10 minutes on tune's clock (the quantizer moves the clock); returns the list
    of builds as they happen, True for an accuracy-controlled one."""
    import time as real_time
    import types

    from latvit.tune import run as tune_run

    offset, builds = [0.0], []
    real_quantize = tune_run.quantize

    def slow_quantize(*args, **kwargs):
        builds.append(kwargs.get("max_drop") is not None)
        offset[0] += 600.0
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(tune_run, "time", types.SimpleNamespace(monotonic=lambda: real_time.monotonic() + offset[0]))
    monkeypatch.setattr(tune_run, "quantize", slow_quantize)
    return builds


def _tune_in_15_minutes(saved, tmp_path, **axes) -> dict[str, dict]:
    """tune_model with a 15-minute budget on FAST's axes changed by `axes`: its records by key."""
    result = tune_model(str(saved), "synthetic", 100.0, output=tmp_path / "out", budget_minutes=15, **{**FAST, **axes})
    return {r["key"]: r for r in result["candidates"]}


def test_a_candidate_that_cannot_finish_within_the_budget_is_not_started(saved, tmp_path, monkeypatch):
    """Each int8 build "takes" 10 minutes: with 15 minutes of budget the second int8 build is skipped since
    the first took longer than what is left, not started to overrun."""
    builds = _builds_taking_ten_minutes(monkeypatch)
    records = _tune_in_15_minutes(saved, tmp_path, runtimes=["ort"], tomes=["0", "keep0.5"])
    assert records["ort/int8/tome=0/threads=1"]["status"] != "skipped"
    skipped = records["ort/int8/tome=keep0.5/threads=1"]
    assert skipped["status"] == "skipped" and re.search(r"one like it took 6\d\d s", skipped["why"])
    assert builds == [False]  # the second build never ran


def test_accuracy_control_is_not_built_when_plain_int8_was_too_slow(saved, tmp_path, monkeypatch):
    """Every candidate times at half the baseline's speed (a fake timing): plain int8 is pruned, so the
    int8-ac candidate on the same runtime, merging and threads is pruned before its minutes-long build
    (accuracy control cannot make it faster). LiteRT, which has accuracy control, is a candidate for it."""
    from latvit.tune import run as tune_run
    from latvit.tune.candidates import supports

    def half_speed(tgt, base, cand, protocol, rounds):
        return [1.0] * rounds, [1.0 if cand[0] is base[0] else 2.0] * rounds

    built_with_control = []
    real_quantize = tune_run.quantize

    def spy_quantize(*args, **kwargs):
        built_with_control.append(kwargs.get("max_drop") is not None)
        return real_quantize(*args, **kwargs)

    monkeypatch.setattr(tune_run, "_measure_pair", half_speed)
    monkeypatch.setattr(tune_run, "quantize", spy_quantize)
    result = tune_model(
        str(saved),
        "synthetic",
        1.0,
        output=tmp_path / "out",
        **{**FAST, "runtimes": ["openvino"], "precisions": ["fp32", "int8", "int8-ac"]},
    )
    records = {r["key"]: r for r in result["candidates"]}
    assert records["openvino/int8/tome=0/threads=1"]["status"] == "pruned"
    controlled = records["openvino/int8-ac/tome=0/threads=1"]
    assert controlled["status"] == "pruned" and controlled["why"].startswith("plain int8 here was x0.50")
    assert built_with_control == [False]  # plain int8 built, the accuracy-controlled one never
    assert supports("litert", "int8-ac") and supports("openvino", "int8-ac") and not supports("ort", "int8-ac")


def test_accuracy_control_judges_images_prepared_as_the_run_evaluates_them(saved, tmp_path, monkeypatch):
    """A run evaluated uncropped (config crop_pct 1.0, as the Fashion-MNIST runs): the int8-ac candidate's
    validation images are at crop 1.0 like tune's held-out images and `latvit quantize --max-drop`'s, while
    calibration keeps quantize's 0.875. (Judged at 0.875, LiteRT accuracy control kept an L1 that lost 6
    points on the held-out images at 1.0.)"""
    import shutil

    from latvit.tune import run as tune_run

    run_dir = tmp_path / "run"
    shutil.copytree(saved, run_dir / "best")
    (run_dir / "config.yaml").write_text("crop_pct: 1.0\n")
    crops = {"validation": [], "calibration": []}
    for purpose, name in (("validation", "validation_batches"), ("calibration", "calibration_batches")):
        real = getattr(tune_run, name)

        def spy(*args, _real=real, _purpose=purpose, **kwargs):
            crops[_purpose].append(kwargs.get("crop_pct", 0.875))
            return _real(*args, **kwargs)

        monkeypatch.setattr(tune_run, name, spy)
    monkeypatch.setattr(tune_run, "_plain_int8_too_slow", lambda c, records: None)  # build it whatever the timing
    tune_model(
        str(run_dir / "best"),
        "synthetic",
        100.0,
        output=tmp_path / "out",
        **{**FAST, "runtimes": ["openvino"], "precisions": ["fp32", "int8-ac"]},
    )
    assert crops == {"validation": [1.0], "calibration": [0.875]}


def test_the_first_accuracy_controlled_build_is_expected_to_take_a_plain_builds_time(saved, tmp_path, monkeypatch):
    """Plain int8 builds "take" 10 minutes each; with 15 minutes of budget the first int8-ac candidate, whose
    kind has no build yet, is skipped on the plain build's time rather than started (it quantizes too, then
    evaluates: minutes more)."""
    from latvit.tune import run as tune_run

    builds = _builds_taking_ten_minutes(monkeypatch)
    monkeypatch.setattr(tune_run, "_plain_int8_too_slow", lambda c, records: None)  # timing-independent
    records = _tune_in_15_minutes(saved, tmp_path, runtimes=["openvino"], precisions=["fp32", "int8", "int8-ac"])
    skipped = records["openvino/int8-ac/tome=0/threads=1"]
    assert skipped["status"] == "skipped" and re.search(r"a plain int8 one took 6\d\d s", skipped["why"])
    assert builds == [False]  # the plain build ran, the accuracy-controlled one never started


@pytest.mark.parametrize(
    "winner",
    [
        Candidate("executorch", "int8", "keep0.5", 2),
        Candidate("openvino", "int8-ac", "keep0.5", 1),
        Candidate("litert", "int8-ac", "0", 2),
        Candidate("litert", "fp32", "keep0.5", 2),
    ],
)
def test_recipes_are_commands_latvit_accepts(winner):
    """Every winner's recipe, merged int8 included, is a command line latvit's parser takes with the same
    settings (before its `# run with N threads` comment)."""
    import shlex

    from latvit.cli import build_parser
    from latvit.tune.run import recipe

    config = {"model": "runs/x/best", "data": "fashion-mnist", "batch": 1, "max_drop": 0.5}
    line = recipe(config, winner, "model.bin")
    args = build_parser().parse_args(shlex.split(line.split("#")[0])[1:])
    assert args.tome == winner.tome
    assert getattr(args, "runtime", winner.runtime) == winner.runtime
    assert (getattr(args, "max_drop", None) == 0.5) == (winner.precision == "int8-ac")
