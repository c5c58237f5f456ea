"""The measurement protocol: the stopping rule on synthetic timing sequences (a fake clock advanced by the
runner, so every test is deterministic), the median's interval, old records, the device state, timing
interleaved with the reference workload, and isolation from oneself (threads of a measuring child, a
parent that does not spin meanwhile)."""

import math
import random
import resource
import statistics

import pytest

from latvit.errors import LatvitError
from latvit.targets import Protocol
from latvit.targets.protocol import (
    Timing,
    collect_samples,
    collect_with_reference,
    cpu_times,
    device_state,
    measure_latency,
    median_ci_rank,
    median_interval,
    run_isolated,
)
from latvit.targets.reference import Reference, measure_with_reference


class FakeDevice:
    """A clock that only moves when `run()` is called, by the next duration (seconds) of `durations`."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, iter(durations), 0

    def clock(self) -> float:
        return self.now

    def run(self) -> None:
        self.now += next(self.durations)
        self.calls += 1


def sequence(draw, seed=0):
    """An endless sequence of call durations: draw(rng, i) seconds for the i-th call."""
    rng = random.Random(seed)
    i = 0
    while True:
        yield draw(rng, i)
        i += 1


def measure(draw, seed=0, **protocol):
    device = FakeDevice(sequence(draw, seed))
    settings = {"warmup": 0, "iters": 10, "min_seconds": 0.0, "max_seconds": 30.0} | protocol
    return measure_latency(device.run, clock=device.clock, **settings), device


# -- the stopping rule on synthetic sequences --------------------------------------------------------------
def test_stable_sequence_stops_once_the_median_is_known():
    timing, device = measure(lambda rng, i: 0.010 * (1 + rng.gauss(0, 0.01)))
    assert not timing.noisy and timing.ci_rel <= 0.02
    assert timing.ci_low_ms <= 10.0 <= timing.ci_high_ms and timing.median_ms == pytest.approx(10.0, rel=0.01)
    assert timing.iters < 40  # +-1% noise: a few dozen calls suffice, far from the 30 s cap
    tighter, _ = measure(lambda rng, i: 0.010 * (1 + rng.gauss(0, 0.01)), target_rel=0.002)
    assert tighter.iters > 2 * timing.iters and tighter.ci_rel <= 0.002  # a tighter target measures longer


def test_noisier_sequences_take_more_calls():
    calm, _ = measure(lambda rng, i: 0.010 * (1 + rng.gauss(0, 0.01)))
    noisy, _ = measure(lambda rng, i: 0.010 * (1 + abs(rng.gauss(0, 0.15))))
    assert not noisy.noisy and noisy.iters > 3 * calm.iters


def test_drifting_sequence_is_noisy_with_an_interval_that_covers_the_drift():
    # the device slows down by 1% per call: no window of it has a median known to +-2%
    timing, device = measure(lambda rng, i: 0.010 * (1 + 0.01 * i) * (1 + rng.gauss(0, 0.005)), max_seconds=10.0)
    assert timing.noisy and timing.ci_rel > 0.02
    assert device.now >= 10.0  # ran to the cap
    n = timing.iters
    first, second = 10 * (1 + 0.01 * n / 4), 10 * (1 + 0.01 * 3 * n / 4)  # the halves' medians
    assert timing.ci_low_ms <= first * 1.02 and timing.ci_high_ms >= second * 0.98
    # drift much slower than one measurement is not its business (the reference's): +-2% is met
    slow, _ = measure(lambda rng, i: 0.010 * (1 + 0.0001 * i) * (1 + rng.gauss(0, 0.005)))
    assert not slow.noisy


def test_bimodal_sequences():
    # 70% of calls in the fast mode: the median is the fast mode's and is known
    mostly_fast, _ = measure(lambda rng, i: 0.010 if rng.random() < 0.7 else 0.015, max_seconds=10.0)
    assert not mostly_fast.noisy and mostly_fast.median_ms == pytest.approx(10.0)
    # 60% in the slow mode: the slow mode's median
    mostly_slow, _ = measure(lambda rng, i: 0.010 if rng.random() < 0.4 else 0.015, max_seconds=10.0)
    assert not mostly_slow.noisy and mostly_slow.median_ms == pytest.approx(15.0)
    # a device that flips between two states call by call: no median to speak of, the interval spans both
    split, _ = measure(lambda rng, i: 0.010 if i % 2 else 0.015, max_seconds=10.0)
    assert split.noisy and split.ci_low_ms == pytest.approx(10.0) and split.ci_high_ms == pytest.approx(15.0)


def test_heavy_tailed_sequence_has_a_robust_median():
    # Pareto tail (alpha 1.1, infinite variance): one call in five is 1x to 1000x slower
    def draw(rng, i):
        return 0.010 * (1 + rng.gauss(0, 0.02)) * (min(rng.paretovariate(1.1), 1000) if rng.random() < 0.2 else 1)

    timing, _ = measure(draw, iters=50, max_seconds=100.0)
    assert not timing.noisy and timing.ci_rel <= 0.02
    assert timing.median_ms == pytest.approx(10.0, rel=0.03)
    assert timing.mean_ms > 1.1 * timing.median_ms and timing.p90_ms > 1.2 * timing.median_ms  # what a mean says


def test_minimums_and_the_fixed_count_protocol():
    device = FakeDevice(sequence(lambda rng, i: 0.001))
    timing = measure_latency(device.run, clock=device.clock, warmup=3, iters=40, min_seconds=0.0)
    assert timing.iters == 40 and device.calls == 43  # a constant sequence meets the target at once
    device = FakeDevice(sequence(lambda rng, i: 0.001))
    assert measure_latency(device.run, clock=device.clock, warmup=0, iters=1, min_seconds=0.5).iters >= 500
    noisy_fixed, _ = measure(lambda rng, i: 0.010 * (1 + abs(rng.gauss(0, 0.5))), iters=7, target_rel=None)
    assert noisy_fixed.iters == 7 and not noisy_fixed.noisy  # target_rel=None: the old fixed count
    for bad in ({"iters": 0}, {"target_rel": 0.0}, {"max_seconds": 0}, {"confidence": 1.0}, {"warmup": -1}):
        with pytest.raises(LatvitError, match="bad protocol"):
            measure(lambda rng, i: 0.001, **bad)
        with pytest.raises(LatvitError, match="bad protocol"):  # the same checks where the reference is timed
            collect_with_reference(lambda: None, lambda: None, lambda: None, **bad)


# -- the median's interval ----------------------------------------------------------------------------------
def test_order_statistic_ranks():
    # P(Binomial(n, 1/2) <= k - 1) <= 2.5% < P(... <= k): the textbook ranks
    assert [median_ci_rank(n) for n in (5, 6, 10, 20, 100, 1000)] == [1, 1, 2, 6, 40, 469]
    assert median_ci_rank(1001) == math.floor(1001 / 2 - 1.959964 * math.sqrt(1001) / 2)  # normal approximation


def test_interval_covers_the_true_median_at_least_95_percent_of_the_time():
    rng = random.Random(1)
    covered = 0
    for _ in range(400):  # skewed (lognormal) samples; the true median is exp(0) = 1
        low, high = median_interval([rng.lognormvariate(0, 1) for _ in range(40)])
        covered += low <= 1.0 <= high
    assert covered / 400 >= 0.94


def test_timing_from_samples_and_old_records():
    t = Timing.from_samples([0.010] * 5 + [0.011] * 5 + [0.012] * 10, target_rel=0.02)
    assert t.median_ms == pytest.approx(11.5) and t.ci_low_ms <= t.median_ms <= t.ci_high_ms
    assert t.noisy == (t.ci_rel > 0.02) and "ms [" in str(t)
    old = {"median_ms": 3.0, "p90_ms": 4.0, "min_ms": 2.0, "mean_ms": 3.1, "cv": 0.1, "iters": 50, "model": "x"}
    loaded = Timing.from_dict(old)  # a record written before the stopping rule
    assert loaded.median_ms == 3.0 and loaded.ci_rel is None and not loaded.noisy and str(loaded) == "3.00 ms"
    assert Timing.from_dict(t.as_dict()) == t


# -- the device's state -------------------------------------------------------------------------------------
def test_device_state_fields_are_optional():
    state = device_state()
    assert set(state) == {"cpu_mhz", "governor", "load_1m", "steal_pct", "busy_pct"}
    assert state["steal_pct"] is None and state["busy_pct"] is None  # no interval without a snapshot
    since = cpu_times()
    if since is None:
        pytest.skip("no /proc/stat here")
    sum(i * i for i in range(300_000))  # some CPU time for the interval
    state = device_state(since)
    assert state["busy_pct"] is None or 0 <= state["busy_pct"] <= 100
    assert state["cpu_mhz"] is None or state["cpu_mhz"] > 0


# -- timing with the reference ------------------------------------------------------------------------------
def test_reference_interleaving_cancels_drift():
    """The device slows down by half during a 10 s measurement; work (10 ms at speed 1) and reference (2 ms)
    are timed in alternating rounds, so their ratio stays 5 while the raw median moves by 25%."""
    device = FakeDevice(iter(()))

    def slowdown():
        return 1 + device.now / 20  # 1.5x slower after 10 s of the fake clock

    def call(ms):
        def run():
            device.now += ms / 1e3 * slowdown()
            device.calls += 1

        return run

    ref = Reference(call(2.0), call(0.3), {"ref_version": 0})
    measured = measure_with_reference(
        call(10.0), ref, warmup=2, iters=20, min_seconds=10.0, max_seconds=20.0, target_rel=None, clock=device.clock
    )
    assert measured.timing.median_ms > 12  # the raw median moved with the device
    assert measured.ratio == pytest.approx(5.0, rel=0.03)
    assert measured.gemm.median_ms / measured.ref.median_ms == pytest.approx(0.15, rel=0.05)
    record = measured.as_record()
    for field in (
        "median_ms",
        "ci_low_ms",
        "ci_high_ms",
        "ci_rel",
        "noisy",
        "ref_ms",
        "ref_gemm_ms",
        "ref_ratio",
        "ref_ci_rel",
        "ref_version",
        "load_1m",
        "steal_pct",
        "cpu_mhz",
        "governor",
    ):
        assert field in record, field


def test_reference_rounds_alternate_and_stop_on_both_intervals():
    order = []
    device = FakeDevice(iter(()))

    def call(name, ms):
        def run():
            order.append(name)
            device.now += ms / 1e3

        return run

    ref = Reference(call("net", 1.0), call("gemm", 0.2))
    measured = measure_with_reference(call("work", 50.0), ref, warmup=0, iters=10, min_seconds=0.0, clock=device.clock)
    assert not measured.timing.noisy and not measured.ref.noisy and measured.timing.iters >= 10
    timed = order[order.index("work") :]  # after the warm-up calls
    switches = [b for a, b in zip(timed, timed[1:]) if a != b]
    assert switches[:6] == ["net", "gemm", "work", "net", "gemm", "work"]  # work, reference, GEMM, again


# -- sessions: several loads of one artifact, timed in turn -------------------------------------------------
def loads_at(device, speeds_ms, order, name="work"):
    """One runner per load of an artifact, each at its own constant speed (what a load keeps for its life);
    every call appends the load's label (`work0`, `work1`, ...) to `order`."""

    def load(label, ms):
        def run():
            order.append(label)
            device.now += ms / 1e3

        return run

    return [load(f"{name}{i}", ms) for i, ms in enumerate(speeds_ms)]


