"""Search: weight inheritance, greedy slimming / MES loops, NSGA-II, on real spaces with cheap objectives."""

import math
import random

import pytest
import torch

import latvit
from latvit.errors import LatvitError
from latvit.models.spaces import SPACES
from latvit.search.algorithms import dominates, greedy_search, pareto_search, shrink_actions
from latvit.search.inherit import inherit_weights, recalibrate_bn
from latvit.targets.protocol import Timing

SPACE = SPACES["efficientformerv2"]


def cost(choice, space=SPACE):
    return latvit.spec_cost(space.spec(choice, 64))


def latency(choice):  # a stand-in for the LUT predictor: deterministic, monotone in FLOPs
    return 1.0 + cost(choice).flops / 1e7


def accuracy(choice):  # a stand-in for inherited-weight accuracy: grows with capacity
    return 50 + 5 * math.log(cost(choice).params)


@pytest.mark.parametrize("name", ["efficientformer", "efficientformerv2", "mobilevit"])
def test_inherited_subnets_take_supernet_slices(name):
    space = SPACES[name]
    supernet = latvit.create_model(space.spec(space.largest(), 64), num_classes=10)
    sub = latvit.create_model(space.spec(space.sample(random.Random(1)), 64), num_classes=10)
    inherit_weights(supernet, sub)
    sd_sub, sd_sup = sub.state_dict(), supernet.state_dict()
    stem = next(k for k in sd_sub if k.endswith("weight") and sd_sub[k].dim() == 4)
    assert torch.equal(sd_sub[stem], sd_sup[stem][tuple(slice(0, d) for d in sd_sub[stem].shape)])
    recalibrate_bn(sub, [torch.randn(4, 3, 64, 64)])
    assert not sub.training and sub(torch.randn(1, 3, 64, 64)).isfinite().all()


def test_fused_qkv_projections_inherit_per_chunk():
    """A narrower subnet's q, k and v rows come from the supernet's q, k and v (MobileViT's fused `qkv`,
    TRT-ViT's fused `kv`), not from one leading slice of the stacked rows."""
    from latvit.layers.mobile import MultiHeadAttention

    torch.manual_seed(0)
    wide, narrow = MultiHeadAttention(96, heads=4), MultiHeadAttention(64, heads=4)
    inherit_weights(wide, narrow)
    for i in range(3):  # q, k, v
        rows = slice(64 * i, 64 * (i + 1)), slice(96 * i, 96 * i + 64)
        assert torch.equal(narrow.qkv.weight[rows[0]], wide.qkv.weight[rows[1], :64])
        assert torch.equal(narrow.qkv.bias[rows[0]], wide.qkv.bias[rows[1]])
    assert torch.equal(narrow.proj.weight, wide.proj.weight[:64, :64])  # not fused: a leading slice


def test_held_out_subset_spreads_over_a_class_sorted_set_and_bn_uses_every_batch():
    from latvit.data import Subset

    class Sorted(torch.utils.data.Dataset):  # 10 classes of 10 images each, in class order (an ImageFolder)
        classes = [str(c) for c in range(10)]

        def __len__(self):
            return 100

        def __getitem__(self, i):
            return torch.zeros(1), i // 10

    spread, first = Subset(Sorted(), 10, spread=True), Subset(Sorted(), 10)
    assert sorted(spread[i][1] for i in range(10)) == list(range(10)) and {first[i][1] for i in range(10)} == {0}
    bn = torch.nn.BatchNorm1d(1)
    recalibrate_bn(bn, [torch.full((4, 1), float(v)) for v in range(12)])  # all 12 batches, not the first 8
    assert bn.running_mean.item() == pytest.approx(5.5)


def test_mes_search_reaches_target_with_monotone_trace():
    target = latency(SPACE.largest()) * 0.6
    trace = greedy_search(SPACE, "efficientformerv2", accuracy, latency, target, params=lambda c: cost(c).params)
    assert trace[0].action == "start" and trace[-1].latency_ms <= target
    assert all(b.mes > a.mes for a, b in zip(trace, trace[1:]))  # every accepted action raised MES
    assert len(trace) > 2


