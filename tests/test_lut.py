"""Latency lookup tables and the predictor: enumeration, resume, bad tables, missing blocks, accuracy.

Most tests replace the two measuring functions with deterministic fakes (a latency from FLOPs), so they
test the bookkeeping exactly and fast; one test measures a tiny space for real with the eager runtime.
"""
import json

import pytest
import torch

import latvit
from latvit.cli import main
from latvit.latency import lut as L
from latvit.latency import predictor as P
from latvit.latency.predictor import predict_latency, validate
from latvit.targets.protocol import Timing
from latvit.models.spaces import SPACES, SearchSpace, _efficientformer


def tiny_space(img_size: int = 64) -> SearchSpace:
    return SearchSpace("tiny", widths=((32,), (64,), (160,), (320, 352)), depths=((1,), (1,), (2, 3), (2, 3)),
                       expansions=(4.0,), extras=(1,), make_spec=_efficientformer, img_size=img_size)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(SPACES, "tiny", tiny_space())
    return SPACES["tiny"]


def fake_ms(flops: int) -> float:
    return 0.05 + flops / 1e8  # every item: a fixed per-call cost plus 10 GFLOP/s


@pytest.fixture
def fake_measure(monkeypatch):
    """Deterministic measurements; networks cost 1.2 x the sum of their items + 0.3 ms, which the
    a*S+c calibration must recover exactly. Returns the list of measured keys."""
    calls = []

    def item(item, runtime, threads, deploy, protocol=L.BLOCK_PROTOCOL):
        calls.append(L.item_id(item))
        ms = fake_ms(item.cost.flops)
        return Timing(ms, ms * 1.1, ms * 0.9, ms, 0.01, 20)

    def network(spec, runtime, threads, deploy, protocol=L.NETWORK_PROTOCOL):
        calls.append(L.network_id(spec))
        total = sum(fake_ms(it.cost.flops) for it in L.plan_items(latvit.plan_network(spec)))
        ms = 1.2 * total + 0.3
        return Timing(ms, ms * 1.1, ms * 0.9, ms, 0.01, 20)

    monkeypatch.setattr(L, "measure_item", item)
    monkeypatch.setattr(L, "measure_network", network)
    monkeypatch.setattr(P, "measure_network", network)
    return calls


def test_tiny_space_item_count(tiny):
    # the 13 blocks of test_spaces' tiny space (a third stage-4 block repeats a key) + one head per stage-4 width
    items = L.space_items("tiny")
    blocks = tiny.enumerate_blocks()
    assert len(items) == len(blocks) + 2
    assert len(blocks) == 13
    assert sum(isinstance(it, L.PlannedHead) for it in items) == 2
    assert len({L.item_id(it) for it in items}) == len(items)


def test_isolated_modules_have_the_planned_shapes(tiny):
    for it in L.space_items("tiny"):
        module, x = L.isolated_module(it)
        with torch.no_grad():
            y = module.eval()(x)
        if isinstance(it, L.PlannedHead):
            assert y.shape == (1, it.num_classes)
        elif y.dim() == 3:  # tokens
            assert y.shape == (1, it.h_out * it.w_out, it.c_out)
        else:
            assert y.shape == (1, it.c_out, it.h_out, it.w_out)


def test_build_resume_measures_nothing_twice(tiny, fake_measure, tmp_path, monkeypatch):
    out = tmp_path / "lut.json"
    n_items = len(L.space_items("tiny"))
    n_nets = len(L.calibration_specs("tiny", 4))
    real_item = L.measure_item

    def dies_after_5(*args, **kwargs):
        if len(fake_measure) == 5:
            raise KeyboardInterrupt
        return real_item(*args, **kwargs)

    monkeypatch.setattr(L, "measure_item", dies_after_5)
    with pytest.raises(KeyboardInterrupt):
        L.build_lut("tiny", "eager", out, calibrate=4, progress=False)
    partial = L.LatencyTable.load(out)  # the interrupted file is valid
    assert len(partial.entries) == 5 and partial.calibration is None

    monkeypatch.setattr(L, "measure_item", real_item)
    table = L.build_lut("tiny", "eager", out, calibrate=4, progress=False)
    assert len(fake_measure) == n_items + n_nets
    assert len(set(fake_measure)) == len(fake_measure)  # nothing measured twice
    assert len(table.entries) == n_items and len(table.networks) == n_nets
    L.build_lut("tiny", "eager", out, calibrate=4, progress=False)  # complete: measures nothing
    assert len(fake_measure) == n_items + n_nets
    meta = L.LatencyTable.load(out).meta
    for field in ("runtime", "runtime_version", "threads", "cpu", "torch_version"):
        assert meta[field]
    assert meta["runtime"] == "eager" and json.loads(out.read_text())["format_version"] == L.FORMAT_VERSION


