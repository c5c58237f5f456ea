"""The seeds' two supernets: Gumbel MetaPaths (EfficientFormer V1 slimming) and the sandwich-trained slimmable
supernet with switchable BatchNorm (EfficientFormerV2), on tiny spaces at 64x64 with synthetic data."""

import json
import math
import random

import pytest
import torch

import latvit
from latvit.models.spaces import SPACES, SearchSpace, _efficientformer, _efficientformer_v2
from latvit.search.algorithms import PathState, importance_slimming, slimming_actions
from latvit.search.supernet import (
    GumbelSupernet,
    SandwichSupernet,
    SupernetTraining,
    sandwich_choices,
    temperature,
    train_gumbel,
)

V1 = SearchSpace(
    "tiny_v1",
    widths=((16, 32), (32, 48), (48, 64), (64, 80)),
    depths=((1, 2), (1, 2), (1, 2), (2, 3)),
    expansions=(4.0,),
    extras=(1, 2),
    make_spec=_efficientformer,
    img_size=64,
)
V2 = SearchSpace(
    "tiny_v2",
    widths=((16, 32), (32,), (32, 48), (48, 64)),
    depths=((1,), (1, 2), (2, 3), (2, 3)),
    expansions=(2.0, 4.0),
    extras=(0,),
    make_spec=_efficientformer_v2,
    img_size=64,
)
TINY = SupernetTraining(
    data="synthetic", epochs=1, batch_size=8, train_subset=32, threads=1, checkpoint_every=1, progress=False
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: one thread is as fast, and does not fight other jobs for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flops_latency(space):
    return lambda c: 0.5 + latvit.spec_cost(space.spec(c, 64)).flops / 1e7


# -- Gumbel MetaPath supernet --------------------------------------------------------------------------------
def test_gumbel_supernet_candidates_forward_backward():
    torch.manual_seed(0)
    net = GumbelSupernet(V1, 64, num_classes=4)
    assert [p.kinds for p in net.paths[0]] == [("meta4d", "identity")] * 2
    assert [p.kinds for p in net.paths[3]] == [("meta4d", "meta3d", "identity")] * 3  # MB3D: stage 4 only
    net.train()
    net.tau = 1.0
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4)
    out.logsumexp(-1).sum().backward()
    assert all(a.grad is not None and a.grad.isfinite().all() for a in net.alphas())
    assert net.paths[3][0].ops["meta3d"].token_mixer.qkv.weight.grad is not None  # undrawn candidates learn too


def test_gumbel_training_moves_alphas_and_anneals_temperature(tmp_path):
    net = train_gumbel(V1, 64, TINY, tmp_path / "g")
    alphas = torch.stack([a.detach() for stage in net.paths for a in [p.alpha[:2] for p in stage]])
    assert alphas.abs().sum() > 0  # four joint steps with Adam on the alphas
    assert not net.training and abs(net.tau - temperature(3, 4)) < 1e-9  # last step ran at the annealed end
    assert temperature(0, 100) == pytest.approx(5.0) and temperature(99, 100) == pytest.approx(0.5)
    taus = [temperature(t, 100) for t in range(100)]
    assert all(b < a for a, b in zip(taus, taus[1:]))
    imp = net.importance()
    assert [len(s) for s in imp] == [2, 2, 2, 3] and all(v > 0 for s in imp for v in s)