def test_slimming_uses_the_seed_actions_and_reaches_target():
    space = SPACES["efficientformer"]
    labels = [label for label, _ in shrink_actions(space, space.largest(), "efficientformer")]
    assert any("MB3D" in s for s in labels) and any("width" in s for s in labels) and any("depth" in s for s in labels)
    lat = lambda c: 1.0 + latvit.spec_cost(space.spec(c, 64)).flops / 1e7  # noqa: E731
    acc = lambda c: 50 + 5 * math.log(latvit.spec_cost(space.spec(c, 64)).params)  # noqa: E731
    target = lat(space.largest()) * 0.7
    trace = greedy_search(space, "efficientformer", acc, lat, target)
    assert trace[-1].latency_ms <= target
    assert all(b.latency_ms < a.latency_ms for a, b in zip(trace, trace[1:]))


def test_impossible_target_is_a_clear_error():
    with pytest.raises(LatvitError, match="below the smallest subnet"):
        greedy_search(SPACE, "efficientformerv2", accuracy, latency, 0.5, params=lambda c: cost(c).params)


def test_nsga2_front_is_non_dominated_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'search.db'}"
    trials, front = pareto_search(SPACE, accuracy, latency, trials=12, seed=0, storage=storage)
    assert len(trials) == 12 and front
    points = [(s.accuracy, s.latency_ms) for s in trials]
    for s in front:
        assert not any(dominates(p, (s.accuracy, s.latency_ms)) for p in points)
    more, _ = pareto_search(SPACE, accuracy, latency, trials=16, seed=0, storage=storage)
    assert len(more) == 16  # resumed: 4 new trials, the first 12 kept
    assert [s.choice for s in more[:12]] == [s.choice for s in trials]


def test_search_cli_end_to_end_and_resume(tmp_path, capsys, monkeypatch):
    """LUT (eager, plain sums) -> supernet on generated data -> MES search -> spec.json loadable."""
    import json

    from latvit.cli import main

    lut = tmp_path / "lut.json"
    # the table's 74 items, timed for real, are tests/test_lut.py's business (and 80 s here): a latency from
    # FLOPs each, so that this test is about the search
    fake = lambda item, *a, **k: (Timing.from_samples([0.05e-3 + item.cost.flops / 1e11] * 20), {})  # noqa: E731
    monkeypatch.setattr("latvit.latency.lut_build.measure_item", fake)
    assert (
        main(
            [
                "lut",
                "build",
                "--space",
                "efficientformerv2",
                "--runtime",
                "eager",
                "--img-size",
                "64",
                "--threads",
                "1",
                "--calibrate",
                "0",
                "--out",
                str(lut),
            ]
        )
        == 0
    )
    from latvit.latency.predictor import predict_latency

    top = predict_latency(SPACE.spec(SPACE.largest(), 64), lut, now=False).ms  # target just under: a step or two
    argv = [
        "search",
        "--method",
        "efficientformerv2",
        "--lut",
        str(lut),
        "--target-ms",
        f"{0.97 * top:.4f}",
        "--data",
        "synthetic",
        "--output",
        str(tmp_path / "out"),
        "--train-subset",
        "64",
        "--eval-images",
        "32",
        "--batch-size",
        "32",
        "--bn-batches",
        "1",
        "--threads",
        "1",
        "--no-measure",
        "--at-build",
    ]
    assert main(argv) == 0
    out = tmp_path / "out"
    result = json.loads((out / "result.json").read_text())
    assert result["predicted_ms"] <= 0.97 * top
    model = latvit.create_model(out / "spec.json", num_classes=4)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    trace = json.loads((out / "trace.json").read_text())
    assert trace[0]["action"] == "start" and len(trace) >= 2
    assert result["supernet"] == "sandwich"  # the efficientformerv2 space trains the slimmable supernet
    cache = out / "supernet_sandwich" / "accuracy.json"  # the evaluation cache lives with its supernet
    cached = json.loads(cache.read_text())
    assert main(argv) == 0  # rerun: supernet reused, every evaluation comes from the cache
    assert json.loads(cache.read_text()) == cached
    assert main(argv[:-1] + ["--no-measure", "--target-ms", "0.0001"]) == 2
    assert "below the smallest subnet" in capsys.readouterr().err
    # other evaluation settings in the same output would mix new results with the cached ones: refused
    assert main(argv[: argv.index("--eval-images") + 1] + ["64"] + argv[argv.index("--eval-images") + 2 :]) == 2
    assert "holds a search with other settings (eval_images 32 -> 64)" in capsys.readouterr().err