def test_calibrated_predictor_recovers_the_network_model(tiny, fake_measure, tmp_path):
    table = L.build_lut("tiny", "eager", tmp_path / "lut.json", calibrate=4, progress=False)
    cal = table.calibration
    assert cal["model"] in ("a*S+c", "a*S+b*N+c")
    spec = tiny.spec(tiny.largest())
    items = L.plan_items(latvit.plan_network(spec))
    truth = 1.2 * sum(fake_ms(it.cost.flops) for it in items) + 0.3
    pred = latvit.predict_latency(spec, tmp_path / "lut.json")
    assert pred.ms == pytest.approx(truth, rel=1e-4)  # entries are stored to 1 ns
    assert pred.low < pred.ms < pred.high and pred.calibrated
    assert pred.blocks_ms == pytest.approx(truth / 1.2 - 0.25, rel=1e-4)


def test_uncalibrated_prediction_is_the_sum(tiny, fake_measure, tmp_path):
    table = L.build_lut("tiny", "eager", tmp_path / "lut.json", calibrate=0, progress=False)
    pred = predict_latency(tiny.spec(tiny.smallest()), table)
    assert not pred.calibrated and pred.ms == pytest.approx(pred.blocks_ms)
    assert pred.low == pytest.approx(0.9 * pred.ms, rel=1e-4) and pred.high == pytest.approx(1.1 * pred.ms, rel=1e-4)


def test_missing_blocks_are_listed(tiny, fake_measure, tmp_path):
    from latvit.models.efficientformer import efficientformer_spec

    L.build_lut("tiny", "eager", tmp_path / "lut.json", calibrate=0, progress=False)
    other = efficientformer_spec("wide", (32, 64, 160, 384), (1, 1, 2, 2), 1, 64)  # 384 is not a tiny width
    with pytest.raises(latvit.LatvitError, match=r"4 of 12 blocks of wide at 64 are missing .*stages\[3\]\[0\] "
                                                r"conv_bn_act 160->384.*stages\[3\]\[1\] meta4d 384->384.*head 384"):
        predict_latency(other, tmp_path / "lut.json")