def rounds_of(calls):
    """The labels of consecutive runs of calls: who had each round."""
    return [c for before, c in zip([None, *calls], calls) if before != c]


def test_sessions_take_rounds_in_turn_and_weigh_alike():
    """Three loads at 10, 11 and 12 ms: each is warmed up, they take whole rounds in turn, the rule is
    judged only after whole cycles, so each brings the same time and the pooled median is the middle one's,
    where one load alone would have been 10% off."""
    device, order, speeds = FakeDevice(iter(())), [], (10.0, 11.0, 12.0)
    samples = collect_samples(
        loads_at(device, speeds, order), warmup=2, iters=10, min_seconds=1.0, target_rel=None, clock=device.clock
    )
    assert order[:6] == ["work0", "work0", "work1", "work1", "work2", "work2"]  # every load warmed up first
    rounds = rounds_of(order[6:])
    assert rounds[:6] == ["work0", "work1", "work2"] * 2 and len(rounds) % 3 == 0  # whole cycles only
    busy = [speeds[i] * order[6:].count(f"work{i}") for i in range(3)]
    assert max(busy) / min(busy) < 1.1  # alike in time
    assert statistics.median(samples) * 1e3 == pytest.approx(11.0)


def test_one_runner_is_timed_call_by_call_as_before():
    device, order = FakeDevice(iter(())), []
    (run,) = loads_at(device, (5.0,), order)
    for given in (run, [run]):
        samples = collect_samples(given, warmup=0, iters=10, min_seconds=0.0, target_rel=None, clock=device.clock)
        assert len(samples) == 10 and order.count("work0") == len(samples)  # no rounds, no untimed re-warm call
        order.clear()