# -- the result: the best point, measured against the target --------------------------------------------------
def _step(latency_ms, accuracy, width=32):
    from latvit.search.algorithms import Step

    return Step("evaluated", SPACE.smallest().__class__((width,), (1,), ((4.0,),), 0), latency_ms, accuracy)


def test_best_point_is_the_most_accurate_under_the_target_ties_to_the_faster():
    from latvit.search.run import best_point

    # the case: the last step (1.26 ms) and an earlier evaluated point (1.19 ms) share 28.6%
    points = [_step(1.40, 30.0, 1), _step(1.26, 28.6, 2), _step(1.19, 28.6, 3), _step(1.10, 25.0, 4)]
    assert best_point(points, 1.3) is points[2]
    assert best_point(points, 1.5) is points[0]
    assert best_point(points, 1.0) is None


def test_a_result_that_misses_on_the_device_is_replaced_by_the_next_faster_candidate():
    from latvit.search.run import select_result

    points = [_step(11.9, 30.0, 1), _step(11.0, 29.0, 2), _step(9.5, 27.0, 3)]
    truth = {1: 13.1, 2: 12.1, 3: 10.4}  # the device is 10% slower than predicted everywhere
    measured = []

    def measure(step):
        measured.append(step.choice.widths[0])
        return {"median_ms": truth[step.choice.widths[0]]}

    selection = select_result(lambda: points, 12.0, measure=measure, tolerance=0.05)
    # 11.9 predicted -> 13.1 measured misses by 9%; the limit becomes 11.9 * 12 / 13.1 = 10.9: 9.5 ms is next
    assert measured == [1, 3] and selection.step is points[2] and "within 5%" in selection.note
    assert [m["median_ms"] for m in selection.measured] == [13.1, 10.4]
    close = select_result(lambda: points, 12.0, measure=lambda s: {"median_ms": 12.4}, tolerance=0.05)
    assert close.step is points[0] and len(close.measured) == 1  # 3% over: within tolerance


def test_the_trajectory_is_extended_when_no_evaluated_candidate_is_fast_enough():
    from latvit.search.run import select_result

    points = [_step(11.9, 30.0, 1)]
    limits = []

    def extend(limit_ms):
        limits.append(limit_ms)
        points.append(_step(limit_ms * 0.95, 26.0, 5))

    selection = select_result(
        lambda: points, 12.0, measure=lambda s: {"median_ms": s.latency_ms * 1.2}, extend=extend, tolerance=0.05
    )
    assert limits and limits[0] == pytest.approx(10.0) and selection.step is points[1]
    # nothing faster can be found: the fastest measured candidate, said to miss
    stuck = select_result(
        lambda: points[:1],
        12.0,
        measure=lambda s: {"median_ms": 15.0},
        extend=lambda limit: (_ for _ in ()).throw(LatvitError("smallest reached")),
    )
    assert stuck.step is points[0] and "misses the target" in stuck.note
    unmeasured = select_result(lambda: points, 12.0)
    assert unmeasured.step is points[0] and unmeasured.measured == []