def test_gumbel_training_resumes_from_its_checkpoint(tmp_path):
    straight = train_gumbel(V1, 64, TINY, tmp_path / "straight")

    def interrupt(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_gumbel(V1, 64, TINY, tmp_path / "killed", on_step=interrupt)
    seen = []
    resumed = train_gumbel(V1, 64, TINY, tmp_path / "killed", on_step=lambda step, loss: seen.append(step))
    assert seen == [3, 4]  # continued after the checkpoint of step 2
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # and ended where an uninterrupted run ends
    again = train_gumbel(V1, 64, TINY, tmp_path / "killed", on_step=lambda step, loss: seen.append(step))
    assert seen == [3, 4] and torch.equal(again.paths[0][0].alpha, resumed.paths[0][0].alpha)  # finished: loaded


def test_gumbel_subnet_inherits_the_kept_candidates():
    torch.manual_seed(0)
    net = GumbelSupernet(V1, 64, num_classes=4)
    state = net.start_state()
    assert state.kinds[-1] == ("meta4d", "meta3d", "meta3d") and state.choice() == V1.largest()
    state = state.replace(1, 0, "identity").replace(3, 1, "meta4d")  # stage 2 keeps path 2; one MB3D left
    sub = net.subnet(state)
    assert sub.spec.stages[1].blocks[1].kind == "meta4d" and len(sub.spec.stages[1].blocks) == 2
    assert torch.equal(sub.stages[1].blocks[1].mlp.fc1.weight, net.paths[1][1].ops["meta4d"].mlp.fc1.weight)
    assert torch.equal(sub.stages[3].blocks[2].mlp.fc1.weight, net.paths[3][1].ops["meta4d"].mlp.fc1.weight)
    mb3d = net.paths[3][2].ops["meta3d"]
    assert torch.equal(sub.stages[3].blocks[3].token_mixer.qkv.weight, mb3d.token_mixer.qkv.weight)
    # the inherited subnet computes what the supernet computes with the same paths fixed
    net.eval()
    for stage, kinds in zip(net.paths, state.kinds):
        for path, kind in zip(stage, kinds):
            path.alpha.data = torch.tensor([10.0 if k == kind else 0.0 for k in path.kinds])
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(net(x), sub.eval()(x), atol=1e-5)
    narrow = net.subnet(PathState(state.kinds, (16, 32, 48, 64)))
    assert torch.equal(narrow.stem[0].conv.weight, net.stem[0].conv.weight[:8])  # narrower: leading slices


# -- importance-driven slimming ------------------------------------------------------------------------------
def test_slimming_actions_follow_importance():
    start = PathState((("meta4d",) * 2,) * 3 + (("meta4d", "meta3d", "meta3d"),), V1.largest().widths)
    importance = ((5.0, 4.0), (3.0, 0.5), (6.0, 6.0), (9.0, 9.0, 0.1))  # stage 4 path 3 (an MB3D) is the least
    actions = dict(slimming_actions(V1, start, importance))
    assert len(actions) == 3
    identity = next(s for label, s in actions.items() if "Identity" in label)
    assert identity.kinds[3][2] == "identity"  # least important path, MB3D count 2 -> 1 is still in the space
    mb3d = next(s for label, s in actions.items() if "MB3D" in label)
    assert mb3d.kinds[3] == ("meta4d", "meta4d", "meta3d")
    width = next(s for label, s in actions.items() if "width" in label)
    assert width.widths == (32, 32, 64, 80)  # stage 2 has the lowest mean importance: 48 -> 32
    # at the space's bounds an action disappears: one MB3D left is not dropped, a 1-deep stage keeps its path
    low = PathState((("meta4d", "identity"),) * 3 + (("meta4d", "identity", "meta3d"),), (16, 32, 48, 64))
    assert slimming_actions(V1, low, importance) == []


def test_importance_slimming_reaches_target_by_the_latency_function():
    latency = flops_latency(V1)
    accuracy = lambda s: 50 + 5 * math.log(latvit.spec_cost(V1.spec(s.choice(), 64)).params)  # noqa: E731
    start = PathState((("meta4d",) * 2,) * 3 + (("meta4d", "meta3d", "meta3d"),), V1.largest().widths)
    importance = ((1.0, 2.0), (3.0, 0.5), (2.0, 2.5), (4.0, 1.0, 3.0))
    target = latency(V1.largest()) * 0.6
    trace = importance_slimming(V1, start, importance, accuracy, lambda s: latency(s.choice()), target)
    assert trace[0].action == "start" and trace[-1].latency_ms <= target < trace[-2].latency_ms
    assert all(b.latency_ms < a.latency_ms for a, b in zip(trace, trace[1:]))
    assert all(any(k in s.action for k in ("Identity", "MB3D", "width")) for s in trace[1:])
    result = trace[-1]
    assert result.paths is not None and json.loads(json.dumps(result.as_dict()))["paths"]
    model = latvit.create_model(V1.spec(result.choice, 64), num_classes=3)  # the result is a plain spec
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(latvit.errors.LatvitError, match="cannot be reached"):
        importance_slimming(V1, start, importance, accuracy, lambda s: latency(s.choice()), 0.01)


# -- sandwich supernet, switchable BatchNorm -----------------------------------------------------------------
def test_sandwich_sampler_yields_largest_smallest_and_two_random():
    choices = sandwich_choices(V2, random.Random(3))
    assert choices[0] == V2.largest() and choices[1] == V2.smallest() and len(choices) == 4
    for c in choices[2:]:
        assert all(w in opts for w, opts in zip(c.widths, V2.widths))
        assert all(d in opts for d, opts in zip(c.depths, V2.depths))
    draws = {tuple(sandwich_choices(V2, random.Random(s))[2:]) for s in range(5)}
    assert len(draws) > 1


@pytest.fixture(scope="module")
def sandwich():
    torch.manual_seed(0)
    return SandwichSupernet(V2, 64, num_classes=4, drop_path=0.0)


def test_switchable_bn_keeps_per_width_statistics(sandwich):
    big, small = V2.largest(), V2.smallest()
    key = "head/norm"  # the head's BatchNorm: 64 (largest) or 48 (smallest) channels
    assert sorted(sandwich.norms[key]) == ["48", "64"]
    sandwich.train()
    sandwich(torch.randn(4, 3, 64, 64), big)
    sandwich(torch.randn(4, 3, 64, 64) * 3 + 1, small)
    wide, narrow = sandwich.norms[key]["64"], sandwich.norms[key]["48"]
    assert int(wide.num_batches_tracked) == 1 and int(narrow.num_batches_tracked) == 1
    assert not torch.allclose(wide.running_mean[:48], narrow.running_mean)
    sub = sandwich.subnet(small)  # evaluation uses the subnet's own width's statistics
    assert torch.equal(sub.head.norm.running_var, narrow.running_var)
    sandwich.eval()
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(sub(x), sandwich(x, small), atol=1e-5)
    assert int(narrow.num_batches_tracked) == 1  # eval does not touch them


def test_subnet_gradients_reach_the_shared_supernet_tensors(sandwich):
    sandwich.train()
    sandwich.zero_grad(set_to_none=True)
    small = V2.smallest()
    sandwich(torch.randn(2, 3, 64, 64), small).logsumexp(-1).sum().backward()
    grad = sandwich.net.stem[1].conv.weight.grad  # (32, 16, 3, 3) shared; the smallest subnet uses [:16, :8]
    assert grad is not None and grad[:16, :8].abs().sum() > 0
    assert grad[16:].abs().sum() == 0 and grad[:, 8:].abs().sum() == 0
    assert sandwich.norms["stem/1/bn"]["16"].weight.grad is not None  # its own width's affine parameters
    assert sandwich.norms["stem/1/bn"]["32"].weight.grad is None


# -- the search, end to end ----------------------------------------------------------------------------------
def test_search_cli_gumbel_slimming_and_resume(tmp_path, monkeypatch):
    """`latvit search --method efficientformer` on a tiny stand-in of the efficientformer space."""
    from latvit.cli import main

    monkeypatch.setitem(SPACES, "efficientformer", V1)
    lut = tmp_path / "lut.json"
    assert (
        main(
            [
                "lut",
                "build",
                "--space",
                "efficientformer",
                "--runtime",
                "eager",
                "--img-size",
                "64",
                "--threads",
                "1",
                "--calibrate",
                "0",
                "--no-retime",  # the table's accuracy is not what this tests; retiming is tests/test_lut.py's
                "--out",
                str(lut),
            ]
        )
        == 0
    )
    from latvit.latency.predictor import predict_latency

    top = predict_latency(V1.spec(V1.largest(), 64), lut, now=False).ms
    argv = [
        "search",
        "--method",
        "efficientformer",
        "--lut",
        str(lut),
        "--target-ms",
        f"{0.9 * top:.4f}",
        "--data",
        "synthetic",
        "--output",
        str(tmp_path / "out"),
        "--train-subset",
        "32",
        "--eval-images",
        "16",
        "--batch-size",
        "16",
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
    assert result["supernet"] == "gumbel" and result["predicted_ms"] <= 0.9 * top
    trace = json.loads((out / "trace.json").read_text())
    assert trace[0]["action"] == "start" and trace[-1]["paths"] and len(trace) >= 2
    assert json.loads((out / "supernet_gumbel" / "importance.json").read_text())["importance"]
    assert latvit.create_model(out / "spec.json", num_classes=4)(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    cached = (out / "supernet_gumbel" / "accuracy.json").read_text()
    assert main(argv) == 0  # rerun: the finished supernet is loaded, evaluations come from the cache
    assert (out / "supernet_gumbel" / "accuracy.json").read_text() == cached
    assert json.loads((out / "trace.json").read_text()) == trace
    plain = argv[: argv.index("--output")] + ["--output", str(tmp_path / "plain")] + argv[argv.index("--output") + 2 :]
    assert main(plain + ["--supernet", "plain"]) == 0  # the earlier scheme stays available
    result = json.loads((tmp_path / "plain" / "result.json").read_text())
    assert result["supernet"] == "plain" and result["predicted_ms"] <= 0.9 * top
    assert (tmp_path / "plain" / "accuracy.json").is_file() and (tmp_path / "plain" / "supernet" / "done").is_file()