def test_reference_loads_take_the_reference_rounds_in_turn():
    device, order = FakeDevice(iter(())), []
    work = loads_at(device, (10.0, 12.0), order)
    nets = loads_at(device, (1.0, 1.2, 1.1), order, name="net")
    (gemm,) = loads_at(device, (0.2,), order, name="gemm")
    collected = collect_with_reference(
        work, nets, gemm, warmup=1, iters=10, min_seconds=0.5, target_rel=None, clock=device.clock
    )
    rounds = rounds_of([c for c in order[2 + 3 * 4 :] if c != "gemm0"])  # after the warm-up calls
    assert rounds[:12] == ["work0", "net0", "work1", "net1", "work0", "net2"] + [
        "work1",
        "net0",
        "work0",
        "net1",
        "work1",
        "net2",
    ]
    assert len(rounds) % 12 == 0  # stopped after whole cycles of both (the lcm of 2 and 3 loads)
    assert statistics.median(collected.net) * 1e3 == pytest.approx(1.1)


def test_a_protocol_needs_a_session():
    with pytest.raises(LatvitError, match="sessions=0"):
        Protocol(sessions=0)


# -- isolation from oneself ---------------------------------------------------------------------------------
def test_isolated_child_gets_exactly_the_threads_asked_for():
    result = run_isolated("latvit.targets.protocol:thread_settings", {}, timeout=120, threads=1)
    assert result.ok, result.error
    settings = result.value
    assert settings["OMP_NUM_THREADS"] == settings["MKL_NUM_THREADS"] == settings["OPENBLAS_NUM_THREADS"] == "1"
    assert settings["torch_threads"] == 1


def test_parent_does_not_spin_while_a_child_measures():
    """The parent's own CPU time while a child computes for a second (the GEMM probe) stays near zero, even
    right after the parent ran torch's thread pool (whose workers would steal the child's cores if they
    kept spinning)."""
    import torch

    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    for _ in range(20):
        a @ a  # the parent's OpenMP pool has just worked
    before = resource.getrusage(resource.RUSAGE_SELF)
    busy = run_isolated(
        "latvit.targets.protocol:gemm_peak_gflops", {"threads": 1, "size": 256, "seconds": 1.0}, timeout=120, threads=1
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert busy.ok and busy.value > 0 and busy.seconds >= 1.0
    parent_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert parent_cpu < 0.05 * busy.seconds, parent_cpu


def test_statistics_helpers_agree_with_the_standard_library():
    ms = [1.0, 2.0, 3.0, 4.0, 100.0]
    t = Timing.from_samples([m / 1e3 for m in ms])
    assert t.median_ms == statistics.median(ms) and t.min_ms == 1.0 and t.iters == 5