def test_corrupted_tables_give_clear_errors(tiny, fake_measure, tmp_path):
    path = tmp_path / "lut.json"
    L.build_lut("tiny", "eager", path, calibrate=0, progress=False)
    good = path.read_text()
    spec = tiny.spec(tiny.smallest())
    cases = {
        good[: len(good) // 2]: "not a valid latency table",
        "[]": "no 'format: latvit-lut' marker",
        good.replace('"format_version": 1', '"format_version": 99'): "format version 99",
        good.replace('"median_ms": ', '"median_ms": -', 1): "has no valid median_ms",
        good.replace('"min_ms": ', '"min_msec": ', 1): "has no valid min_ms",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(latvit.LatvitError, match=message):
            predict_latency(spec, path)
    with pytest.raises(latvit.LatvitError, match="does not exist"):
        predict_latency(spec, tmp_path / "nope.json")
    path.write_text("{broken")  # a corrupted file is not silently overwritten by a build either
    with pytest.raises(latvit.LatvitError, match="not a valid latency table"):
        L.build_lut("tiny", "eager", path, calibrate=0, progress=False)


def test_foreign_tables_need_force(tiny, fake_measure, tmp_path):
    path = tmp_path / "lut.json"
    L.build_lut("tiny", "eager", path, calibrate=0, progress=False, threads=1)
    data = json.loads(path.read_text())
    data["meta"]["cpu"] = "Apple M7 Ultra"
    path.write_text(json.dumps(data))
    spec = tiny.spec(tiny.smallest())
    with pytest.raises(latvit.LatvitError, match="another device or runtime: cpu 'Apple M7 Ultra'.*--force"):
        predict_latency(spec, path)
    assert predict_latency(spec, path, force=True).ms > 0
    with pytest.raises(latvit.LatvitError, match="other settings .*cpu.*--force"):
        L.build_lut("tiny", "eager", path, calibrate=0, progress=False, threads=1)
    # other settings on the same machine: refused, then rebuilt from scratch with force
    path.unlink()
    L.build_lut("tiny", "eager", path, calibrate=0, progress=False, threads=1)
    with pytest.raises(latvit.LatvitError, match="threads: 1 in the file, 2 now"):
        L.build_lut("tiny", "eager", path, calibrate=0, progress=False, threads=2)
    before = len(fake_measure)
    L.build_lut("tiny", "eager", path, calibrate=0, progress=False, threads=2, force=True)
    assert len(fake_measure) - before == len(L.space_items("tiny"))
    assert L.LatencyTable.load(path).meta["threads"] == 2


def test_validate_with_fakes_and_plot(tiny, fake_measure, tmp_path):
    table = L.build_lut("tiny", "eager", tmp_path / "lut.json", calibrate=4, progress=False)
    report = validate(table, samples=2, zoo=False, progress=False, plot=tmp_path / "v.png")
    stats = report.methods["lut_predictor"]
    assert stats["n"] == 2 and stats["mape"] < 1e-3 and stats["within_10"] == 1.0
    assert not any(r["in_calibration"] for r in report.rows)
    assert (tmp_path / "v.png").read_bytes()[:4] == b"\x89PNG"
    assert set(report.methods) == {"lut_predictor", "lut_sum_only", "flops_baseline"}


def test_zoo_validation_leaves_out_the_calibration_networks_and_uses_the_table_size(fake_measure, tmp_path):
    from latvit.latency.predictor import validation_specs

    table = L.build_lut("zoo", "eager", tmp_path / "zoo.json", img_size=224, calibrate=3, progress=False)
    specs, skipped = validation_specs(table, samples=0, seed=0, zoo=True)
    assert any(spec.name.startswith("mobilevit") for _, spec in specs)
    assert all(spec.img_size == 224 for _, spec in specs)  # MobileViT too (its own size is 256)
    assert not {L.network_id(spec) for _, spec in specs} & set(table.networks)  # none fitted on
    assert sum("a calibration network" in line for line in skipped) == len(table.networks) == 3


def test_cli_build_predict_validate(tiny, fake_measure, tmp_path, capsys):
    out = tmp_path / "lut.json"
    assert main(["lut", "build", "--space", "tiny", "--runtime", "eager", "--calibrate", "4", "--out", str(out)]) == 0
    assert "calibration networks" in capsys.readouterr().out
    spec_path = tmp_path / "s.json"
    tiny.spec(tiny.largest()).to_json(spec_path)
    assert main(["lut", "predict", str(spec_path), "--lut", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[str(spec_path)]["calibrated"] is True
    assert main(["lut", "predict", "efficientformer_l1", "--lut", str(out)]) == 2
    assert "missing from" in capsys.readouterr().err
    assert main(["lut", "validate", "--lut", str(out), "--samples", "2", "--json", str(tmp_path / "v.json")]) == 0
    assert "LUT predictor" in capsys.readouterr().out
    assert json.loads((tmp_path / "v.json").read_text())["methods"]["flops_baseline"]["n"] == 2
    assert main(["lut", "build", "--space", "nope", "--runtime", "eager", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err


def test_onnx_runtime_measures_one_block(tiny):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from latvit.runtimes import get_runtime

    item = L.space_items("tiny")[1]  # the second stem conv, 32x32 at 64 px input
    timing = L.measure_item(item, get_runtime("ort"), 1, True, L.Protocol(1, 3, 0.0))
    assert timing.iters >= 3 and 0 < timing.min_ms <= timing.median_ms


def test_predictor_on_real_eager_measurements_of_a_tiny_space(monkeypatch, tmp_path):
    """Real measurements (eager, 1 thread, 64 px) through build, calibration and validation: every
    prediction of a spec the table was not fitted on must be within 2x of its measured latency, which a
    unit slip, a double-counted or dropped block would break. The +-10% accuracy claim is a benchmark
    (benchmarks/lut_validate.py, docs/benchmarks.md), not this test: here the build and the validation
    are measured a minute apart on a shared host, where one network's latency moved by up to 40% between
    runs and the predictor's mean error on these six specs was 6-16% over three runs (27% once on CI)."""
    space = SearchSpace("tiny2", widths=((32,), (48, 64), (96, 128), (160, 192)),
                        depths=((1, 2), (1, 2), (2, 3), (1, 2)),
                        expansions=(4.0,), extras=(1,), make_spec=_efficientformer, img_size=64)
    monkeypatch.setitem(SPACES, "tiny2", space)
    table = L.build_lut("tiny2", "eager", tmp_path / "lut.json", threads=1, calibrate=6, statistic="min",
                        progress=False)
    assert len(table.networks) == 6 and table.calibration["model"] in P.MODELS
    report = validate(table, samples=6, seed=7, zoo=False, progress=False)
    assert report.methods["lut_predictor"]["n"] == 6
    for row in report.rows:
        assert not row["in_calibration"]
        assert 0.5 < row["predicted_ms"] / row["measured_ms"] < 2.0, row
        assert row["low_ms"] < row["predicted_ms"] < row["high_ms"], row
